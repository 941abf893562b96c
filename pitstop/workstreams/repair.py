"""The workstream reaper: no run is ever left stuck.

Beat runs :func:`repair_runs` every few seconds on some worker. It looks only at the runs not yet
finalized (a Redis set the launch adds to and the finalization removes from) and mends what a
dead process left half-done:

* a running attempt whose worker stopped heart-beating (SIGKILL, a lost machine) ends
  ``failed`` (``timed_out`` past its timeout) and is retried if the step allows it;
* an attempt queued longer than its queue timeout ends ``failed`` (nobody consumes the queue);
  one queued for a while is sent once more (a launcher that died between its commit and its
  send: the claim's compare-and-set makes the copy harmless);
* a run past its own timeout ends its main stages ``timed_out``;
* a run whose cancellation was requested but not applied is cancelled;
* a sub-workstream that ended without telling its parent step does;
* an ended run not finalized (event, output end, slot, parent) is finalized; a queued run whose
  slot is free is started.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from pitstop.bus.streamcodec import text_of
from pitstop.kernel.constants import RUN_CANCEL_PREFIX, RUN_KIND_WORKSTREAM, WS_ACTIVE_RUNS
from pitstop.kernel.errors import NothingToCancel, PitstopError, RunNotFound
from pitstop.runs.store import Run
from pitstop.workstreams.orchestrator import Orchestrator
from pitstop.workstreams.plan import AttemptResult, AttemptStatus, StepState
from pitstop.workstreams.records import Effects

__all__ = ["RepairReport", "repair_run", "repair_runs"]

log = logging.getLogger(__name__)

FINALIZE_GRACE_SECONDS = 5.0
"""How long after a run ended the reaper leaves its finalization to whoever ended it."""


@dataclass
class RepairReport:
    """What one pass mended (for the task's result and the tests)."""

    actions: list[str] = field(default_factory=list)

    def add(self, run_id: str, what: str) -> None:
        self.actions.append(f"{run_id}: {what}")
        log.info("workstream repair: run %s: %s", run_id, what)


def repair_runs(orchestrator: Orchestrator, *, resend_after: float | None = None) -> RepairReport:
    """One pass over the runs not yet finalized; each is mended on its own (one failing does
    not stop the others)."""
    report = RepairReport()
    client = orchestrator.client
    ids = sorted(text_of(i) for i in cast("set[Any]", client.smembers(WS_ACTIVE_RUNS)))
    for run_id in ids:
        try:
            run = orchestrator.runs.get_run(run_id)
        except RunNotFound:
            client.srem(WS_ACTIVE_RUNS, run_id)
            continue
        try:
            _repair(orchestrator, run, report, resend_after)
        except PitstopError as exc:
            log.warning("workstream repair: run %s: %s", run_id, exc)
    return report


def repair_run(orchestrator: Orchestrator, run_id: str, *,
               resend_after: float | None = None) -> RepairReport:
    """The same mending for one run (``pitstop launch --wait`` calls it while it waits, so a
    run is not left stuck where no Beat runs)."""
    report = RepairReport()
    try:
        run = orchestrator.runs.get_run(run_id)
    except RunNotFound:
        return report
    _repair(orchestrator, run, report, resend_after)
    return report


def _repair(orchestrator: Orchestrator, run: Run, report: RepairReport,
            resend_after: float | None) -> None:
    run_id = run.run_id
    if run.kind != RUN_KIND_WORKSTREAM:
        orchestrator.client.srem(WS_ACTIVE_RUNS, run_id)
        return
    now = orchestrator.now()
    if run.terminal:
        ended = run.finished_at or run.updated_at
        if (now - ended).total_seconds() > FINALIZE_GRACE_SECONDS:
            orchestrator.finalize(run)
            report.add(run_id, "finalized")
        return
    if orchestrator.client.exists(f"{RUN_CANCEL_PREFIX}{run_id}"):
        try:
            orchestrator.cancel_run(run_id, reason="cancel requested")
            report.add(run_id, "cancelled (as requested)")
        except NothingToCancel:
            pass
        return
    if run.status == "queued":
        _start_if_free(orchestrator, run, report)
        return
    deadline = run.orchestration.get("deadline")
    if (deadline and now >= datetime.fromisoformat(deadline)
            and orchestrator.time_out_run(run_id) is not None):
        report.add(run_id, "timed out")
        return
    plan = orchestrator.plan_of(run)
    for step_id, state in plan.steps.items():
        if state.status == "queued":
            _queued(orchestrator, run, step_id, state, now, report, resend_after)
        elif state.status == "running":
            lost = orchestrator.holder_lost(run, step_id, state, now)
            if lost is not None:
                orchestrator.finish_step(run_id, step_id, state.attempt, lost)
                report.add(run_id, f"step {step_id} attempt {state.attempt}: {lost.message}")
        elif state.status == "waiting" and state.child_run_id:
            _waiting(orchestrator, run, step_id, state, now, report)


def _start_if_free(orchestrator: Orchestrator, run: Run, report: RepairReport) -> None:
    slot = run.orchestration.get("slot")
    if not slot:
        orchestrator.start_queued(run.run_id)
        report.add(run.run_id, "started (no slot)")
        return
    holder = orchestrator.slots.holder(slot)
    if holder == run.run_id:
        if orchestrator.start_queued(run.run_id) is not None:
            report.add(run.run_id, "started (it held its slot)")
        return
    following = orchestrator.slots.release(slot, holder or "", ttl=orchestrator.runs.ttl_seconds)
    if following:
        orchestrator.start_queued(following)
        report.add(following, f"started (slot {slot} was free)")


def _queued(orchestrator: Orchestrator, run: Run, step_id: str, state: StepState,
            now: datetime, report: RepairReport, resend_after: float | None) -> None:
    spec = orchestrator.spec_of(run).step(step_id)
    since = state.retry_at or state.queued_at or now
    waited = (now - since).total_seconds()
    patience = spec.queue_timeout or orchestrator.settings.scripts.queue_ttl_seconds
    if waited > patience:
        orchestrator.finish_step(run.run_id, step_id, state.attempt, AttemptResult(
            "failed", message=f"no worker took it from queue {state.queue!r} within "
                              f"{patience:g}s (is a worker consuming it?)", retryable=False))
        report.add(run.run_id, f"step {step_id}: expired in queue {state.queue!r}")
        return
    after = orchestrator.beat_ttl if resend_after is None else resend_after
    if waited > after and state.resent == 0 and _mark_resent(orchestrator, run, step_id, state):
        orchestrator.send_attempt(run.run_id, spec, state.attempt, queue=state.queue or "")
        report.add(run.run_id, f"step {step_id}: attempt {state.attempt} sent again")


def _mark_resent(orchestrator: Orchestrator, run: Run, step_id: str, state: StepState) -> bool:
    def change(current: Run, now: datetime) -> tuple[Run, Effects] | None:
        step = current.steps.get(step_id) or {}
        if step.get("status") != "queued" or step.get("attempt") != state.attempt \
                or step.get("resent"):
            return None
        return current.model_copy(update={
            "steps": {**current.steps, step_id: {**step, "resent": 1}},
            "updated_at": now}), Effects()

    _, written = orchestrator.records.transact(run.run_id, change)
    return written is not None


def _waiting(orchestrator: Orchestrator, run: Run, step_id: str, state: StepState,
             now: datetime, report: RepairReport) -> None:
    child_id = state.child_run_id or ""
    try:
        child = orchestrator.runs.get_run(child_id)
    except RunNotFound:
        orchestrator.finish_step(run.run_id, step_id, state.attempt, AttemptResult(
            "failed", message=f"its sub-workstream run {child_id} is gone"))
        report.add(run.run_id, f"step {step_id}: sub-workstream run {child_id} gone")
        return
    ended = child.finished_at or child.updated_at
    if not child.terminal or now - ended < timedelta(seconds=FINALIZE_GRACE_SECONDS):
        return
    status: AttemptStatus = "failed"
    if child.status in ("succeeded", "failed", "timed_out", "cancelled"):
        status = child.status
    orchestrator.finish_step(run.run_id, step_id, state.attempt, AttemptResult(
        status, {"run_id": child_id, "status": child.status, "exit_code": child.exit_code},
        f"sub-workstream run {child_id} {child.status}"))
    report.add(run.run_id, f"step {step_id}: sub-workstream run {child_id} {child.status}")
