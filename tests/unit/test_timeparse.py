from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

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


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                                  "0001-01-01T00:30:00+00:31"])
def test_a_time_outside_the_utc_calendar_is_a_clear_error(text: str) -> None:
    with pytest.raises(ValidationError, match="outside the range of times"):
        parse_since(text, now=NOW)


def test_errors_name_the_option_they_came_from() -> None:
    with pytest.raises(ValidationError, match=r"^--since 'soon' is neither a duration"):
        parse_since("soon", now=NOW, what="--since")
    with pytest.raises(ValidationError, match=r"^--since '0001-01-01T00:00:00\+01:00' is outside"):
        parse_since("0001-01-01T00:00:00+01:00", now=NOW, what="--since")
    with pytest.raises(ValidationError, match=r"^--since '9+d' reaches too far"):
        parse_since("9" * 30 + "d", now=NOW, what="--since")
    with pytest.raises(ValidationError, match=r"^--since 'x+'… is too long"):
        parse_since("x" * 10_000, now=NOW, what="--since")


def test_an_aware_datetime_near_the_edge_of_the_calendar_is_a_clear_error() -> None:
    edge = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=1)))
    with pytest.raises(ValidationError, match="outside the range"):
        parse_since(edge, now=NOW)


iso_like = st.builds(
    lambda day, sep, clock, offset: f"{day.isoformat()}{sep}{clock}{offset}",
    st.dates(),
    st.sampled_from(["T", " ", "t"]),
    st.sampled_from(["00:00:00", "23:59:59", "12:00", "00:00:00.123456", "24:00:00", ""]),
    st.sampled_from(["", "Z", "+01:00", "-01:00", "+23:59", "-23:59", "+24:00", "+00:00:01",
                     "-14:00", "+1", "z"]),
)
duration_like = st.builds(
    "".join,
    st.lists(st.builds(lambda n, u: f"{n}{u}",
                       st.integers(0, 10**30) | st.floats(0, 1e30).map(lambda f: f"{f:.3f}"),
                       st.sampled_from("smhdwSMHDWx ")), min_size=1, max_size=4),
)


@given(st.one_of(st.text(max_size=80), iso_like, duration_like),
       st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.just(UTC)))
def test_fuzz_only_validation_errors_and_aware_utc_results(text: str, now: datetime) -> None:
    try:
        moment = parse_since(text, now=now, what="--since")
    except ValidationError as exc:
        assert str(exc).startswith("--since ")
        return
    assert moment.utcoffset() == timedelta(0)
