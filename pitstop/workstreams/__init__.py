"""Workstreams: named pipelines of steps, launched by triggers or by hand, driven by events.

``config/workstreams.yaml`` is compiled into a :class:`WorkstreamCatalog`; an
:class:`Orchestrator` launches runs (one Redis script and one message per first step) and moves
them on as their steps report; :class:`StepExecutor` is the worker's side of a step;
:func:`repair_runs` is the reaper that keeps any run from getting stuck. Step kinds are a
registry (:mod:`pitstop.workstreams.steps`): ``run``, ``emit`` and ``workstream`` ship here.
"""

from pitstop.workstreams.catalog import Workstream, WorkstreamCatalog
from pitstop.workstreams.executor import StepExecutor, StepOutcome
from pitstop.workstreams.orchestrator import LaunchResult, Orchestrator, orchestrator_from
from pitstop.workstreams.plan import AttemptResult, Plan, StepState
from pitstop.workstreams.repair import RepairReport, repair_runs
from pitstop.workstreams.spec import StepSpec, WorkstreamSpec
from pitstop.workstreams.steps import (
    StepContext,
    StepKind,
    StepResult,
    get_step_kind,
    register_step_kind,
    step_kinds,
)

__all__ = [
    "AttemptResult",
    "LaunchResult",
    "Orchestrator",
    "Plan",
    "RepairReport",
    "StepContext",
    "StepExecutor",
    "StepKind",
    "StepOutcome",
    "StepResult",
    "StepSpec",
    "StepState",
    "Workstream",
    "WorkstreamCatalog",
    "WorkstreamSpec",
    "get_step_kind",
    "orchestrator_from",
    "register_step_kind",
    "repair_runs",
    "step_kinds",
]
