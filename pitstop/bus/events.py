"""The event envelope: ``{id, type, source, time, data, trace_id, parent_id, hops}``.

Pure data and validation; publishing lives in :mod:`pitstop.bus.eventbus`.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pitstop.bus.patterns import normalize_type
from pitstop.kernel.constants import (
    EVENT_DATA_MAX_BYTES,
    EVENT_DATA_MAX_DEPTH,
    EVENT_MAX_HOPS,
    EVENT_SOURCE_MAX_CHARS,
)
from pitstop.kernel.errors import HopLimitExceeded, PayloadTooLarge, ValidationError
from pitstop.kernel.ids import compact_json, new_id, utc_iso

SEVERITIES = ("debug", "info", "warning", "error", "critical", "failed")
_SEVERITY_SEGMENTS = {"error": "error", "critical": "critical", "failed": "failed",
                      "warning": "warning"}


def default_source() -> str:
    return f"{socket.gethostname()}/{os.getpid()}"


@dataclass(frozen=True)
class Event:
    """One event. ``id`` sorts by creation time; ``trace_id`` follows a chain of work."""

    id: str
    type: str
    source: str
    time: str
    data: dict[str, Any] = field(default_factory=dict)
    trace_id: str = ""
    parent_id: str | None = None
    hops: int = 0

    @property
    def severity(self) -> str:
        """``data.severity`` when present, else from the last type segment, else ``info``."""
        declared = self.data.get("severity") if isinstance(self.data, dict) else None
        if isinstance(declared, str) and declared.lower() in SEVERITIES:
            return declared.lower()
        return _SEVERITY_SEGMENTS.get(self.type.rsplit(".", 1)[-1], "info")

    def to_dict(self) -> dict[str, Any]:
        # Field by field, not dataclasses.asdict: that deep-copies data on every publish.
        return {"id": self.id, "type": self.type, "source": self.source, "time": self.time,
                "data": self.data, "trace_id": self.trace_id, "parent_id": self.parent_id,
                "hops": self.hops}

    def to_json(self) -> str:
        return compact_json(self.to_dict())

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Event:
        try:
            return cls(
                id=str(raw["id"]),
                type=str(raw["type"]),
                source=str(raw.get("source", "")),
                time=str(raw["time"]),
                data=dict(raw.get("data") or {}),
                trace_id=str(raw.get("trace_id") or raw["id"]),
                parent_id=raw.get("parent_id"),
                hops=int(raw.get("hops", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError(f"not an event envelope: {exc}") from exc

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd numbers
            raise ValidationError(f"event is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValidationError("event JSON must be an object")
        return cls.from_dict(raw)


def check_depth(value: Any, *, max_depth: int = EVENT_DATA_MAX_DEPTH,
                what: str = "event data") -> None:
    """Raise :class:`ValidationError` when ``value`` nests objects/arrays deeper than ``max_depth``.

    Iterative, so it cannot itself run out of stack; redaction and JSON encoding recurse, and
    would fail (RecursionError) on what a deeply nested request body parses into.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        if depth > max_depth:
            raise ValidationError(f"{what} is nested deeper than {max_depth} levels")
        stack.extend((child, depth + 1) for child in children)


def encode_data(data: dict[str, Any] | None, *, max_bytes: int = EVENT_DATA_MAX_BYTES) -> str:
    """Serialize ``data`` to JSON, enforcing that it is an object, under ``max_bytes`` and
    nested at most :data:`EVENT_DATA_MAX_DEPTH` levels deep."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationError(f"event data must be a JSON object, got {type(data).__name__}")
    try:
        text = compact_json(data)
    except RecursionError:
        raise ValidationError(f"event data is nested deeper than {EVENT_DATA_MAX_DEPTH} "
                              "levels") from None
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"event data is not JSON-serializable: {exc}") from exc
    if text.count("[") + text.count("{") > EVENT_DATA_MAX_DEPTH:  # else it cannot be that deep
        check_depth(data)
    size = len(text.encode())
    if size > max_bytes:
        raise PayloadTooLarge(f"event data is {size} bytes, over the cap of {max_bytes} bytes")
    return text


def check_source(source: str) -> str:
    """``source`` if it is at most :data:`EVENT_SOURCE_MAX_CHARS` printable characters.

    Raises :class:`ValidationError`; the message never quotes the value (it may be huge).
    """
    if not isinstance(source, str):
        raise ValidationError(f"event source must be a string, got {type(source).__name__}")
    if len(source) > EVENT_SOURCE_MAX_CHARS:
        raise ValidationError(f"event source is {len(source)} characters, over the limit of "
                              f"{EVENT_SOURCE_MAX_CHARS}")
    if not source.isprintable():
        raise ValidationError("event source must be printable text (no control characters, "
                              "tabs or newlines)")
    return source


def make_event(
    event_type: str,
    data: dict[str, Any] | None = None,
    *,
    source: str | None = None,
    parent: Event | None = None,
    trace_id: str | None = None,
    now: datetime | None = None,
    max_data_bytes: int = EVENT_DATA_MAX_BYTES,
    max_hops: int = EVENT_MAX_HOPS,
) -> Event:
    """Build and validate an event. With ``parent`` the new event joins the parent's trace;
    without one, ``trace_id`` joins a trace started elsewhere (a run), else it starts its own.

    Raises :class:`InvalidEventType`, :class:`PayloadTooLarge`, :class:`HopLimitExceeded` or
    :class:`ValidationError` (also for a ``source`` over :data:`EVENT_SOURCE_MAX_CHARS`
    characters or not printable).
    """
    normalized = normalize_type(event_type)
    if source:
        check_source(source)
    encode_data(data, max_bytes=max_data_bytes)
    moment = now or datetime.now(UTC)
    event_id = new_id(int(moment.timestamp() * 1000))
    hops = parent.hops + 1 if parent is not None else 0
    if hops > max_hops:
        raise HopLimitExceeded(
            f"event {normalized!r} would be hop {hops} of trace {parent.trace_id if parent else ''}"
            f", over the limit of {max_hops}: is a trigger re-firing itself?"
        )
    return Event(
        id=event_id,
        type=normalized,
        source=source or default_source(),
        time=utc_iso(moment),
        data=dict(data or {}),
        trace_id=parent.trace_id if parent is not None else (trace_id or event_id),
        parent_id=parent.id if parent is not None else None,
        hops=hops,
    )
