"""Schedules as pure functions of time: cron in an IANA zone, or a fixed interval.

A slot is an instant (whole UTC seconds) at which a schedule fires. Cron is read in the zone's
wall-clock time, and daylight-saving transitions follow one declared policy:

* a wall time that does not exist (the clock jumps forward over it) fires at the instant the
  clock jumps, so ``30 2 * * *`` runs at 03:00 on the spring-forward day: never skipped;
* a wall time that happens twice (the clock falls back over it) fires once, the first time,
  unless the cron's hour field is ``*``: an hourly job keeps running every real hour.

``*/15 * * * *`` style 5-field cron (minute hour day month weekday), or 6 fields with seconds
first, names (``mon``, ``jan``) and macros (``@daily`` …). ``every: 30s`` slots are multiples of
the interval since the epoch. Nothing here reads the clock: ``now`` is always a parameter.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pitstop.kernel.errors import ValidationError

__all__ = ["CronSpec", "EverySpec", "ScheduleSpec", "due_slots", "iter_slots", "next_slot",
           "parse_cron", "parse_zone", "prev_slot", "slots_between"]

HORIZON_DAYS = 5 * 366 + 1
"""How far ahead a cron is searched for its next slot; none within it: the cron never fires."""
_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
           "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@hourly": "0 * * * *"}
_MONTHS = {name: n for n, name in enumerate(
    ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1)}
_DAYS = {name: n for n, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name or len(name) > 64 or ".." in name \
            or name.startswith("/"):
        raise ValidationError(f"unknown time zone {name!r}: use an IANA name like Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(f"unknown time zone {name!r}: use an IANA name like "
                              "Europe/Berlin or UTC") from None


def _parse_number(text: str, names: dict[str, int], low: int, high: int, what: str) -> int:
    lowered = text.lower()
    if lowered in names:
        return names[lowered]
    if not text.isdigit() or len(text) > 4:
        raise ValidationError(f"{what} {text!r} is not a number")
    value = int(text)
    if not low <= value <= high:
        raise ValidationError(f"{what} {value} is out of range {low}-{high}")
    return value


def _parse_field(text: str, low: int, high: int, what: str,
                 names: dict[str, int] | None = None) -> tuple[frozenset[int], bool]:
    """The values a cron field allows, and whether it starts with ``*``."""
    names = names or {}
    values: set[int] = set()
    if not text:
        raise ValidationError(f"{what} field is empty")
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or not 0 < int(step_text) <= high - low + 1 + 1:
                raise ValidationError(f"{what} step {step_text!r} must be a positive number "
                                      f"up to {high - low + 1}")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start = _parse_number(first, names, low, high, what)
            end = _parse_number(last, names, low, high, what)
            if start > end:
                raise ValidationError(f"{what} range {base!r} runs backwards")
        else:
            start = _parse_number(base, names, low, high, what)
            end = high if slash else start
        values.update(range(start, end + 1, step))
    return frozenset(values), text.startswith("*")


@dataclass(frozen=True)
class CronSpec:
    """A parsed cron expression in a zone."""

    text: str
    zone: ZoneInfo
    seconds: tuple[int, ...]
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    """Python weekdays: Monday 0 … Sunday 6."""
    day_star: bool
    weekday_star: bool
    hour_star: bool

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = day.weekday() in self.weekdays
        if self.day_star or self.weekday_star:
            return dom and dow
        return dom or dow  # both restricted: either one (as every cron does)


@dataclass(frozen=True)
class EverySpec:
    """Every ``seconds`` seconds, slots at whole multiples of it since the epoch."""

    seconds: int

    @property
    def text(self) -> str:
        return f"every {self.seconds}s"


ScheduleSpec = CronSpec | EverySpec


def parse_cron(text: str, zone: str = "UTC") -> CronSpec:
    """Parse a 5- or 6-field cron (or a macro) in IANA zone ``zone``; ValidationError says what
    is wrong, including a cron that never fires (``0 0 30 2 *``)."""
    if not isinstance(text, str) or len(text) > 200:
        raise ValidationError("a cron expression must be a string of at most 200 characters")
    tz = parse_zone(zone)
    expanded = _MACROS.get(text.strip().lower(), text)
    fields = expanded.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6:
        raise ValidationError(f"cron {text!r} must have 5 fields (minute hour day month "
                              "weekday) or 6 (seconds first)")
    try:
        seconds, _ = _parse_field(fields[0], 0, 59, "second")
        minutes, _ = _parse_field(fields[1], 0, 59, "minute")
        hours, hour_star = _parse_field(fields[2], 0, 23, "hour")
        days, day_star = _parse_field(fields[3], 1, 31, "day-of-month")
        months, _ = _parse_field(fields[4], 1, 12, "month", _MONTHS)
        cron_days, weekday_star = _parse_field(fields[5], 0, 7, "day-of-week", _DAYS)
    except ValidationError as exc:
        raise ValidationError(f"cron {text!r}: {exc}") from None
    weekdays = frozenset((day + 6) % 7 for day in cron_days)  # cron 0/7 = Sunday = Python 6
    spec = CronSpec(text=text, zone=tz, seconds=tuple(sorted(seconds)),
                    minutes=tuple(sorted(minutes)), hours=tuple(sorted(hours)), days=days,
                    months=months, weekdays=weekdays, day_star=day_star,
                    weekday_star=weekday_star, hour_star=hour_star)
    start = date(2000, 1, 1)
    if not any(spec.day_matches(start + timedelta(days=n)) for n in range(366 * 8)):
        raise ValidationError(f"cron {text!r} never fires (no such day)")
    return spec


def every(seconds: float) -> EverySpec:
    if seconds != int(seconds) or seconds < 1:
        raise ValidationError(f"every: {seconds:g}s must be a whole number of seconds, at least 1")
    return EverySpec(int(seconds))


# --- slot computation -----------------------------------------------------------------------------

def _epoch(moment: datetime) -> int:
    return int((moment - _EPOCH).total_seconds() // 1)


def _utc(seconds: int) -> datetime:
    return _EPOCH + timedelta(seconds=seconds)


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValidationError("schedule times must be timezone-aware")
    return moment.astimezone(UTC)


def _wall_times(spec: CronSpec, start: time | None) -> Iterator[time]:
    """The day's wall times of ``spec`` at or after ``start``, in order."""
    sh, sm, ss = (start.hour, start.minute, start.second) if start else (0, 0, 0)
    for hour in spec.hours[bisect.bisect_left(spec.hours, sh):]:
        minutes = spec.minutes if hour != sh else \
            spec.minutes[bisect.bisect_left(spec.minutes, sm):]
        for minute in minutes:
            first = hour == sh and minute == sm
            seconds = spec.seconds[bisect.bisect_left(spec.seconds, ss):] if first \
                else spec.seconds
            for second in seconds:
                yield time(hour, minute, second)


