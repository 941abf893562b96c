"""``--since`` values: a duration before ``now`` (``30s``, ``1.5h``, ``1h30m``, ``2d``, ``1w``)
or an ISO-8601 time. One parser for every command and API that takes ``since``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from pitstop.kernel.errors import ValidationError

__all__ = ["parse_since"]

_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE | re.ASCII)
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+", re.IGNORECASE | re.ASCII)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MAX_TEXT = 64
_EXAMPLES = "a duration (30s, 10m, 1.5h, 1h30m, 2d, 1w) or an ISO-8601 time (2026-05-01T12:00:00Z)"


def parse_since(since: datetime | str, *, now: datetime, what: str = "since") -> datetime:
    """``since`` as an aware UTC datetime; a naive time is taken as UTC.

    Raises :class:`ValidationError` (and nothing else) naming ``what`` (the option, e.g.
    ``--since``), with an example of what is accepted.
    """
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    if isinstance(since, datetime):
        moment = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
        return _in_utc(moment, since, what)
    if not isinstance(since, str):
        raise ValidationError(f"{what} must be a datetime or a string, got {type(since).__name__}")
    text = since.strip()
    shown = repr(since) if len(since) <= _MAX_TEXT else repr(since[:_MAX_TEXT]) + "…"
    if len(text) > _MAX_TEXT:
        raise ValidationError(f"{what} {shown} is too long: give {_EXAMPLES}")
    if text and _DURATION.fullmatch(text):
        seconds = sum(float(amount) * _UNIT_SECONDS[unit.lower()]
                      for amount, unit in _PART.findall(text))
        try:
            return (now - timedelta(seconds=seconds)).astimezone(UTC)
        except (OverflowError, ValueError):
            raise ValidationError(f"{what} {shown} reaches too far into the past") from None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"{what} {shown} is neither {_EXAMPLES}") from None
    return _in_utc(parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC), since,
                   what)


def _in_utc(moment: datetime, since: datetime | str, what: str) -> datetime:
    """``moment`` in UTC; a time so near year 1 or 9999 that UTC lies outside the calendar
    (``0001-01-01T00:00:00+01:00``) is a :class:`ValidationError`."""
    try:
        return moment.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ValidationError(f"{what} {str(since)[:_MAX_TEXT]!r} is outside the range of "
                              "times pitstop can compare (years 1 to 9999 in UTC)") from None
