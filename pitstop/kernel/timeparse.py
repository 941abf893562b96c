"""``--since`` values: a duration before ``now`` (``30s``, ``1.5h``, ``1h30m``, ``2d``, ``1w``)
or an ISO-8601 time. One parser for every command and API that takes ``since``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from pitstop.kernel.errors import ValidationError

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(since: datetime | str, *, now: datetime) -> datetime:
    """``since`` as an aware UTC datetime; a naive time is taken as UTC.

    Raises :class:`ValidationError` with an example of what is accepted.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if isinstance(since, datetime):
        return since if since.tzinfo is not None else since.replace(tzinfo=UTC)
    if not isinstance(since, str):
        raise ValidationError(f"since must be a datetime or a string, got {type(since).__name__}")
    text = since.strip()
    if text and _DURATION.fullmatch(text):
        seconds = sum(float(amount) * _UNIT_SECONDS[unit.lower()]
                      for amount, unit in _PART.findall(text))
        try:
            return (now - timedelta(seconds=seconds)).astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValidationError(f"since {since!r} reaches too far into the past") from None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"since {since!r} is neither a duration (30s, 10m, 1.5h, 1h30m, 2d, 1w) nor an "
            "ISO-8601 time (2026-05-01T12:00:00Z)"
        ) from None
    return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).astimezone(UTC)