def _offset(wall: datetime, zone: ZoneInfo, fold: int) -> timedelta:
    return wall.replace(tzinfo=zone, fold=fold).utcoffset() or timedelta(0)


def _exists(wall: datetime, zone: ZoneInfo, fold: int) -> bool:
    aware = wall.replace(tzinfo=zone, fold=fold)
    return aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == wall


def _transition_after(low: int, high: int, zone: ZoneInfo) -> int:
    """The first whole second in (low, high] whose UTC offset differs from ``low``'s."""
    base = _utc(low).astimezone(zone).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if _utc(middle).astimezone(zone).utcoffset() == base:
            low = middle
        else:
            high = middle
    return high


def _resolve(wall: datetime, spec: CronSpec) -> list[int]:
    """Epoch seconds at which wall time ``wall`` fires in ``spec.zone`` (the DST policy)."""
    zone = spec.zone
    first = _exists(wall, zone, 0)
    second = _exists(wall, zone, 1)
    u0 = wall - _offset(wall, zone, 0)
    u1 = wall - _offset(wall, zone, 1)
    e0 = _epoch(u0.replace(tzinfo=UTC))
    e1 = _epoch(u1.replace(tzinfo=UTC))
    if first and second:
        if e0 == e1 or not spec.hour_star:
            return [min(e0, e1)]
        return sorted({e0, e1})  # an hourly job runs in both real hours
    if first or second:
        return [e0 if first else e1]
    # Skipped by a jump forward: fire when the clock jumps.
    low, high = min(e0, e1), max(e0, e1)
    return [_transition_after(low, high, zone)]


def _stable_offset(day: date, zone: ZoneInfo) -> timedelta | None:
    """The day's one UTC offset, or None when a transition falls within it."""
    start = datetime.combine(day, time(0))
    end = datetime.combine(day, time(23, 59, 59))
    offsets = {_offset(start, zone, 0), _offset(start, zone, 1), _offset(end, zone, 0),
               _offset(end, zone, 1)}
    return offsets.pop() if len(offsets) == 1 else None


def _day_slots(spec: CronSpec, day: date, start: time | None,
               offset: timedelta | None) -> Iterator[int]:
    """Slots of one local day, increasing (wall times from ``start``); ``offset``: the day's
    one UTC offset (None on a transition day)."""
    if offset is not None:
        for wall in _wall_times(spec, start):
            yield _epoch(datetime.combine(day, wall, tzinfo=UTC) - offset)
        return
    # A transition day: resolve each wall time, then order (a repeated hour interleaves).
    found: set[int] = set()
    for wall in _wall_times(spec, start):
        found.update(_resolve(datetime.combine(day, wall), spec))
    yield from sorted(found)


