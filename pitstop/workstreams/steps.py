"""Step kinds: what one step of a workstream can do, as a registry the engine never hard-codes.

The workstream engine ships ``run``, ``emit`` and ``workstream``; other components add theirs
(``triage``, ``validate_patch``, ``alert``, ``deploy``) from their own package by calling
:func:`register_step_kind` in a module listed in :data:`BUILTIN_STEP_MODULES`. The engine imports
those modules by name (:func:`load_builtin_step_kinds`), so the workstreams package never imports
a component above it.

A step kind is a plain object (no Celery): it validates its parameters at config load
(``params_model``) and executes synchronously on a worker consuming the step's queue, returning a
:class:`StepResult` whose ``outputs`` later steps read as ``{{ steps.<id>.<key> }}``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import pydantic

from pitstop.kernel.errors import ConfigError

if TYPE_CHECKING:
    import redis

    from pitstop.bus.eventbus import EventBus
    from pitstop.kernel.redaction import Redactor
    from pitstop.kernel.settings import Settings
    from pitstop.runs.store import RunStore
    from pitstop.scripts.runner import ScriptRunner

__all__ = [
    "BUILTIN_STEP_MODULES",
    "StepContext",
    "StepKind",
    "StepResult",
    "get_step_kind",
    "load_builtin_step_kinds",
    "register_step_kind",
    "step_kinds",
]

BUILTIN_STEP_MODULES: list[str] = [
    # each entry: a module whose import registers step kinds (one line per component)
    "pitstop.workstreams.kinds",  # workstreams
    "pitstop.triage.step",  # triage
    "pitstop.patches.steps",  # patches
    "pitstop.alerts.steps",  # alerts
    "pitstop.deploy.step",  # deploy
]

StepStatus = Literal["succeeded", "failed", "cancelled", "timed_out", "waiting"]
"""``waiting``: the step goes on elsewhere (a sub-workstream's run, launched through
:attr:`StepContext.launch_workstream`); the engine completes it when that run ends."""


@dataclass(frozen=True)
class StepContext:
    """What a step kind sees when it executes: the rendered parameters and the services."""

    run_id: str
    """The workstream run this step belongs to."""
    workstream_id: str
    step_id: str
    attempt: int
    params: pydantic.BaseModel
    """The step's parameters, templates rendered, validated by the kind's ``params_model``."""
    event: dict[str, Any] | None
    """The triggering event as a dict (``id``, ``type``, ``data``, ``trace_id`` …), if any."""
    trace_id: str | None
    hops: int
    timeout: float | None
    """Seconds the step may take (None: the kind's own bound)."""
    settings: Settings
    redis: redis.Redis
    bus: EventBus
    redactor: Redactor
    cancelled: Callable[[], bool] = lambda: False
    """Poll this in long steps: True once the run was cancelled (or this step must stop)."""
    queue: str | None = None
    """The queue this step was sent to (the worker executing it consumes it)."""
    runs: RunStore | None = None
    """The run store, for kinds that keep run records of their own (``run``: the script run)."""
    script_runner: ScriptRunner | None = None
    """This worker process's script runner (``run`` executes its script through it)."""
    give_up_by: float | None = None
    """A :func:`time.monotonic` time the step must be done by (the task's hard limit)."""
    launch_workstream: Callable[[str, dict[str, Any]], str] | None = None
    """Launch a workstream as part of this step; returns its run id. A kind that uses it
    returns ``StepResult("waiting")``: the step ends when that run ends."""


@dataclass
class StepResult:
    status: StepStatus
    outputs: dict[str, Any] = field(default_factory=dict)
    """JSON-able values later steps read as ``steps.<id>.<key>`` (``exit_code`` by convention)."""
    message: str = ""
    """One line saying why, for the run record and ``pitstop show``."""


class StepKind(Protocol):
    name: str
    params_model: type[pydantic.BaseModel]

    def execute(self, ctx: StepContext) -> StepResult: ...


_REGISTRY: dict[str, StepKind] = {}


def register_step_kind(kind: StepKind) -> StepKind:
    """Add ``kind`` under ``kind.name``; registering the same object twice is harmless."""
    existing = _REGISTRY.get(kind.name)
    if existing is not None and existing is not kind and type(existing) is not type(kind):
        raise ConfigError(f"step kind {kind.name!r} is registered twice")
    _REGISTRY[kind.name] = kind
    return kind


def load_builtin_step_kinds() -> None:
    for module in BUILTIN_STEP_MODULES:
        importlib.import_module(module)


def get_step_kind(name: str) -> StepKind:
    load_builtin_step_kinds()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise ConfigError(f"unknown step kind {name!r} (known: {known})") from None


def step_kinds() -> dict[str, StepKind]:
    load_builtin_step_kinds()
    return dict(_REGISTRY)
