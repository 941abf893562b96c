"""One trigger rule: its YAML model (validated at load) and its compiled form.

```yaml
triggers:
  - id: phase1_to_phase2
    event: phase.1.completed            # a pattern: '*' one segment, '**' any number
    workstream: WS-PHASE-2
    conditions: [{field: data.status, equals: ok}]
    params: {branch: "{{ event.data.branch }}"}
    debounce: 5s                        # or {window: 5s, key: "{{ event.data.branch }}"}
    throttle: {max: 3, per: 10m}        # optional key: too
    dedupe: "{{ event.data.sha }}"      # or {key: …, window: 1h}
  - id: nightly
    schedule: {cron: "0 2 * * *", timezone: Europe/Berlin, catch_up: skip}
    workstream: WS-NIGHTLY
```
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from pitstop.bus.patterns import compile_pattern
from pitstop.kernel.configfile import FieldProblem, validate_field
from pitstop.kernel.errors import ValidationError
from pitstop.triggers import schedules
from pitstop.triggers.conditions import Condition, parse_condition
from pitstop.triggers.schedules import ScheduleSpec
from pitstop.triggers.templates import Template, compile_value

__all__ = ["Debounce", "Dedupe", "Rule", "RuleModel", "Schedule", "Throttle", "TriggersFile",
           "compile_rule", "parse_duration"]

RULE_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,99}\Z")
EVENT_ROOTS = frozenset({"event", "trigger"})
SCHEDULE_ROOTS = frozenset({"schedule", "trigger"})
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)(ms|s|m|h|d))+\Z")
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_DURATION = 366 * 86400


def parse_duration(value: Any) -> float:
    """Seconds from ``5``, ``2.5``, ``"5s"``, ``"1m30s"``, ``"250ms"``, ``"2h"``, ``"1d"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s, 10m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and _DURATION.match(value.strip().replace(" ", "")):
        text = value.strip().replace(" ", "")
        seconds = sum(float(n) * _UNITS[unit] for n, unit in _PART.findall(text))
    else:
        raise ValueError(f"{value!r} is not a duration such as 5s, 10m, 1h30m or 1d")
    if not 0 < seconds <= MAX_DURATION or math.isnan(seconds):
        raise ValueError(f"a duration must be more than 0 and at most {MAX_DURATION // 86400} days")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DebounceModel(_Model):
    window: Duration
    key: str | None = None


class ThrottleModel(_Model):
    max: int = Field(ge=1, le=1_000_000)
    per: Duration
    key: str | None = None


class DedupeModel(_Model):
    key: str
    window: Duration = 3600.0


class ScheduleModel(_Model):
    cron: str | None = None
    every: Duration | None = None
    timezone: str = "UTC"
    catch_up: Literal["skip", "once"] = "skip"
    """A slot missed by more than ``grace`` (Beat was down): ``skip`` it, or fire ``once`` for
    all of them."""
    grace: Duration = 60.0
    """A slot fired at most this late still counts as on time (Beat fail-over, a slow tick)."""

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleModel:
        if (self.cron is None) == (self.every is None):
            raise FieldProblem((), "give either cron: or every:, not both or neither")
        try:
            schedules.parse_zone(self.timezone)
        except ValidationError as exc:
            raise FieldProblem(("timezone",), str(exc)) from None
        try:
            self.spec()
        except ValidationError as exc:
            raise FieldProblem(("cron",) if self.cron is not None else ("every",),
                               str(exc)) from None
        return self

    def spec(self) -> ScheduleSpec:
        if self.cron is not None:
            return schedules.parse_cron(self.cron, self.timezone)
        return schedules.every(self.every or 0)


class RuleModel(_Model):
    id: str
    workstream: str = Field(min_length=1, max_length=200)
    event: str | None = None
    schedule: ScheduleModel | None = None
    conditions: Any = None
    params: dict[str, Any] = Field(default_factory=dict)
    debounce: Duration | DebounceModel | None = None
    throttle: ThrottleModel | None = None
    dedupe: str | DedupeModel | None = None
    enabled: bool = True
    allow_cycle: bool = False
    """Accept that this rule closes a cycle of workstreams (the hop limit still stops it)."""
    description: str = ""

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not RULE_ID.match(value):
            raise ValueError("a rule id is 1-100 letters, digits, '_', '-', '.' or ':'")
        return value

    @field_validator("event")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            validate_field(compile_pattern, value)
        return value

    @field_validator("conditions")
    @classmethod
    def _conditions(cls, value: Any) -> Any:
        if value is not None:
            parse_condition(value)
        return value

    @model_validator(mode="after")
    def _shape(self) -> RuleModel:
        if (self.event is None) == (self.schedule is None):
            raise FieldProblem((), "a rule needs either event: (a pattern) or schedule:, "
                               "not both or neither")
        if self.schedule is not None:
            for name in ("conditions", "debounce", "throttle", "dedupe"):
                if getattr(self, name) is not None:
                    raise FieldProblem((name,), "only event rules take this (a schedule fires "
                                       "once per slot)")
        roots = EVENT_ROOTS if self.event is not None else SCHEDULE_ROOTS
        _templates(self, roots)
        return self


