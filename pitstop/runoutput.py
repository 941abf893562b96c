"""A run's output lines as a Redis stream, so ``pitstop run --wait`` can print them live.

The worker appends one entry per line and a final ``end`` entry; readers follow from any id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis

from pitstop.constants import (
    RUN_CANCEL_PREFIX,
    RUN_OUTPUT_MAXLEN,
    RUN_OUTPUT_PREFIX,
    RUN_TTL_SECONDS,
)
from pitstop.errors import RedisUnavailable
from pitstop.runs import Run, RunStore


@dataclass(frozen=True)
class OutputLine:
    entry_id: str
    stream: str  # "stdout" | "stderr"
    line: str


@dataclass(frozen=True)
class OutputEnd:
    entry_id: str
    status: str
    exit_code: int | None


def _key(run_id: str) -> str:
    return f"{RUN_OUTPUT_PREFIX}{run_id}"


class RunOutput:
    """Write and follow the output stream of runs."""

    def __init__(self, client: redis.Redis, *, maxlen: int = RUN_OUTPUT_MAXLEN,
                 ttl_seconds: int = RUN_TTL_SECONDS) -> None:
        self._client = client
        self._maxlen = maxlen
        self._ttl = ttl_seconds

    def append(self, run_id: str, stream: str, line: str) -> None:
        fields: dict[Any, Any] = {"s": stream, "l": line}
        self._client.xadd(_key(run_id), fields, maxlen=self._maxlen,
                          approximate=True)

    def close(self, run_id: str, *, status: str, exit_code: int | None) -> None:
        key = _key(run_id)
        fields: dict[Any, Any] = {"end": status,
                                  "exit_code": "" if exit_code is None else str(exit_code)}
        pipe = self._client.pipeline(transaction=False)
        pipe.xadd(key, fields, maxlen=self._maxlen, approximate=True)
        pipe.expire(key, self._ttl)
        pipe.execute()

    def follow(self, run_id: str, *, after: str = "0-0",
               block_ms: int = 500) -> Iterator[OutputLine | OutputEnd | None]:
        """Yield lines as they arrive, ``None`` each time ``block_ms`` passes with nothing new,
        and finally the :class:`OutputEnd`."""
        key = _key(run_id)
        last = after
        while True:
            try:
                reply: Any = self._client.xread({key: last}, count=500, block=block_ms)
            except redis.RedisError as exc:
                raise RedisUnavailable(f"lost Redis while following run {run_id}: {exc}") from exc
            if not reply:
                yield None
                continue
            for raw_id, fields in reply[0][1]:
                last = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                decoded = {(k.decode() if isinstance(k, bytes) else k):
                           (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
                           for k, v in fields.items()}
                if "end" in decoded:
                    code = decoded.get("exit_code") or ""
                    yield OutputEnd(last, decoded["end"], int(code) if code else None)
                    return
                yield OutputLine(last, decoded.get("s", "stdout"), decoded.get("l", ""))

    def request_cancel(self, run_id: str) -> None:
        self._client.set(f"{RUN_CANCEL_PREFIX}{run_id}", "1", ex=self._ttl)

    def cancel_requested(self, run_id: str) -> bool:
        return bool(self._client.exists(f"{RUN_CANCEL_PREFIX}{run_id}"))


def reap_lost_runs(store: RunStore, output: RunOutput, *, stale_after: timedelta,
                   run_ids: Iterable[str] | None = None) -> list[Run]:
    """Mark runs whose worker went silent ``lost`` and end their output streams. A worker that
    is in fact alive (a long partition) is asked to cancel, so its script does not run on."""
    lost = store.reap_lost(stale_after=stale_after, run_ids=run_ids)
    for run in lost:
        output.request_cancel(run.run_id)
        output.close(run.run_id, status="lost", exit_code=None)
    return lost
