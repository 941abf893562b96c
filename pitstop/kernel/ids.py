"""Ids, timestamps and the one JSON encoding shared by every component."""

from __future__ import annotations

import json
import os
import time as _time
from datetime import UTC, datetime

__all__ = ["compact_json", "new_id", "utc_iso"]

compact_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
"""The one JSON encoding of events: compact, and strict (no NaN, which is not JSON)."""


def new_id(now_ms: int | None = None) -> str:
    """A unique, time-sortable id in the UUIDv7 layout (48-bit ms timestamp, then randomness)."""
    ms = int(_time.time() * 1000) if now_ms is None else now_ms
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= ((rand >> 68) & 0xFFF) << 64
    value |= 0b10 << 62  # RFC 4122 variant
    value |= rand & ((1 << 62) - 1)
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def utc_iso(now: datetime) -> str:
    return now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