def iter_slots(spec: ScheduleSpec, after: datetime) -> Iterator[datetime]:
    """Slots strictly after ``after``, increasing, up to :data:`HORIZON_DAYS` ahead."""
    moment = _aware(after)
    floor = _epoch(moment)
    if isinstance(spec, EverySpec):
        for n in itertools.count(floor // spec.seconds + 1):
            yield _utc(n * spec.seconds)
        return
    local = moment.astimezone(spec.zone).replace(tzinfo=None)
    # Around a DST transition instants move against wall times: look a few hours back there.
    begin = local - timedelta(hours=3)
    last = -1
    for n in range(HORIZON_DAYS + 1):
        day = begin.date() + timedelta(days=n)
        if not spec.day_matches(day):
            continue
        offset = _stable_offset(day, spec.zone)
        start: time | None = None
        if day < local.date():
            if offset is not None:
                continue  # an ordinary earlier day ends before ``after``
            start = begin.time()
        elif day == local.date():
            if offset is not None:
                start = local.time().replace(microsecond=0)
            elif begin.date() == day:
                start = begin.time()
        for slot in _day_slots(spec, day, start, offset):
            if slot > floor and slot > last:
                last = slot
                yield _utc(slot)


def next_slot(spec: ScheduleSpec, after: datetime) -> datetime | None:
    """The first slot strictly after ``after`` (None: none within the horizon)."""
    return next(iter_slots(spec, after), None)


def slots_between(spec: ScheduleSpec, start: datetime, end: datetime,
                  limit: int = 10_000) -> list[datetime]:
    """Slots in ``(start, end]``, at most ``limit`` of them (the earliest)."""
    found: list[datetime] = []
    end = _aware(end)
    for slot in iter_slots(spec, start):
        if slot > end or len(found) >= limit:
            break
        found.append(slot)
    return found


_LOOKBACKS = (timedelta(hours=1), timedelta(days=2), timedelta(days=40), timedelta(days=400),
              timedelta(days=HORIZON_DAYS))


def prev_slot(spec: ScheduleSpec, at: datetime) -> datetime | None:
    """The last slot at or before ``at`` (None: none within the horizon)."""
    at = _aware(at)
    if isinstance(spec, EverySpec):
        return _utc(_epoch(at) // spec.seconds * spec.seconds)
    for lookback in _LOOKBACKS:
        found = None
        for slot in iter_slots(spec, at - lookback):
            if slot > at:
                break
            found = slot
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class DueSlots:
    """What one look at a schedule decided."""

    fire: list[datetime]
    """Slots to fire now, oldest first (on time, or the one catch-up)."""
    missed_from: datetime | None = None
    """The first slot missed beyond the grace period (None: nothing missed)."""
    missed_to: datetime | None = None
    caught_up: datetime | None = None
    """With ``catch_up: once``: the missed slot fired for them all."""


def due_slots(spec: ScheduleSpec, cursor: datetime, now: datetime, *, grace: float,
              catch_up: str, limit: int = 1000) -> DueSlots:
    """Slots in ``(cursor, now]`` to fire: those at most ``grace`` seconds late, each once;
    older ones were missed (Beat was down): ``catch_up`` ``skip`` fires none of them, ``once``
    fires the latest of them once."""
    cursor, now = _aware(cursor), _aware(now)
    horizon = now - timedelta(seconds=grace)
    on_time = slots_between(spec, max(cursor, horizon), now, limit)
    first = next_slot(spec, cursor)
    if first is None or first > horizon:
        return DueSlots(on_time)
    latest = prev_slot(spec, horizon) or first
    if catch_up == "once":
        return DueSlots([latest, *on_time], first, latest, latest)
    return DueSlots(on_time, first, latest)


def describe(spec: ScheduleSpec) -> str:
    if isinstance(spec, EverySpec):
        return spec.text
    return f"cron {spec.text} ({spec.zone.key})"


# --- Beat: wake up at the next slot ---------------------------------------------------------------

SWEEP_SECONDS = 30.0
"""Beat fires the schedule sweep at least this often (slots a skewed clock made it miss)."""
REFRESH_SECONDS = 5.0
"""Beat looks again at least this often (a reload may have changed the schedules)."""


class ScheduleTicker:
    """A Celery Beat schedule (``is_due``/``remaining_estimate``/``now``), without Celery: due
    at the next slot of any schedule ``specs()`` returns, and at least every
    :data:`SWEEP_SECONDS`. The task it fires decides which slots run (fenced in Redis); this
    only wakes it up in time."""

    def __init__(self, specs: Callable[[], Sequence[ScheduleSpec]],
                 clock: Callable[[], datetime] | None = None) -> None:
        self.specs = specs
        self.clock = clock or (lambda: datetime.now(UTC))
        self.app: object = None  # Celery sets it

    def now(self) -> datetime:
        return self.clock()

    def _due_at(self, last_run_at: datetime) -> datetime:
        last = _aware(last_run_at)
        due = last + timedelta(seconds=SWEEP_SECONDS)
        for spec in self.specs():
            slot = next_slot(spec, last)
            if slot is not None and slot < due:
                due = slot
        return due

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return self._due_at(last_run_at) - self.now()

    def is_due(self, last_run_at: datetime) -> tuple[bool, float]:
        now = self.now()
        if self._due_at(last_run_at) <= now:
            wait = (self._due_at(now) - now).total_seconds()
            return True, max(0.0, min(wait, REFRESH_SECONDS))
        wait = (self._due_at(last_run_at) - now).total_seconds()
        return False, max(0.0, min(wait, REFRESH_SECONDS))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ScheduleTicker) and other.specs is self.specs

    def __hash__(self) -> int:
        return id(self.specs)

    def __repr__(self) -> str:
        return "<trigger schedules>"
