"""The routing tree of ``config/alerts.yaml`` (in the spirit of Prometheus Alertmanager): the
routes as written (:class:`RouteModel`, :class:`MatchModel`) and compiled (:class:`Route`, each
node with the settings it inherits)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, field_validator, model_validator

from pitstop.alerts.fields import Duration, PatternList, Strict, StrList, as_list
from pitstop.alerts.labels import SEVERITY_RANK, Matcher
from pitstop.kernel.configfile import FieldProblem, KeyPath

__all__ = ["LOG_RECEIVER", "MatchModel", "Route", "RouteModel", "compile_routes", "walk_models"]

LOG_RECEIVER = "log"
"""The built-in receiver with no channels: ``.state/alerts.jsonl`` only."""


class MatchModel(Strict):
    type: PatternList = Field(default_factory=list)
    severity: StrList = Field(default_factory=list)
    source: StrList = Field(default_factory=list)
    data: dict[str, Annotated[list[str | int | float | bool], BeforeValidator(as_list)]] = \
        Field(default_factory=dict)

    @field_validator("severity")
    @classmethod
    def _severities(cls, value: list[str]) -> list[str]:
        for name in value:
            if name.lower() not in SEVERITY_RANK:
                raise ValueError(f"unknown severity {name!r} (known: "
                                 f"{', '.join(SEVERITY_RANK)})")
        return [name.lower() for name in value]

    def matcher(self) -> Matcher:
        return Matcher.build(self.type, self.severity, self.source,
                             {k: [str(v).lower() if isinstance(v, bool) else str(v) for v in vs]
                              for k, vs in self.data.items()})


class RouteModel(Strict):
    match: MatchModel | None = None
    receiver: str | None = None
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    continue_: bool = Field(False, alias="continue")
    send_resolved: bool | None = None
    escalate_after: Duration | None = None
    escalate_to: str | None = None
    throttle_window: Duration | None = None
    dedupe_by: list[str] | None = None
    routes: list[RouteModel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _escalation_pair(self) -> RouteModel:
        if (self.escalate_after is None) != (self.escalate_to is None):
            raise FieldProblem(("escalate_to" if self.escalate_to is None else "escalate_after",),
                               "escalate_after and escalate_to go together")
        return self


def walk_models(route: RouteModel, path: KeyPath) -> Iterator[tuple[KeyPath, RouteModel]]:
    yield path, route
    for index, child in enumerate(route.routes):
        yield from walk_models(child, (*path, "routes", index))


@dataclass(frozen=True)
class Route:
    """One node of the routing tree with its settings inherited from its parents."""

    id: str
    matcher: Matcher
    receiver: str
    group_by: tuple[str, ...]
    group_wait: float
    group_interval: float
    repeat_interval: float
    continue_: bool
    send_resolved: bool
    escalate_after: float | None
    escalate_to: str | None
    throttle_window: float
    dedupe_by: tuple[str, ...]
    routes: tuple[Route, ...] = ()

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes ``labels`` end up at below (and including) this matching node."""
        found: list[Route] = []
        for child in self.routes:
            if child.matcher.matches(labels):
                found.extend(child.match(labels))
                if not child.continue_:
                    break
        return found or [self]

    def walk(self) -> Iterator[Route]:
        yield self
        for child in self.routes:
            yield from child.walk()


_ROOT_DEFAULTS = RouteModel(receiver=LOG_RECEIVER, group_by=["subject"], group_wait=30.0,
                            group_interval=300.0, repeat_interval=4 * 3600.0,
                            send_resolved=True, throttle_window=0.0,
                            dedupe_by=["type", "source"])


def compile_routes(model: RouteModel, parent: Route | None, route_id: str) -> Route:
    def pick(name: str) -> Any:
        value = getattr(model, name)
        if value is not None:
            return value
        return getattr(parent, name) if parent is not None else getattr(_ROOT_DEFAULTS, name)

    node = Route(
        id=route_id, matcher=model.match.matcher() if model.match else Matcher(),
        receiver=pick("receiver"), group_by=tuple(pick("group_by")),
        group_wait=pick("group_wait"), group_interval=pick("group_interval"),
        repeat_interval=pick("repeat_interval"), continue_=model.continue_,
        send_resolved=pick("send_resolved"),
        escalate_after=model.escalate_after, escalate_to=model.escalate_to,
        throttle_window=pick("throttle_window"), dedupe_by=tuple(pick("dedupe_by")))
    children = tuple(compile_routes(child, node, f"{route_id}.{index}")
                     for index, child in enumerate(model.routes))
    return Route(**{**node.__dict__, "routes": children})
