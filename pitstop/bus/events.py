"""The event envelope: ``{id, type, source, time, data, trace_id, parent_id, hops}``.

Pure data and validation; publishing lives in :mod:`pitstop.bus.eventbus`.
"""

from __future__ import annotations

import json
import math
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

ID_MAX_CHARS = 200
"""The longest id, time or trace id an envelope may carry."""
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
        """The event in a decoded envelope, checked field by field as :meth:`to_dict` writes it.

        Raises :class:`ValidationError` (nothing else) naming the first field that is wrong.
        """
        if not isinstance(raw, dict):
            raise ValidationError(f"not an event envelope: a JSON object is needed, got "
                                  f"{type(raw).__name__}")
        event_id = _text_field(raw, "id")
        data = raw.get("data")
        if data is None:
            data = {}
        elif not isinstance(data, dict):
            raise ValidationError(f"not an event envelope: 'data' must be an object, got "
                                  f"{type(data).__name__}")
        source = raw.get("source", "")
        if not isinstance(source, str):
            raise ValidationError(f"not an event envelope: 'source' must be a string, got "
                                  f"{type(source).__name__}")
        hops = raw.get("hops", 0)
        if type(hops) is not int or hops < 0:
            raise ValidationError(f"not an event envelope: 'hops' must be a whole number >= 0, "
                                  f"got {_shown(hops)}")
        event_type = raw.get("type")
        if not isinstance(event_type, str):
            raise ValidationError(f"not an event envelope: 'type' must be a string, got "
                                  f"{type(event_type).__name__}")
        parent_id = raw.get("parent_id")
        return cls(
            id=event_id,
            type=normalize_type(event_type),
            source=check_source(source),
            time=_text_field(raw, "time"),
            data=dict(data),
            trace_id=_text_field(raw, "trace_id") if raw.get("trace_id") else event_id,
            parent_id=None if parent_id is None else _text_field(raw, "parent_id"),
            hops=hops,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Event:
        """Decode an envelope; :class:`ValidationError` (nothing else) when it is not one."""
        if not isinstance(text, str | bytes):
            raise ValidationError(f"event JSON must be text, got {type(text).__name__}")
        try:
            raw = _DECODER.decode(text.decode() if isinstance(text, bytes) else text)
        except (ValueError, RecursionError) as exc:  # bad JSON, bad UTF-8, absurd numbers
            raise ValidationError(f"event is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ValidationError("event JSON must be an object")
        if isinstance(text, bytes):
            opened = text.count(b"[") + text.count(b"{")
            escaped_surrogate = b"\\ud" in text or b"\\uD" in text
        else:
            opened = text.count("[") + text.count("{")
            escaped_surrogate = "\\ud" in text or "\\uD" in text
        if opened > EVENT_DATA_MAX_DEPTH:  # else it cannot be nested too deeply
            check_depth(raw.get("data"))
        if escaped_surrogate:  # a lone one is not text: written past the bus, never delivered
            check_unicode(raw, what="event")
        return cls.from_dict(raw)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _no_constant(text: str) -> float:
    raise ValueError(f"{text} is not a JSON number")


_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constant)
"""Strict JSON: NaN, Infinity and numbers beyond a float's range are refused."""


def _shown(value: Any) -> str:
    """``value`` for an error message: short, whatever it is."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _text_field(raw: dict[str, Any], name: str) -> str:
    """``raw[name]``: a non-empty, printable string of at most :data:`ID_MAX_CHARS`."""
    value = raw.get(name)
    if not isinstance(value, str) or not value:
        got = "nothing" if value is None else _shown(value)
        raise ValidationError(f"not an event envelope: {name!r} must be a non-empty string, "
                              f"got {got}")
    return check_text(value, what=f"event {name}")


def check_ids(event: Event) -> None:
    """Check what :meth:`Event.from_dict` will check of an event built by hand: its id, time,
    trace and parent ids are short printable strings. Raises :class:`ValidationError`."""
    _text_field({"id": event.id}, "id")
    _text_field({"time": event.time}, "time")
    if event.trace_id:
        check_text(event.trace_id, what="event trace_id")
    if event.parent_id is not None:
        _text_field({"parent_id": event.parent_id}, "parent_id")


def check_text(value: str, *, what: str, max_chars: int = ID_MAX_CHARS) -> str:
    """``value`` if it is at most ``max_chars`` printable characters (ids, times, traces);
    :class:`ValidationError` otherwise, never quoting the value."""
    if len(value) > max_chars:
        raise ValidationError(f"{what} is {len(value)} characters, over the limit of {max_chars}")
    if not value.isprintable():
        raise ValidationError(f"{what} must be printable text (no control characters)")
    return value


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


def check_unicode(value: Any, *, what: str = "event data") -> None:
    """Raise :class:`ValidationError` when ``value`` holds a lone surrogate (``"\\ud800"`` in
    JSON): it is not text, and every UTF-8 writer downstream (the web view, Slack, mail, a
    response) would fail on it for as long as the event is kept."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(f"{what} holds a lone surrogate (\\ud800-\\udfff): not valid "
                              "Unicode text") from None


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
    if "\\ud" in text:  # escaped surrogates: a pair is an emoji, a lone one poisons every reader
        check_unicode(data)
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
    if trace_id:
        check_text(trace_id, what="trace id")
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
