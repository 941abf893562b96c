"""The workstream state machine: what each event does to a run's steps, with no I/O.

A run goes ``pending`` (waiting for its concurrency slot) → ``main`` (its stages one after the
other, the steps of a parallel group together) → ``on_failure`` (after a step failed for good,
or the run timed out) → ``ended``. Every change is a method returning an :class:`Advance`: the
attempts to send, the running steps to stop, and the ending if the run has ended. The
orchestrator applies it inside a compare-and-set of the run record, so a redelivered message
that finds the step already moved on changes nothing.

Steps go ``pending`` → ``queued`` (sent, attempt N) → ``running`` (a worker claimed it) or
``waiting`` (its sub-workstream runs) → ``succeeded`` / ``failed`` / ``timed_out`` /
``cancelled``; a failed or timed-out attempt with retries left goes back to ``queued`` with the
next attempt number after its backoff. Steps that never ran end ``skipped``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import pydantic

from pitstop.kernel.ids import utc_iso
from pitstop.workstreams.spec import Stage, WorkstreamSpec

__all__ = [
    "ACTIVE_STEP_STATUSES",
    "FINISHED_STEP_STATUSES",
    "Advance",
    "AttemptResult",
    "Dispatch",
    "Ending",
    "Plan",
    "StepState",
]

StepStatusName = Literal["pending", "queued", "running", "waiting", "succeeded", "failed",
                         "timed_out", "cancelled", "skipped"]
RunPhase = Literal["pending", "main", "on_failure", "ended"]
EndStatus = Literal["succeeded", "failed", "timed_out", "cancelled"]
AttemptStatus = Literal["succeeded", "failed", "timed_out", "cancelled"]
ACTIVE_STEP_STATUSES = frozenset({"queued", "running", "waiting"})
FINISHED_STEP_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled", "skipped"})
EXIT_TIMED_OUT = 124
MAX_HISTORY = 50


class StepState(pydantic.BaseModel):
    """One step of one run, as the run record holds it."""

    model_config = pydantic.ConfigDict(extra="ignore")

    status: StepStatusName = "pending"
    attempt: int = 0
    """The current (or last) attempt, from 1; 0 until the step is first sent."""
    queue: str | None = None
    queued_at: datetime | None = None
    retry_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    host: str | None = None
    pid: int | None = None
    child_run_id: str | None = None
    """The sub-workstream run a ``waiting`` step waits for."""
    outputs: dict[str, Any] = pydantic.Field(default_factory=dict)
    message: str = ""
    stop_requested: bool = False
    resent: int = 0
    """How often the reaper re-sent this attempt's message (a launcher died before sending)."""
    history: list[dict[str, Any]] = pydantic.Field(default_factory=list)
    """Earlier attempts: attempt, status, started_at, finished_at, host, message."""

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


@dataclass(frozen=True)
class Dispatch:
    """Send attempt ``attempt`` of ``step_id`` to ``queue`` (after ``countdown`` seconds)."""

    step_id: str
    attempt: int
    queue: str
    countdown: float = 0.0


@dataclass(frozen=True)
class AttemptResult:
    """How one attempt ended."""

    status: AttemptStatus
    outputs: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    retryable: bool = True
    """False for failures another attempt cannot mend (a template error, a bad parameter)."""


@dataclass(frozen=True)
class Ending:
    status: EndStatus
    error: str | None
    exit_code: int | None
    failed_step: str | None


@dataclass
class Advance:
    """What a change asks the orchestrator to do once it is committed."""

    dispatch: list[Dispatch] = field(default_factory=list)
    stop: list[str] = field(default_factory=list)
    """Running steps to ask to stop (a sibling failed, the run was cancelled)."""
    stop_children: list[str] = field(default_factory=list)
    """Sub-workstream runs to cancel."""
    ended: Ending | None = None
    notes: list[str] = field(default_factory=list)
    """Progress lines for whoever follows the run."""
    changed: bool = False


ClaimVerdict = Literal["claimed", "again", "held", "skip"]
"""``claimed``: now running for this worker; ``again``: it already was (a retried claim);
``held``: running for another worker (alive or not: the caller checks); ``skip``: the message is
stale (another attempt, a finished step, an ended run)."""


