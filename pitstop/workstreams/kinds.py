"""The step kinds the workstream engine ships: ``run``, ``emit`` and ``workstream``.

Importing this module registers them (it is listed in ``BUILTIN_STEP_MODULES``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, cast

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pitstop.bus.events import Event
from pitstop.bus.patterns import normalize_type
from pitstop.kernel.configfile import validate_field
from pitstop.kernel.constants import RUN_KIND_SCRIPT
from pitstop.kernel.errors import PitstopError, ScriptFailed
from pitstop.kernel.settings import Settings
from pitstop.runs.output import RunOutput
from pitstop.runs.store import Run
from pitstop.scripts.policy import ScriptName, ScriptText, check_caller_env
from pitstop.scripts.runner import ScriptRequest
from pitstop.workstreams.spec import KIND_EMIT, KIND_RUN, KIND_WORKSTREAM
from pitstop.workstreams.steps import StepContext, StepResult, StepStatus, register_step_kind

__all__ = ["EmitKind", "RunKind", "WorkstreamKind", "child_run_id"]

log = logging.getLogger(__name__)

TAIL_CHARS = 4000
"""How much of a script's stdout/stderr tail a ``run`` step keeps in its outputs."""
CANCEL_POLL_SECONDS = 0.25


class RunParams(BaseModel):
    """``run``: a script, as ``pitstop run`` would run it, on the step's queue."""

    model_config = ConfigDict(extra="forbid")

    script: ScriptName
    args: list[ScriptText] = Field(default_factory=list)
    env: dict[str, ScriptText] = Field(default_factory=dict)
    """Travels sealed inside the run record when a secret key is configured."""
    cwd: str | None = None

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        validate_field(check_caller_env, value)
        return value


def child_run_id(run_id: str, step_id: str, attempt: int) -> str:
    """The script run of one attempt of a ``run`` step (the same for a redelivered message)."""
    return f"{run_id}.{step_id}.{attempt}"


class RunKind:
    name = KIND_RUN
    params_model: type[BaseModel] = RunParams
    sealed_params = ("env",)
    """Params the orchestrator seals inside the run record (values of secret variables)."""
    enforces_timeout = True
    """The script runner kills the script at the step's timeout itself."""
    uses_scripts = True
    """Give it this worker's script runner (``StepContext.script_runner``)."""

    def default_queue(self, settings: Settings) -> str:
        return settings.scripts.default_queue

    def execute(self, ctx: StepContext) -> StepResult:
        params = cast(RunParams, ctx.params)
        runs, runner = ctx.runs, ctx.script_runner
        if runs is None or runner is None:
            return StepResult("failed", message="this process has no script runner")
        scripts = ctx.settings.scripts
        timeout = min(ctx.timeout or scripts.default_timeout, scripts.max_timeout)
        child_id = child_run_id(ctx.run_id, ctx.step_id, ctx.attempt)
        runs.create_run(
            kind=RUN_KIND_SCRIPT, run_id=child_id, queue=ctx.queue, trace_id=ctx.trace_id,
            parent_run_id=ctx.run_id,
            params=ctx.redactor.redact({
                "script": params.script, "args": ctx.redactor.redact_args(params.args),
                "cwd": params.cwd, "timeout": timeout, "env": sorted(params.env),
                "workstream_run": ctx.run_id, "step": ctx.step_id, "attempt": ctx.attempt}))
        request = ScriptRequest(run_id=child_id, script=params.script, args=list(params.args),
                                env=dict(params.env), cwd=params.cwd, timeout=timeout,
                                trace_id=ctx.trace_id)
        done = threading.Event()
        forwarder = threading.Thread(target=_forward_cancel, name=f"pitstop-cancel-{child_id}",
                                     args=(ctx, RunOutput(ctx.redis), child_id, done), daemon=True)
        forwarder.start()
        try:
            skip = runner.claim(request)
            if skip is None:
                runner.execute(request, give_up_by=ctx.give_up_by)
        except ScriptFailed:
            pass  # the child run records how it ended
        finally:
            done.set()
            forwarder.join(1.0)
        return _result_of(runs.get_run(child_id))


def _forward_cancel(ctx: StepContext, output: RunOutput, child_id: str,
                    done: threading.Event) -> None:
    """Cancel the script when the workstream run (or this step) is cancelled."""
    while not done.wait(CANCEL_POLL_SECONDS):
        try:
            if ctx.cancelled():
                output.request_cancel(child_id)
                return
        except Exception as exc:  # Redis away for a moment: the next poll tries again
            log.debug("cancel poll for %s failed: %s", child_id, exc)


def _result_of(child: Run) -> StepResult:
    status: StepStatus
    if child.status in ("succeeded", "failed", "timed_out", "cancelled"):
        status = cast(StepStatus, child.status)
    else:
        status = "failed"
    last = child.executions[-1] if child.executions else {}
    outputs: dict[str, Any] = {
        "run_id": child.run_id, "exit_code": child.exit_code, "duration": child.duration,
        "host": child.host,
        "stdout_tail": str(last.get("stdout_tail") or "")[-TAIL_CHARS:],
        "stderr_tail": str(last.get("stderr_tail") or "")[-TAIL_CHARS:],
    }
    if status == "succeeded":
        message = "exit code 0"
    elif child.status in ("lost", "expired"):
        message = f"script run {child.status}: {child.error or ''}".rstrip(": ")
    elif child.error and child.exit_code is None:
        message = child.error
    elif status == "timed_out":
        message = f"timed out (exit code {child.exit_code})"
    else:
        message = f"exit code {child.exit_code}"
    if child.status == "running":
        message = "the script's result could not be recorded"
    return StepResult(status, outputs, message)


class EmitParams(BaseModel):
    """``emit``: an event on the bus, in the run's trace, one hop after the triggering event."""

    model_config = ConfigDict(extra="forbid")

    type: str
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _event_type(cls, value: str) -> str:
        return validate_field(normalize_type, value)


class EmitKind:
    name = KIND_EMIT
    params_model: type[BaseModel] = EmitParams

    def execute(self, ctx: StepContext) -> StepResult:
        params = cast(EmitParams, ctx.params)
        parent = Event.from_dict(ctx.event) if ctx.event and ctx.event.get("id") else None
        try:
            event = ctx.bus.publish(params.type, ctx.redactor.redact(params.data), parent=parent,
                                    trace_id=ctx.trace_id)
        except PitstopError as exc:
            return StepResult("failed", message=str(exc))
        return StepResult("succeeded", {"event_id": event.id, "type": event.type,
                                        "hops": event.hops}, f"published {event.type}")


class WorkstreamParams(BaseModel):
    """``workstream``: a sub-pipeline, its own run; the step ends as that run ends."""

    model_config = ConfigDict(extra="forbid")

    workstream: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class WorkstreamKind:
    name = KIND_WORKSTREAM
    params_model: type[BaseModel] = WorkstreamParams

    def execute(self, ctx: StepContext) -> StepResult:
        params = cast(WorkstreamParams, ctx.params)
        if ctx.launch_workstream is None:
            return StepResult("failed", message="sub-workstreams cannot be launched here")
        try:
            child = ctx.launch_workstream(params.workstream, dict(params.params))
        except (PitstopError, pydantic.ValidationError) as exc:
            return StepResult("failed", message=f"could not launch {params.workstream}: {exc}")
        return StepResult("waiting", {"run_id": child}, f"sub-workstream run {child}")


register_step_kind(RunKind())
register_step_kind(EmitKind())
register_step_kind(WorkstreamKind())
