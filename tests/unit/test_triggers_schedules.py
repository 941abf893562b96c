"""Schedules as pure functions: cron in two zones across both DST transitions, intervals, missed
slots and Beat's ticker, all with an injected clock (parameter tables)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from pitstop.kernel.errors import ValidationError
from pitstop.triggers.schedules import (
    ScheduleTicker,
    due_slots,
    every,
    next_slot,
    parse_cron,
    prev_slot,
    slots_between,
)

pytestmark = pytest.mark.timeout(60)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local_times(cron: str, zone: str, start: str, end: str) -> list[str]:
    spec = parse_cron(cron, zone)
    return [slot.astimezone(spec.zone).isoformat()
            for slot in slots_between(spec, utc(start), utc(end))]


# A daily job on the days around each transition: never skipped, never doubled.
@pytest.mark.parametrize(("zone", "start", "end", "expected"), [
    # Europe/Berlin springs forward 2025-03-30 02:00 -> 03:00: 02:30 does not exist that day.
    ("Europe/Berlin", "2025-03-28T12:00", "2025-04-01T00:00",
     ["2025-03-29T02:30:00+01:00", "2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00"]),
    # ... and falls back 2025-10-26 03:00 -> 02:00: 02:30 happens twice, the job runs once.
    ("Europe/Berlin", "2025-10-24T12:00", "2025-10-28T00:00",
     ["2025-10-25T02:30:00+02:00", "2025-10-26T02:30:00+02:00", "2025-10-27T02:30:00+01:00"]),
    # America/New_York springs forward 2025-03-09 02:00 -> 03:00.
    ("America/New_York", "2025-03-07T12:00", "2025-03-11T00:00",
     ["2025-03-08T02:30:00-05:00", "2025-03-09T03:00:00-04:00", "2025-03-10T02:30:00-04:00"]),
    # ... and falls back 2025-11-02 02:00 -> 01:00 (02:30 exists once; 01:30 twice).
    ("America/New_York", "2025-10-31T12:00", "2025-11-04T00:00",
     ["2025-11-01T02:30:00-04:00", "2025-11-02T02:30:00-05:00", "2025-11-03T02:30:00-05:00"]),
])
def test_daily_job_across_dst(zone: str, start: str, end: str, expected: list[str]) -> None:
    assert local_times("30 2 * * *", zone, start, end) == expected


@pytest.mark.parametrize(("cron", "zone", "start", "end", "expected"), [
    # The repeated hour: a daily 01:30 in New York runs once, the first time.
    ("30 1 * * *", "America/New_York", "2025-11-02T00:00", "2025-11-03T00:00",
     ["2025-11-02T01:30:00-04:00"]),
    # An hourly job keeps running every real hour through the repeated one ...
    ("30 * * * *", "America/New_York", "2025-11-02T04:00", "2025-11-02T08:00",
     ["2025-11-02T00:30:00-04:00", "2025-11-02T01:30:00-04:00", "2025-11-02T01:30:00-05:00",
      "2025-11-02T02:30:00-05:00"]),
    # ... and through the skipped one it fires when the clock jumps.
    ("30 * * * *", "Europe/Berlin", "2025-03-29T23:00", "2025-03-30T02:00",
     ["2025-03-30T00:30:00+01:00", "2025-03-30T01:30:00+01:00", "2025-03-30T03:00:00+02:00",
      "2025-03-30T03:30:00+02:00"]),
    # Every 15 minutes across the gap: the skipped wall times collapse into the jump.
    ("*/15 2 * * *", "Europe/Berlin", "2025-03-29T12:00", "2025-03-30T12:00",
     ["2025-03-30T03:00:00+02:00"]),
])
def test_dst_edges(cron: str, zone: str, start: str, end: str, expected: list[str]) -> None:
    assert local_times(cron, zone, start, end) == expected


@pytest.mark.parametrize(("cron", "after", "expected"), [
    ("0 2 * * *", "2026-01-01T00:00", "2026-01-01T02:00"),
    ("0 2 * * *", "2026-01-01T02:00", "2026-01-02T02:00"),  # strictly after
    ("*/15 * * * *", "2026-01-01T00:07:30", "2026-01-01T00:15"),
    ("0 9 * * mon-fri", "2026-01-02T10:00", "2026-01-05T09:00"),  # Friday -> Monday
    ("0 0 1 * *", "2026-01-15T00:00", "2026-02-01T00:00"),
    ("0 0 29 2 *", "2026-03-01T00:00", "2028-02-29T00:00"),
    ("0 12 13 * 5", "2026-01-01T00:00", "2026-01-02T12:00"),  # day 13 OR a Friday (cron rule)
    ("@hourly", "2026-01-01T10:59:59", "2026-01-01T11:00"),
    ("*/10 * * * * *", "2026-01-01T00:00:01", "2026-01-01T00:00:10"),  # 6 fields: seconds
    ("0 0 * * 7", "2026-01-01T00:00", "2026-01-04T00:00"),  # 7 is Sunday too
])
def test_next_slot_table(cron: str, after: str, expected: str) -> None:
    assert next_slot(parse_cron(cron), utc(after)) == utc(expected)


@pytest.mark.parametrize(("cron", "at", "expected"), [
    ("0 2 * * *", "2026-01-02T01:59", "2026-01-01T02:00"),
    ("0 2 * * *", "2026-01-02T02:00", "2026-01-02T02:00"),
    ("0 0 29 2 *", "2027-01-01T00:00", "2024-02-29T00:00"),
])
def test_prev_slot_table(cron: str, at: str, expected: str) -> None:
    assert prev_slot(parse_cron(cron), utc(at)) == utc(expected)


@pytest.mark.parametrize(("cron", "zone", "message"), [
    ("* * *", "UTC", "5 fields"),
    ("61 * * * *", "UTC", "out of range"),
    ("*/0 * * * *", "UTC", "step"),
    ("5-1 * * * *", "UTC", "backwards"),
    ("0 0 30 2 *", "UTC", "never fires"),
    ("0 0 * foo *", "UTC", "not a number"),
    ("0 0 * * *", "Mars/Olympus", "unknown time zone"),
    ("0 0 * * *", "../etc/passwd", "unknown time zone"),
])
def test_bad_cron_or_zone(cron: str, zone: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_cron(cron, zone)


def test_every_slots_are_multiples_of_the_interval() -> None:
    spec = every(15)
    assert slots_between(spec, utc("2026-01-01T00:00:07"), utc("2026-01-01T00:00:45")) == [
        utc("2026-01-01T00:00:15"), utc("2026-01-01T00:00:30"), utc("2026-01-01T00:00:45")]
    with pytest.raises(ValidationError):
        every(0.5)


@pytest.mark.parametrize(("catch_up", "cursor", "now", "fire", "missed"), [
    # On time: the slots since the cursor, each once.
    ("skip", "00:00:00", "00:00:03", ["00:00:01", "00:00:02", "00:00:03"], None),
    # Late but within the grace (10 s): still fired, each once.
    ("skip", "00:00:00", "00:00:08", [f"00:00:0{n}" for n in range(1, 9)], None),
    # Beat was down 60 s: the old slots are skipped, those within the grace fire.
    ("skip", "00:00:00", "00:01:00", [f"00:00:{n}" for n in range(51, 61)[:-1]] + ["00:01:00"],
     ("00:00:01", "00:00:50")),
    # ... or fired once for all of them.
    ("once", "00:00:00", "00:01:00",
     ["00:00:50", *(f"00:00:{n}" for n in range(51, 60)), "00:01:00"], ("00:00:01", "00:00:50")),
])
def test_due_slots(catch_up: str, cursor: str, now: str, fire: list[str],
                   missed: tuple[str, str] | None) -> None:
    day = "2026-01-01T"
    due = due_slots(every(1), utc(day + cursor), utc(day + now), grace=10, catch_up=catch_up)
    assert due.fire == [utc(day + t) for t in fire]
    if missed is None:
        assert due.missed_from is None
    else:
        assert (due.missed_from, due.missed_to) == (utc(day + missed[0]), utc(day + missed[1]))


def test_a_daily_cron_missed_for_days_catches_up_once() -> None:
    spec = parse_cron("0 2 * * *", "Europe/Berlin")
    due = due_slots(spec, utc("2026-01-01T12:00"), utc("2026-01-05T12:00"), grace=60,
                    catch_up="once")
    assert due.fire == [utc("2026-01-05T01:00")]
    assert due.missed_from == utc("2026-01-02T01:00")


def test_beat_ticker_is_due_at_each_slot() -> None:
    clock = [utc("2026-01-01T00:00:00.5")]
    ticker = ScheduleTicker(lambda: [every(5), parse_cron("0 * * * *")], clock=lambda: clock[0])
    due, wait = ticker.is_due(utc("2026-01-01T00:00:00"))
    assert (due, wait) == (False, 4.5)
    clock[0] = utc("2026-01-01T00:00:05")
    due, wait = ticker.is_due(utc("2026-01-01T00:00:00"))
    assert due and wait == 5.0
    empty = ScheduleTicker(lambda: [], clock=lambda: clock[0])
    assert empty.is_due(clock[0] - timedelta(seconds=31))[0]  # the sweep
