"""Driving workstream runs: every change of a run as a compare-and-set, and what follows it.

Each step task, when it ends, moves its run on with :meth:`RunDriver.finish_step` and sends what
comes next; no task ever waits for another, and a message redelivered after its step moved on
finds nothing to do. Everything after a commit (sending, cancelling sub-workstreams, publishing
the run's ``completed``/``failed`` event, freeing its slot, telling a parent run) is repeatable:
when the process doing it dies half-way, the reaper (:mod:`pitstop.workstreams.repair`) finishes
the job. :class:`pitstop.workstreams.orchestrator.Orchestrator` adds launching.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from pitstop.bus.eventbus import EventBus
from pitstop.bus.events import Event, make_event
from pitstop.bus.patterns import normalize_type
from pitstop.bus.streamcodec import EVENT_FIELD, encode_event
from pitstop.kernel.constants import (
    DEFAULT_QUEUE,
    EVENT_WORKSTREAM_COMPLETED,
    EVENT_WORKSTREAM_FAILED,
    EXPIRES_SLACK_SECONDS,
    RUN_KIND_WORKSTREAM,
    TASK_WORKSTREAM_STEP,
    WS_ACTIVE_RUNS,
    WS_STEP_BEAT_PREFIX,
    WS_STEP_STOP_PREFIX,
)
from pitstop.kernel.errors import NothingToCancel, PitstopError, RunNotFound, ValidationError
from pitstop.kernel.ids import utc_iso
from pitstop.kernel.proc import pid_alive
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.settings import Settings
from pitstop.runs.output import RunOutput
from pitstop.runs.store import Run, RunStore
from pitstop.workstreams.plan import Advance, AttemptResult, AttemptStatus, Plan, StepState
from pitstop.workstreams.records import Effects, RunRecords, Snapshot
from pitstop.workstreams.seals import unseal_params
from pitstop.workstreams.slots import Slots
from pitstop.workstreams.spec import StepSpec, WorkstreamSpec
from pitstop.workstreams.steps import step_kinds

__all__ = ["Claimed", "RunDriver", "SendTask", "beat_key", "for_log", "no_event", "stop_key"]

log = logging.getLogger(__name__)

SendTask = Callable[..., Any]

SPECS_KEPT = 1000
"""Parsed run definitions a process keeps (a cache: a missing one is parsed from the record)."""


@dataclass(frozen=True)
class Claimed:
    """A step attempt this worker now executes."""

    run: Run
    spec: WorkstreamSpec
    step: StepSpec
    plan: Plan
    snapshot: Snapshot
    """The record as the claim left it (the step's report compares against it)."""



def _utc_now() -> datetime:
    return datetime.now(UTC)


class RunDriver:
    """Moves workstream runs on (one per process; thread-safe as redis-py is)."""

    def __init__(self, *, client: redis.Redis, runs: RunStore, bus: EventBus, send: SendTask,
                 settings: Settings, redactor: Redactor | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.client = client
        self.runs = runs
        self.bus = bus
        self.send = send
        self.settings = settings
        self.redactor = redactor or Redactor()
        self.output = RunOutput(client)
        self.slots = Slots(client)
        self._clock = clock or _utc_now
        self.records = RunRecords(client, ttl_seconds=runs.ttl_seconds, clock=self.now)
        self._specs: OrderedDict[str, WorkstreamSpec] = OrderedDict()

    def now(self) -> datetime:
        now = self._clock()
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    @property
    def beat_ttl(self) -> int:
        """Seconds a step's heartbeat key lives: a silent worker is given up on after that."""
        return max(2, math.ceil(self.settings.scripts.lost_after_seconds))

    def unseal(self, run: Run, step: StepSpec) -> dict[str, Any]:
        """The step's params with sealed values opened (for the worker executing it)."""
        return unseal_params(step, root=str(run.orchestration.get("seal_root")),
                             workstream_id=run.workstream_id or "",
                             sealer=self.settings.sealer())

    # --- steps -----------------------------------------------------------------------------------

    def claim_step(self, run_id: str, step_id: str, attempt: int, *, host: str,
                   pid: int) -> Claimed | None:
        """Move the attempt to ``running`` for this worker; None when the message must not run
        it. A redelivered attempt whose worker died ends ``failed`` (retried if it may be)."""
        verdict: list[str] = []
        lost: list[Advance] = []

        def change(run: Run, now: datetime) -> tuple[Run, Effects] | None:
            verdict.clear()
            lost.clear()
            if run.kind != RUN_KIND_WORKSTREAM:
                return None
            plan = self.plan_of(run)
            outcome = plan.claim(step_id, attempt, host=host, pid=pid, now=now)
            verdict.append(outcome)
            if outcome == "claimed":
                retries = plan.spec.step(step_id).retries
                return self._commit(run, plan, now, None, Effects(
                    lines=[f"step {step_id}: started on {host} (attempt {attempt} of "
                           f"{retries + 1})"],
                    sets=[(beat_key(run_id, step_id, attempt), f"{host}:{pid}",
                           self.beat_ttl)]))
            if outcome == "held":
                why = self.holder_lost(run, step_id, plan.steps[step_id], now, host=host)
                if why is not None:
                    advance = plan.finish(step_id, attempt, why, now)
                    lost.append(advance)
                    return self._commit(run, plan, now, advance)
            return None

        snapshot, effects = self.records.transact(run_id, change)
        if lost:
            self._apply(snapshot.run, lost[0], effects)
            return None
        if not verdict or verdict[0] not in ("claimed", "again"):
            return None
        spec = self.spec_of(snapshot.run)
        return Claimed(snapshot.run, spec, spec.step(step_id), self.plan_of(snapshot.run),
                       snapshot)

    def holder_lost(self, run: Run, step_id: str, state: StepState, now: datetime, *,
                    host: str | None = None) -> AttemptResult | None:
        """How a running attempt ended if its worker is gone (else None): its process is dead
        on this host, or it stopped heart-beating."""
        where = f"{state.host or '?'} (pid {state.pid})"
        dead = None
        if host is not None and state.host == host and state.pid is not None \
                and not pid_alive(state.pid):
            dead = f"the worker process running it on {where} died"
        elif not self.client.exists(beat_key(run.run_id, step_id, state.attempt)):
            started = state.started_at or now
            if now - started > timedelta(seconds=min(5.0, self.beat_ttl)):
                dead = (f"the worker running it on {where} stopped heart-beating (silent for "
                        f"more than {self.beat_ttl}s); it was probably killed")
        if dead is None:
            return None
        spec = self.spec_of(run).step(step_id)
        limit = spec.timeout or self.settings.scripts.default_timeout
        if state.started_at is not None and now - state.started_at > timedelta(seconds=limit):
            return AttemptResult("timed_out", message=f"{dead}, after its timeout of {limit:g}s")
        return AttemptResult("failed", message=dead)

    def wait_for_child(self, run_id: str, step_id: str, attempt: int, child_run_id: str, *,
                       known: Snapshot | None = None) -> None:
        """The attempt goes on as sub-workstream run ``child_run_id``."""

        def change(run: Run, now: datetime) -> tuple[Run, Effects] | None:
            plan = self.plan_of(run)
            if not plan.wait_for(step_id, attempt, child_run_id):
                return None
            return self._commit(run, plan, now, None, Effects(lines=[
                f"step {step_id}: waiting for sub-workstream run {child_run_id}"]))

        self.records.transact(run_id, change, known=known)

    def finish_step(self, run_id: str, step_id: str, attempt: int, result: AttemptResult, *,
                    known: Snapshot | None = None) -> Run:
        """Record how the attempt ended and move the run on (a compare-and-set: a second report
        of the same attempt changes nothing). ``known``: the record as the caller last saw it
        (one round trip if nobody changed it since)."""
        advances: list[Advance] = []

        def change(run: Run, now: datetime) -> tuple[Run, Effects] | None:
            advances.clear()
            plan = self.plan_of(run)
            advance = plan.finish(step_id, attempt, result, now)
            if not advance.changed:
                return None
            advances.append(advance)
            return self._commit(run, plan, now, advance)

        snapshot, effects = self.records.transact(run_id, change, known=known)
        if advances:
            self._apply(snapshot.run, advances[0], effects)
        return snapshot.run

    def cancel_run(self, run_id: str, *, reason: str = "cancelled") -> Run:
        """End a workstream run ``cancelled``: steps not started never will, running ones are
        stopped (scripts killed), sub-workstreams cancelled. Raises :class:`NothingToCancel`
        when it has ended, :class:`RunNotFound`."""
        advances: list[Advance] = []

        def change(run: Run, now: datetime) -> tuple[Run, Effects] | None:
            advances.clear()
            if run.kind != RUN_KIND_WORKSTREAM:
                raise ValidationError(f"run {run_id} is a {run.kind} run, not a workstream run")
            plan = self.plan_of(run)
            advance = plan.cancel(reason, now)
            if advance is None:
                return None
            advances.append(advance)
            return self._commit(run, plan, now, advance)

        self.output.request_cancel(run_id)  # running steps see it at once
        snapshot, effects = self.records.transact(run_id, change)
        if not advances:
            raise NothingToCancel(f"run {run_id} already ended: {snapshot.run.status}")
        self._apply(snapshot.run, advances[0], effects)
        return snapshot.run

    def time_out_run(self, run_id: str) -> Run | None:
        """End the run's main stages if it outlived its timeout (the reaper calls this)."""
        advances: list[Advance] = []

        def change(run: Run, now: datetime) -> tuple[Run, Effects] | None:
            advances.clear()
            deadline = run.orchestration.get("deadline")
            if not deadline or now < datetime.fromisoformat(deadline):
                return None
            plan = self.plan_of(run)
            advance = plan.time_out(now)
            if advance is None:
                return None
            advances.append(advance)
            return self._commit(run, plan, now, advance)

        snapshot, effects = self.records.transact(run_id, change)
        if not advances:
            return None
        self._apply(snapshot.run, advances[0], effects)
        return snapshot.run

    def start_queued(self, run_id: str) -> Run | None:
        """Start a run that waited for its concurrency slot (whoever freed the slot calls this)."""
        advances: list[Advance] = []

        def change(run: Run, now: datetime) -> tuple[Run, Effects] | None:
            advances.clear()
            if run.status != "queued" or run.kind != RUN_KIND_WORKSTREAM:
                return None
            plan = self.plan_of(run)
            advance = plan.start(now)
            advances.append(advance)
            return self._commit(run, plan, now, advance, Effects(lines=[
                f"workstream {run.workstream_id}: its concurrency slot is free; started"]))

        try:
            snapshot, effects = self.records.transact(run_id, change)
        except RunNotFound:
            return None
        if not advances:
            return None
        self._apply(snapshot.run, advances[0], effects)
        return snapshot.run

    # --- the record --------------------------------------------------------------------------------

    def spec_of(self, run: Run) -> WorkstreamSpec:
        spec = self._specs.get(run.run_id)
        if spec is None:
            spec = WorkstreamSpec.from_dict(run.orchestration["spec"])
            self.remember_spec(run.run_id, spec)
        return spec

    def remember_spec(self, run_id: str, spec: WorkstreamSpec) -> None:
        """Keep a run's parsed definition for its next steps here, the newest
        :data:`SPECS_KEPT` only: a router launches runs for ever and must not keep them all."""
        self._specs[run_id] = spec
        self._specs.move_to_end(run_id)
        while len(self._specs) > SPECS_KEPT:
            self._specs.popitem(last=False)

    def plan_of(self, run: Run) -> Plan:
        orchestration = run.orchestration
        return Plan(self.spec_of(run), run.steps, phase=orchestration.get("phase", "pending"),
                    outcome=orchestration.get("outcome"),
                    failed_step=orchestration.get("failed_step"), error=run.error)

    def template_context(self, run: Run, plan: Plan) -> dict[str, Any]:
        """What step templates see (``event``, ``params``, ``steps``, ``run``)."""
        orchestration = run.orchestration
        return {
            "event": run.event if run.event else no_event(run.trace_id or run.run_id),
            "params": orchestration.get("params", run.params),
            "steps": plan.template_steps(),
            "run": {"id": run.run_id, "workstream": run.workstream_id, "trace_id": run.trace_id,
                    "status": run.status, "failed_step": plan.failed_step, "error": plan.error,
                    "trigger_id": orchestration.get("trigger_id"),
                    "parent_run_id": run.parent_run_id},
        }

    def _with(self, run: Run, plan: Plan, now: datetime, advance: Advance | None = None) -> Run:
        """``run`` as ``plan`` leaves it (started, ended, with its completion event built)."""
        orchestration = {**run.orchestration, "phase": plan.phase, "outcome": plan.outcome,
                         "failed_step": plan.failed_step}
        update: dict[str, Any] = {"steps": plan.dump_steps(), "orchestration": orchestration,
                                  "updated_at": now, "error": plan.error}
        if run.status == "queued" and plan.phase in ("main", "on_failure"):
            update["status"] = "running"
            update["started_at"] = now
            timeout = plan.spec.timeout
            orchestration["deadline"] = (utc_iso(now + timedelta(seconds=timeout))
                                         if timeout else None)
        ending = advance.ended if advance is not None else None
        if ending is not None:
            started = run.started_at or update.get("started_at") or now
            update.update(status=ending.status, finished_at=now, exit_code=ending.exit_code,
                          error=ending.error)
            orchestration["completion_event"] = self._completion_event(
                run, ending.status, ending.exit_code, ending.error, ending.failed_step,
                (now - started).total_seconds())
        return run.model_copy(update=update)

    def _commit(self, run: Run, plan: Plan, now: datetime, advance: Advance | None,
                effects: Effects | None = None) -> tuple[Run, Effects]:
        """The new run and what its compare-and-set writes with it: progress lines, stop
        requests for running steps, the end of its output when it ended."""
        new = self._with(run, plan, now, advance)
        effects = effects or Effects()
        effects.lines = [self.redactor.redact_text(line) for line in effects.lines]
        if advance is not None:
            effects.lines.extend(self.redactor.redact_text(note) for note in advance.notes)
            effects.sets.extend((stop_key(run.run_id, step_id), "1", self.runs.ttl_seconds)
                                for step_id in advance.stop)
            if advance.ended is not None:
                effects.lines.append(self.redactor.redact_text(_ending_line(new)))
                effects.end = (new.status, new.exit_code)
                self._finalize_with_commit(new, advance, effects)
        return new, effects

    def _finalize_with_commit(self, run: Run, advance: Advance, effects: Effects) -> None:
        """A run ending with nothing to hand on (no slot, no parent, no sub-workstream to stop)
        is finalized by its commit itself: its event and its leaving the reaper's set are
        written by the same script, so ending costs no further round trips (and the event
        can no longer be missed by a process dying right after the commit)."""
        orchestration = run.orchestration
        if orchestration.get("slot") or orchestration.get("parent") or advance.stop_children:
            return
        event = orchestration.get("completion_event")
        if event:
            try:
                built = Event.from_dict(event)
                channel = self.bus.channel_prefix + normalize_type(built.type)
            except PitstopError:
                return  # finalize() publishes it, or says why it cannot
            effects.publish = (self.bus.stream, self.bus.maxlen, EVENT_FIELD,
                               encode_event(built), channel)
        effects.forget = (WS_ACTIVE_RUNS, run.run_id)

    def _completion_event(self, run: Run, status: str, exit_code: int | None, error: str | None,
                          failed_step: str | None, duration: float) -> dict[str, Any] | None:
        """The ``workstream.<id>.completed``/``.failed`` event, built when the run ends (so a
        repeated finalization publishes the same event, with the same id)."""
        template = EVENT_WORKSTREAM_COMPLETED if status == "succeeded" else EVENT_WORKSTREAM_FAILED
        parent = Event.from_dict(run.event) if run.event and run.event.get("id") else None
        data: dict[str, Any] = {
            "run_id": run.run_id, "workstream_id": run.workstream_id, "status": status,
            "exit_code": exit_code, "error": error, "failed_step": failed_step,
            "duration": round(duration, 3), "trigger_id": run.orchestration.get("trigger_id"),
            "params": run.params}
        for attempt in (data, {k: v for k, v in data.items() if k != "params"}):
            try:
                event = make_event(template.format(id=run.workstream_id),
                                   self.redactor.redact(attempt), source=self.bus.source,
                                   parent=parent, trace_id=run.trace_id,
                                   now=self.bus.clock(),  # stamped like every other event
                                   max_data_bytes=self.bus.max_data_bytes,
                                   max_hops=self.bus.max_hops)
            except PitstopError as exc:
                log.warning("run %s: no %s event: %s", run.run_id, template, exc)
                continue
            return event.to_dict()
        return None

    # --- after a commit ----------------------------------------------------------------------------

    def _apply(self, run: Run, advance: Advance, effects: Effects | None = None) -> None:
        """After a commit: send the attempts it queued, cancel sub-workstreams it stopped, and
        finalize the run if it ended (lines, stop requests and the output's end are written;
        with ``effects.forget`` its finalization too)."""
        self._send_all(run, advance)
        for child in advance.stop_children:
            with contextlib.suppress(NothingToCancel, RunNotFound):
                self.cancel_run(child, reason=f"its parent run {run.run_id} stopped")
        if advance.ended is not None:
            if effects is not None and effects.forget is not None:
                self.runs.note("finish", for_log(run))
            else:
                self.finalize(run)

    def _send_all(self, run: Run, advance: Advance) -> None:
        spec = self.spec_of(run)
        for dispatch in advance.dispatch:
            self.send_attempt(run.run_id, spec.step(dispatch.step_id), dispatch.attempt,
                              queue=dispatch.queue, countdown=dispatch.countdown)

    def send_attempt(self, run_id: str, step: StepSpec, attempt: int, *, queue: str,
                     countdown: float = 0.0) -> None:
        """One message for one attempt, with its time limits (the step's timeout, plus the
        grace for the kinds that enforce it themselves) and an expiry past its queue timeout."""
        scripts = self.settings.scripts
        grace = self.settings.celery.time_limit_grace
        timeout = min(step.timeout or scripts.default_timeout, scripts.max_timeout)
        kind = step_kinds().get(step.kind)
        soft = timeout + (grace / 2 if getattr(kind, "enforces_timeout", False) else 0)
        waiting = step.queue_timeout or scripts.queue_ttl_seconds
        kwargs = {"run_id": run_id, "step_id": step.id, "attempt": attempt}
        options: dict[str, Any] = {
            "kwargs": kwargs,
            # Three plain ids: their repr for logs and Flower, without Celery's saferepr walk.
            "argsrepr": "()", "kwargsrepr": repr(kwargs),
            "queue": queue or DEFAULT_QUEUE, "task_id": f"{run_id}:{step.id}:{attempt}",
            "soft_time_limit": soft, "time_limit": timeout + grace,
            "expires": countdown + waiting + EXPIRES_SLACK_SECONDS,
            # The step's state lives in the run record, not in Celery's result backend: without
            # this, send_task (by name, so it cannot know the task ignores its result) would
            # SUBSCRIBE to and later UNSUBSCRIBE from the result channel, two round trips a step.
            "ignore_result": True,
        }
        if countdown > 0:
            options["countdown"] = countdown
        self.send(TASK_WORKSTREAM_STEP, **options)

    def finalize(self, run: Run) -> None:
        """What follows a run's end, each part repeatable: its ``completed``/``failed`` event
        (built when it ended: a repeat has the same id), its slot handed on, its parent step
        told; then it leaves the set of runs the reaper watches."""
        if not run.terminal:
            return
        run_id = run.run_id
        orchestration = run.orchestration
        event = orchestration.get("completion_event")
        if event:
            try:
                self.bus.publish_event(Event.from_dict(event))
            except PitstopError as exc:
                log.warning("run %s: could not publish %s: %s", run_id, event.get("type"), exc)
        slot = orchestration.get("slot")
        if slot:
            following = self.slots.release(slot, run_id, ttl=self.runs.ttl_seconds)
            if following:
                self.start_queued(following)
        parent = orchestration.get("parent")
        if parent:
            status: AttemptStatus = "failed"
            if run.status in ("succeeded", "failed", "timed_out", "cancelled"):
                status = run.status
            try:
                self.finish_step(parent["run_id"], parent["step"], int(parent["attempt"]),
                                 AttemptResult(status, {"run_id": run_id, "status": run.status,
                                                        "exit_code": run.exit_code},
                                               f"sub-workstream run {run_id} {run.status}"))
            except RunNotFound:
                log.warning("run %s: its parent run %s is gone", run_id, parent["run_id"])
        if self.client.srem(WS_ACTIVE_RUNS, run_id):
            self.runs.note("finish", for_log(run))


def _ending_line(run: Run) -> str:
    took = f" in {run.duration:.2f}s" if run.duration is not None else ""
    why = f": {run.error}" if run.error and run.status != "succeeded" else ""
    return f"workstream {run.workstream_id}: {run.status}{took}{why}"


def for_log(run: Run) -> Run:
    """The run as runs.jsonl keeps it: without the definition it carries (the config has it)."""
    return run.model_copy(update={"orchestration": {
        key: value for key, value in run.orchestration.items() if key != "spec"}})


def beat_key(run_id: str, step_id: str, attempt: int) -> str:
    return f"{WS_STEP_BEAT_PREFIX}{run_id}:{step_id}:{attempt}"


def stop_key(run_id: str, step_id: str) -> str:
    return f"{WS_STEP_STOP_PREFIX}{run_id}:{step_id}"


def no_event(trace_id: str) -> dict[str, Any]:
    """What templates see as ``event`` in a run launched by hand."""
    return {"id": None, "type": None, "source": None, "time": None, "data": {},
            "trace_id": trace_id, "parent_id": None, "hops": 0}