class Plan:
    """One run's progress, changed in memory by the methods below."""

    def __init__(self, spec: WorkstreamSpec, steps: Mapping[str, Any] | None = None, *,
                 phase: RunPhase = "pending", outcome: EndStatus | None = None,
                 failed_step: str | None = None, error: str | None = None) -> None:
        self.spec = spec
        known = dict(steps or {})
        self.steps: dict[str, StepState] = {
            step_id: StepState.model_validate(known.get(step_id) or {})
            for step_id in spec.step_ids()}
        self.phase: RunPhase = phase
        self.outcome: EndStatus | None = outcome
        self.failed_step = failed_step
        self.error = error

    def dump_steps(self) -> dict[str, dict[str, Any]]:
        return {step_id: state.model_dump(mode="json") for step_id, state in self.steps.items()}

    @property
    def ended(self) -> bool:
        return self.phase == "ended"

    # --- the run ---------------------------------------------------------------------------------

    def start(self, now: datetime) -> Advance:
        """Begin the first stage (a run that was ``pending``)."""
        advance = Advance()
        if self.phase != "pending":
            return advance
        advance.changed = True
        self.phase = "main"
        self._send_stage(self.spec.stages[0], now, advance)
        return advance

    def cancel(self, reason: str, now: datetime) -> Advance | None:
        """End the run ``cancelled`` at once; None when it has ended already. Steps not yet
        running never will; running ones are asked to stop (their results still land)."""
        if self.phase == "ended":
            return None
        advance = Advance(changed=True)
        self.error = reason
        for step_id, state in self.steps.items():
            self._stop(step_id, state, f"cancelled: {reason}", advance)
        self._end("cancelled", now, advance)
        return advance

    def time_out(self, now: datetime) -> Advance | None:
        """The whole run outlived its timeout: stop it and run ``on_failure`` (None when it is
        not in its main stages any more)."""
        if self.phase != "main" or self.spec.timeout is None:
            return None
        advance = Advance(changed=True)
        self._fail("timed_out", None, f"the workstream ran longer than its timeout of "
                   f"{self.spec.timeout:g}s", now, advance)
        return advance

    # --- one step --------------------------------------------------------------------------------

    def claim(self, step_id: str, attempt: int, *, host: str, pid: int,
              now: datetime) -> ClaimVerdict:
        state = self.steps.get(step_id)
        if state is None or state.attempt != attempt or self.phase in ("pending", "ended"):
            return "skip"
        if state.status == "queued":
            state.status = "running"
            state.host, state.pid = host, pid
            state.started_at, state.finished_at = now, None
            state.retry_at = None
            return "claimed"
        if state.status == "running":
            return "again" if (state.host, state.pid) == (host, pid) else "held"
        return "skip"

    def wait_for(self, step_id: str, attempt: int, child_run_id: str) -> bool:
        """The running attempt went on as sub-workstream run ``child_run_id``."""
        state = self.steps.get(step_id)
        if state is None or state.attempt != attempt or state.status != "running":
            return False
        state.status = "waiting"
        state.child_run_id = child_run_id
        return True

    def finish(self, step_id: str, attempt: int, result: AttemptResult,
               now: datetime) -> Advance:
        """Attempt ``attempt`` of ``step_id`` ended: retry it, or record it and move the run on.
        A result for another attempt, or for a step no longer active, changes nothing."""
        advance = Advance()
        state = self.steps.get(step_id)
        if (state is None or state.attempt != attempt
                or state.status not in ACTIVE_STEP_STATUSES):
            return advance
        advance.changed = True
        spec = self.spec.step(step_id)
        part, index = self.spec.stage_of(step_id)
        current = (part == "main" and self.phase == "main") or (
            part == "on_failure" and self.phase == "on_failure")
        self._remember(state, result, now)
        if (result.status in ("failed", "timed_out") and result.retryable and current
                and attempt <= spec.retries and not state.stop_requested):
            delay = spec.retry_delay(attempt)
            state.status = "queued"
            state.attempt = attempt + 1
            state.queued_at = now
            state.retry_at = _later(now, delay)
            state.host = state.pid = state.started_at = state.finished_at = None
            state.child_run_id = None
            state.resent = 0
            state.message = f"attempt {attempt} {result.status}: {result.message}".rstrip(": ")
            advance.notes.append(f"step {step_id}: attempt {attempt} {result.status}"
                                 f"{_said(result.message)}; attempt {attempt + 1} of "
                                 f"{spec.retries + 1} in {delay:g}s")
            advance.dispatch.append(Dispatch(step_id, attempt + 1, state.queue or "",
                                             countdown=delay))
            return advance
        state.status = result.status
        state.finished_at = now
        state.outputs = dict(result.outputs)
        state.message = result.message
        took = f" in {state.duration:.2f}s" if state.duration is not None else ""
        advance.notes.append(f"step {step_id}: {result.status}{took}{_said(result.message)}")
        if not current:
            return advance
        if part == "main":
            if result.status != "succeeded":
                outcome: EndStatus = "timed_out" if result.status == "timed_out" else "failed"
                self._fail(outcome, step_id, f"step {step_id} {result.status}"
                           f"{_said(result.message)}", now, advance)
            elif all(self.steps[s.id].status == "succeeded" for s in self.spec.stages[index]):
                if index + 1 < len(self.spec.stages):
                    self._send_stage(self.spec.stages[index + 1], now, advance)
                else:
                    self._end("succeeded", now, advance)
        elif all(self.steps[s.id].status in FINISHED_STEP_STATUSES
                 for s in self.spec.on_failure[index]):
            if index + 1 < len(self.spec.on_failure):
                self._send_stage(self.spec.on_failure[index + 1], now, advance)
            else:
                self._end(self.outcome or "failed", now, advance)
        return advance

    # --- for templates ---------------------------------------------------------------------------

    def template_steps(self) -> dict[str, dict[str, Any]]:
        """``steps`` as templates see it: each step's outputs plus its status and attempt."""
        return {step_id: {**state.outputs, "status": state.status, "attempt": state.attempt,
                          "message": state.message}
                for step_id, state in self.steps.items()}

    # --- inside ----------------------------------------------------------------------------------

    def _send_stage(self, stage: Stage, now: datetime, advance: Advance) -> None:
        for spec in stage:
            state = self.steps[spec.id]
            state.status = "queued"
            state.attempt = 1
            state.queue = spec.queue
            state.queued_at = now
            advance.dispatch.append(Dispatch(spec.id, 1, spec.queue or ""))

    def _stop(self, step_id: str, state: StepState, why: str, advance: Advance) -> None:
        if state.status == "pending":
            state.status = "skipped"
            state.message = why
        elif state.status == "queued":
            state.status = "cancelled"
            state.message = why
        elif state.status in ("running", "waiting"):
            state.stop_requested = True
            advance.stop.append(step_id)
            if state.status == "waiting" and state.child_run_id:
                advance.stop_children.append(state.child_run_id)

    def _fail(self, outcome: EndStatus, failed_step: str | None, error: str, now: datetime,
              advance: Advance) -> None:
        self.phase = "on_failure"
        self.outcome = outcome
        self.failed_step = failed_step
        self.error = error
        for stage in self.spec.stages:
            for spec in stage:
                why = (f"not run: step {failed_step} {outcome}" if failed_step
                       else f"not run: {error}")
                self._stop(spec.id, self.steps[spec.id], why, advance)
        if self.spec.on_failure:
            advance.notes.append(f"{error}; running on_failure steps")
            self._send_stage(self.spec.on_failure[0], now, advance)
        else:
            self._end(outcome, now, advance)

    def _end(self, status: EndStatus, now: datetime, advance: Advance) -> None:
        self.phase = "ended"
        for state in self.steps.values():
            if state.status == "pending":
                state.status = "skipped"
        if status == "succeeded":
            exit_code: int | None = 0
            self.error = None
        elif status == "timed_out":
            exit_code = EXIT_TIMED_OUT
        elif status == "failed":
            code = self.steps[self.failed_step].outputs.get("exit_code") \
                if self.failed_step else None
            exit_code = code if isinstance(code, int) and not isinstance(code, bool) \
                and code != 0 else 1
        else:
            exit_code = None
        advance.ended = Ending(status, self.error, exit_code,
                               self.failed_step if status != "succeeded" else None)

    @staticmethod
    def _remember(state: StepState, result: AttemptResult, now: datetime) -> None:
        entry = {"attempt": state.attempt, "status": result.status,
                 "started_at": utc_iso(state.started_at) if state.started_at else None,
                 "finished_at": utc_iso(now), "host": state.host, "message": result.message}
        state.history = [*state.history, entry][-MAX_HISTORY:]


def _later(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def _said(message: str) -> str:
    return f" ({message})" if message else ""