def _templates(rule: RuleModel, roots: frozenset[str]) -> None:
    def check(where: tuple[str | int, ...], text: str | None) -> None:
        if text is not None:
            try:
                Template(text, roots=roots)
            except ValidationError as exc:
                raise FieldProblem(where, str(exc)) from None

    def walk(value: Any, where: tuple[str | int, ...]) -> None:
        if isinstance(value, str):
            check(where, value)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, (*where, str(key)))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, (*where, index))

    walk(rule.params, ("params",))
    if isinstance(rule.debounce, DebounceModel):
        check(("debounce", "key"), rule.debounce.key)
    if rule.throttle is not None:
        check(("throttle", "key"), rule.throttle.key)
    if isinstance(rule.dedupe, str):
        check(("dedupe",), rule.dedupe)
    elif isinstance(rule.dedupe, DedupeModel):
        check(("dedupe", "key"), rule.dedupe.key)


class TriggersFile(_Model):
    version: Literal[1] = 1
    triggers: list[RuleModel] = Field(default_factory=list)


# --- compiled ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Debounce:
    window: float
    key: Template | None


@dataclass(frozen=True)
class Throttle:
    max: int
    per: float
    key: Template | None


@dataclass(frozen=True)
class Dedupe:
    key: Template
    window: float


@dataclass(frozen=True)
class Schedule:
    spec: ScheduleSpec
    catch_up: str
    grace: float

    def describe(self) -> str:
        return schedules.describe(self.spec)


@dataclass(frozen=True)
class Rule:
    """A compiled trigger rule."""

    id: str
    workstream: str
    pattern: str | None = None
    schedule: Schedule | None = None
    condition: Condition | None = None
    conditions_raw: Any = None
    params: Any = field(default_factory=dict)
    debounce: Debounce | None = None
    throttle: Throttle | None = None
    dedupe: Dedupe | None = None
    enabled: bool = True
    allow_cycle: bool = False
    description: str = ""
    line: int | None = None

    @property
    def on(self) -> str:
        """What fires it, for listings: the pattern, or the schedule."""
        if self.pattern is not None:
            return self.pattern
        return self.schedule.describe() if self.schedule is not None else "(nothing)"


def compile_rule(model: RuleModel, *, line: int | None = None) -> Rule:
    roots = EVENT_ROOTS if model.event is not None else SCHEDULE_ROOTS

    def template(text: str | None) -> Template | None:
        return None if text is None else Template(text, roots=roots)

    debounce = None
    if isinstance(model.debounce, DebounceModel):
        debounce = Debounce(model.debounce.window, template(model.debounce.key))
    elif model.debounce is not None:
        debounce = Debounce(float(model.debounce), None)
    dedupe = None
    if isinstance(model.dedupe, DedupeModel):
        dedupe = Dedupe(Template(model.dedupe.key, roots=roots), model.dedupe.window)
    elif isinstance(model.dedupe, str):
        dedupe = Dedupe(Template(model.dedupe, roots=roots), 3600.0)
    throttle = None
    if model.throttle is not None:
        throttle = Throttle(model.throttle.max, model.throttle.per, template(model.throttle.key))
    schedule = None
    if model.schedule is not None:
        schedule = Schedule(model.schedule.spec(), model.schedule.catch_up, model.schedule.grace)
    return Rule(
        id=model.id, workstream=model.workstream,
        pattern=compile_pattern(model.event).text if model.event is not None else None,
        schedule=schedule,
        condition=parse_condition(model.conditions) if model.conditions is not None else None,
        conditions_raw=model.conditions,
        params=compile_value(model.params, roots=roots), debounce=debounce, throttle=throttle,
        dedupe=dedupe, enabled=model.enabled, allow_cycle=model.allow_cycle,
        description=model.description, line=line)
