"""A workstream's definition as a run executes it: stages of steps, plain and JSON-able.

The catalog compiles ``config/workstreams.yaml`` into :class:`WorkstreamSpec` objects; a launch
copies the spec (with the specs of the sub-workstreams it can reach) into the run record, so a
run goes on with the definition it started with whatever is edited meanwhile, and the workers
executing its steps need no config file of their own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from pitstop.kernel.errors import ValidationError

ConcurrencyPolicy = Literal["allow", "skip", "queue", "cancel_previous"]
CONCURRENCY_POLICIES: tuple[str, ...] = ("allow", "skip", "queue", "cancel_previous")

KIND_RUN = "run"
"""A script on a queue, through the script runner (a child script run record)."""
KIND_EMIT = "emit"
"""An event on the bus, in the run's trace, one hop further."""
KIND_WORKSTREAM = "workstream"
"""A sub-workstream: a run of its own, the step ends when it ends."""


@dataclass(frozen=True)
class StepSpec:
    """One step: what kind of work, with which (templated) parameters, under which limits."""

    id: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    """As written in the config: strings may be templates, rendered when the step starts."""
    queue: str | None = None
    """None: the kind's default queue (resolved when the run is launched)."""
    timeout: float | None = None
    """Seconds one attempt may take; None: the kind's own bound (scripts: the default timeout)."""
    queue_timeout: float | None = None
    """Seconds an attempt may wait in its queue for a worker; None: ``scripts.queue_ttl_seconds``."""
    retries: int = 0
    """Further attempts after a failed or timed-out one."""
    backoff: float = 5.0
    """Seconds before the first retry; each next one waits ``backoff_factor`` times longer."""
    backoff_factor: float = 2.0
    max_backoff: float = 600.0
    description: str = ""

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait before the attempt after ``attempt`` (counted from 1)."""
        delay = self.backoff * self.backoff_factor ** max(0, attempt - 1)
        return float(min(self.max_backoff, delay))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "params": self.params, "queue": self.queue,
                "timeout": self.timeout, "queue_timeout": self.queue_timeout,
                "retries": self.retries, "backoff": self.backoff,
                "backoff_factor": self.backoff_factor, "max_backoff": self.max_backoff,
                "description": self.description}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StepSpec:
        return cls(id=str(raw["id"]), kind=str(raw["kind"]), params=dict(raw.get("params") or {}),
                   queue=raw.get("queue"), timeout=raw.get("timeout"),
                   queue_timeout=raw.get("queue_timeout"), retries=int(raw.get("retries", 0)),
                   backoff=float(raw.get("backoff", 5.0)),
                   backoff_factor=float(raw.get("backoff_factor", 2.0)),
                   max_backoff=float(raw.get("max_backoff", 600.0)),
                   description=str(raw.get("description", "")))


Stage = tuple[StepSpec, ...]
"""Steps that run together (a parallel group); a sequential step is a stage of one."""


@dataclass(frozen=True)
class WorkstreamSpec:
    """A workstream: main stages in order, ``on_failure`` stages, params, limits, policy."""

    id: str
    stages: tuple[Stage, ...]
    on_failure: tuple[Stage, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    """Declared params and their defaults (None: must be given at launch)."""
    timeout: float | None = None
    """Seconds the whole run may take once started; past it the run ends ``timed_out``."""
    policy: ConcurrencyPolicy = "allow"
    concurrency_key: str = ""
    """A template over ``event`` and ``params``; runs with the same rendered key share a slot."""
    description: str = ""
    subs: dict[str, WorkstreamSpec] = field(default_factory=dict)
    """Sub-workstreams reachable through ``workstream`` steps (filled in for launches)."""

    def all_steps(self) -> Iterator[StepSpec]:
        for stage in (*self.stages, *self.on_failure):
            yield from stage

    def step(self, step_id: str) -> StepSpec:
        for spec in self.all_steps():
            if spec.id == step_id:
                return spec
        raise KeyError(step_id)

    def step_ids(self) -> list[str]:
        return [spec.id for spec in self.all_steps()]

    def main_ids(self) -> set[str]:
        return {spec.id for stage in self.stages for spec in stage}

    def stage_of(self, step_id: str) -> tuple[str, int]:
        """``("main" | "on_failure", index)`` of the stage holding ``step_id``."""
        for part, stages in (("main", self.stages), ("on_failure", self.on_failure)):
            for index, stage in enumerate(stages):
                if any(spec.id == step_id for spec in stage):
                    return part, index
        raise KeyError(step_id)

    def resolve_params(self, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The declared params with their defaults, overridden by ``given``.

        Raises :class:`ValidationError` for a param the workstream does not declare, or one
        declared without a default (``null``) and not given."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            declared = ", ".join(sorted(self.params)) or "none"
            raise ValidationError(f"workstream {self.id} has no param {', '.join(unknown)} "
                                  f"(declared: {declared})")
        resolved = {**self.params, **given}
        missing = sorted(name for name, value in resolved.items() if value is None)
        if missing:
            raise ValidationError(f"workstream {self.id} needs param {', '.join(missing)} "
                                  "(it has no default): give it with --param NAME=VALUE")
        return resolved

    def with_queues(self, default_queue: Any) -> WorkstreamSpec:
        """A copy whose steps (and sub-workstreams' steps) all name their queue:
        ``default_queue(step)`` for those that do not."""

        def fix(stages: tuple[Stage, ...]) -> tuple[Stage, ...]:
            return tuple(tuple(s if s.queue else replace(s, queue=default_queue(s))
                               for s in stage) for stage in stages)

        return replace(self, stages=fix(self.stages), on_failure=fix(self.on_failure),
                       subs={k: v.with_queues(default_queue) for k, v in self.subs.items()})

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stages": [[s.to_dict() for s in stage] for stage in self.stages],
            "on_failure": [[s.to_dict() for s in stage] for stage in self.on_failure],
            "params": self.params, "timeout": self.timeout, "policy": self.policy,
            "concurrency_key": self.concurrency_key, "description": self.description,
            "subs": {key: sub.to_dict() for key, sub in self.subs.items()},
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> WorkstreamSpec:
        def stages(items: Any) -> tuple[Stage, ...]:
            return tuple(tuple(StepSpec.from_dict(s) for s in stage) for stage in items or [])

        policy = raw.get("policy", "allow")
        return cls(id=str(raw["id"]), stages=stages(raw.get("stages")),
                   on_failure=stages(raw.get("on_failure")), params=dict(raw.get("params") or {}),
                   timeout=raw.get("timeout"),
                   policy=policy if policy in CONCURRENCY_POLICIES else "allow",
                   concurrency_key=str(raw.get("concurrency_key") or ""),
                   description=str(raw.get("description", "")),
                   subs={str(k): cls.from_dict(v) for k, v in (raw.get("subs") or {}).items()})
