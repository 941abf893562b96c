"""Trigger state every router shares through Redis: rules disabled at run time, the config in force
(and the last edit refused), schedule cursors and slot fences."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

import redis

from pitstop.bus.streamcodec import redis_call, text_of
from pitstop.kernel.constants import (
    TRIGGER_CONFIG_ERROR_KEY,
    TRIGGER_CONFIG_KEY,
    TRIGGER_CURSOR_KEY,
    TRIGGER_DISABLED_KEY,
    TRIGGER_SLOT_PREFIX,
    TRIGGER_SLOT_TTL_SECONDS,
)

__all__ = ["ConfigSnapshot", "TriggerState"]

_ADVANCE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if (not current) or tonumber(current) < tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
"""


@dataclass(frozen=True)
class ConfigSnapshot:
    """The config texts in force fleet-wide, as the last good load stored them."""

    version: str
    triggers_text: str
    triggers_file: str
    workstreams_text: str
    workstreams_file: str
    loaded_at: str
    loaded_by: str

    def to_fields(self) -> dict[str, str]:
        return dict(self.__dict__)

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> ConfigSnapshot:
        names = cls.__dataclass_fields__
        return cls(**{name: fields.get(name, "") for name in names})


def who() -> str:
    return f"{socket.gethostname()}"


class TriggerState:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def _call(self, action: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        return redis_call(self.client, action, function, *args, **kwargs)

    # --- enable / disable ---------------------------------------------------------------------
    def disabled(self) -> dict[str, dict[str, Any]]:
        raw = self._call("read disabled triggers", self.client.hgetall, TRIGGER_DISABLED_KEY)
        out: dict[str, dict[str, Any]] = {}
        for key, value in (raw or {}).items():
            try:
                out[text_of(key)] = json.loads(value)
            except ValueError:
                out[text_of(key)] = {}
        return out

    def disabled_among(self, rule_ids: list[str]) -> set[str]:
        if not rule_ids:
            return set()
        values = self._call("read disabled triggers", self.client.hmget, TRIGGER_DISABLED_KEY,
                            rule_ids)
        return {rule_id for rule_id, value in zip(rule_ids, values, strict=True)
                if value is not None}

    def set_enabled(self, rule_id: str, enabled: bool, *, at: str, by: str | None = None,
                    reason: str = "") -> None:
        if enabled:
            self._call("enable a trigger", self.client.hdel, TRIGGER_DISABLED_KEY, rule_id)
        else:
            record = json.dumps({"at": at, "by": by or who(), "reason": reason})
            self._call("disable a trigger", self.client.hset, TRIGGER_DISABLED_KEY, rule_id,
                       record)

    # --- the config in force --------------------------------------------------------------------
    def active_version(self) -> str | None:
        value = self._call("read the trigger config version", self.client.hget,
                           TRIGGER_CONFIG_KEY, "version")
        return None if value is None else text_of(value)

    def active_config(self) -> ConfigSnapshot | None:
        raw = self._call("read the trigger config", self.client.hgetall, TRIGGER_CONFIG_KEY)
        if not raw:
            return None
        return ConfigSnapshot.from_fields({text_of(k): text_of(v) for k, v in raw.items()})

    def publish_config(self, snapshot: ConfigSnapshot) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(TRIGGER_CONFIG_KEY)
        pipe.hset(TRIGGER_CONFIG_KEY, mapping=dict(snapshot.to_fields()))  # type: ignore[arg-type]
        pipe.delete(TRIGGER_CONFIG_ERROR_KEY)
        self._call("store the trigger config", pipe.execute)

    def record_error(self, error: str, *, at: str, by: str | None = None) -> None:
        fields: dict[str | bytes, str] = {"error": error, "at": at, "by": by or who()}
        self._call("record a refused trigger config", self.client.hset, TRIGGER_CONFIG_ERROR_KEY,
                   mapping=fields)

    def last_error(self) -> dict[str, str] | None:
        raw = self._call("read the refused trigger config", self.client.hgetall,
                         TRIGGER_CONFIG_ERROR_KEY)
        return {text_of(k): text_of(v) for k, v in raw.items()} if raw else None

    # --- schedules ------------------------------------------------------------------------------
    def cursor(self, rule_id: str) -> float | None:
        value = self._call("read a schedule cursor", self.client.hget, TRIGGER_CURSOR_KEY, rule_id)
        return None if value is None else float(value)

    def advance_cursor(self, rule_id: str, epoch: float) -> None:
        self._call("advance a schedule cursor", self.client.eval, _ADVANCE, 1,
                   TRIGGER_CURSOR_KEY, rule_id, repr(float(epoch)))

    def fence_slot(self, rule_id: str, slot_epoch: int, token: str) -> bool:
        """True when ``token`` holds the slot: it set it first, or set it before (a retry)."""
        key = f"{TRIGGER_SLOT_PREFIX}{rule_id}:{slot_epoch}"
        pipe = self.client.pipeline(transaction=True)
        pipe.set(key, token, nx=True, ex=TRIGGER_SLOT_TTL_SECONDS)
        pipe.get(key)
        _, holder = self._call("fence a schedule slot", pipe.execute)
        return holder is not None and text_of(holder) == token

    def now(self) -> float:
        seconds, micros = self._call("read the Redis clock", self.client.time)
        return float(seconds) + float(micros) / 1e6
