from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pitstop.kernel.errors import ValidationError
from pitstop.kernel.timeparse import parse_since

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "ago"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("1.5h", timedelta(minutes=90)),
        ("1h30m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        (" 2H ", timedelta(hours=2)),
    ],
)
def test_durations(text: str, ago: timedelta) -> None:
    assert parse_since(text, now=NOW) == NOW - ago


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01T10:00:00Z", datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("2026-11-01T10:00:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("2026-11-01T12:00:00+02:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),
    ],
)
def test_iso_times(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["", "soon", "10", "h1", "99999999999d", "2026-13-01"])
def test_rejects_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValidationError, match="since"):
        parse_since(text, now=NOW)
