"""The orchestrator: launches workstream runs and moves them on as their steps report.

No Celery here: step attempts are sent through an injected ``send`` (``celery_app.send_task``).
The driver is event-driven: a launch is one Redis script (the run record, its concurrency slot,
its first steps marked queued) and one message per first step; each step task, when it ends,
moves the run on with a compare-and-set of the run record (:meth:`Orchestrator.finish_step`) and
sends what comes next. No task ever waits for another. A message redelivered after its step
moved on finds nothing to do.

Everything after a commit (sending, stopping steps, publishing the run's ``completed``/``failed``
event, freeing its slot, telling a parent run) is repeatable: when the process doing it dies
half-way, the reaper (:mod:`pitstop.workstreams.repair`) finishes the job.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from pitstop.bus.eventbus import EventBus
from pitstop.bus.events import Event, make_event
from pitstop.kernel.constants import (
    DEFAULT_QUEUE,
    EVENT_WORKSTREAM_COMPLETED,
    EVENT_WORKSTREAM_FAILED,
    EXPIRES_SLACK_SECONDS,
    RUN_KIND_WORKSTREAM,
    TASK_WORKSTREAM_STEP,
    WORKSTREAMS_FILE,
    WS_ACTIVE_RUNS,
    WS_STEP_BEAT_PREFIX,
    WS_STEP_STOP_PREFIX,
)
from pitstop.kernel.errors import (
    ConfigError,
    NothingToCancel,
    PitstopError,
    RunNotFound,
    ValidationError,
    WorkstreamUnavailable,
)
from pitstop.kernel.ids import new_id, utc_iso
from pitstop.kernel.proc import pid_alive
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.settings import Settings
from pitstop.runs.output import RunOutput
from pitstop.runs.store import Run, RunStore
from pitstop.workstreams.catalog import WorkstreamCatalog
from pitstop.workstreams.plan import Advance, AttemptResult, AttemptStatus, Plan, StepState
from pitstop.workstreams.records import Effects, RunRecords, Snapshot
from pitstop.workstreams.seals import seal_spec, unseal_params
from pitstop.workstreams.slots import Slots
from pitstop.workstreams.spec import StepSpec, WorkstreamSpec
from pitstop.workstreams.steps import step_kinds
from pitstop.workstreams.templates import render

__all__ = ["Claimed", "LaunchResult", "Orchestrator", "SendTask", "orchestrator_from"]

log = logging.getLogger(__name__)

SendTask = Callable[..., Any]


@dataclass
class LaunchResult:
    """What a launch did."""

    run_id: str | None
    status: str
    """``launched``, ``queued`` (waits for its concurrency slot), ``skipped`` (policy ``skip``
    and the slot is taken), ``cancelled_previous`` (launched; the slot's holder cancelled), or
    ``duplicate`` (this launch key was used before: ``run_id`` is that launch's run)."""
    reason: str


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


class Orchestrator:
    """Launches and drives workstream runs (one per process; thread-safe as redis-py is)."""

    def __init__(self, catalog: WorkstreamCatalog | Callable[[], WorkstreamCatalog], *,
                 client: redis.Redis, runs: RunStore, bus: EventBus, send: SendTask,
                 settings: Settings, redactor: Redactor | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._catalog = catalog if isinstance(catalog, WorkstreamCatalog) else None
        self._load_catalog = None if isinstance(catalog, WorkstreamCatalog) else catalog
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
        self._specs: dict[str, WorkstreamSpec] = {}

    # --- the catalog -----------------------------------------------------------------------------

    @property
    def catalog(self) -> WorkstreamCatalog:
        """The catalog launches use (loaded on first use; assign a new one to reload)."""
        if self._catalog is None:
            if self._load_catalog is None:  # pragma: no cover - the constructor sets one
                raise ConfigError("no workstream catalog")
            self._catalog = self._load_catalog()
        return self._catalog

    @catalog.setter
    def catalog(self, catalog: WorkstreamCatalog) -> None:
        self._catalog = catalog

    def now(self) -> datetime:
        now = self._clock()
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    @property
    def beat_ttl(self) -> int:
        """Seconds a step's heartbeat key lives: a silent worker is given up on after that."""
        return max(2, math.ceil(self.settings.scripts.lost_after_seconds))

    # --- launching -------------------------------------------------------------------------------

    def launch_workstream(self, workstream_id: str, *, event: Event | None = None,
                          params: Mapping[str, Any] | None = None, trigger_id: str | None = None,
                          launch_key: str | None = None) -> LaunchResult:
        """Start a run of ``workstream_id`` (or queue or skip it, as its concurrency policy says).

        ``launch_key``: launching again with the same key returns the first launch's run (the
        router passes ``<event id>:<rule id>``). Raises :class:`ConfigError` (unknown
        workstream), :class:`WorkstreamUnavailable` (it needs a step kind not installed yet),
        :class:`ValidationError` (params, a concurrency key that does not render),
        :class:`RedisUnavailable`."""
        catalog = self.catalog
        workstream = catalog.get(workstream_id)
        if not workstream.available:
            raise WorkstreamUnavailable(
                f"workstream {workstream_id} cannot run yet: {workstream.unavailable_reason}",
                file=workstream.source)
        spec = catalog.launch_spec(workstream_id)
        return self._launch(spec, event=event, params=params, trigger_id=trigger_id,
                            launch_key=launch_key, config_version=catalog.version)

    def launch_child(self, parent_run_id: str, step_id: str, attempt: int, workstream_id: str,
                     params: Mapping[str, Any]) -> str:
        """Launch sub-workstream ``workstream_id`` as attempt ``attempt`` of a parent's step,
        from the definition the parent carries; returns its run id (the same run for a
        redelivered step). Its own concurrency policy does not apply: it is part of its parent."""
        parent = self.runs.get_run(parent_run_id)
        parent_spec = self.spec_of(parent)
        sub = parent_spec.subs.get(workstream_id)
        if sub is None:
            raise ValidationError(f"workstream {workstream_id} is not part of the definition run "
                                  f"{parent_run_id} was launched with")
        event = Event.from_dict(parent.event) if parent.event and parent.event.get("id") else None
        orchestration = parent.orchestration
        result = self._launch(
            replace(sub, subs=parent_spec.subs), event=event, params=params,
            trigger_id=orchestration.get("trigger_id"),
            launch_key=f"{parent_run_id}:{step_id}:{attempt}",
            config_version=orchestration.get("config_version"),
            parent={"run_id": parent_run_id, "step": step_id, "attempt": attempt},
            trace_id=parent.trace_id, seal_root=orchestration.get("seal_root"))
        if result.run_id is None:  # pragma: no cover - sub-workstreams are never skipped
            raise PitstopError(f"sub-workstream {workstream_id} was not launched: {result.reason}")
        return result.run_id

    def _launch(self, spec: WorkstreamSpec, *, event: Event | None,
                params: Mapping[str, Any] | None, trigger_id: str | None,
                launch_key: str | None, config_version: str | None,
                parent: dict[str, Any] | None = None, trace_id: str | None = None,
                seal_root: str | None = None) -> LaunchResult:
        resolved = spec.resolve_params(params)
        try:
            resolved = json.loads(json.dumps(resolved))
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValidationError(f"params of {spec.id} must be plain JSON values: {exc}") from None
        now = self.now()
        run_id = new_id(int(now.timestamp() * 1000))
        event_dict = event.to_dict() if event is not None else None
        trace = trace_id or (event.trace_id if event is not None else run_id)
        slot = key = None
        if parent is None and spec.policy != "allow":
            key = self._concurrency_key(spec, event_dict, resolved, trace)
            slot = f"{spec.id}:{hashlib.sha256(key.encode()).hexdigest()[:16]}"
        if seal_root is None:
            seal_root = run_id
            spec = seal_spec(spec.with_queues(self._default_queue), root=seal_root,
                             kinds=step_kinds(), sealer=self.settings.sealer(),
                             redactor=self.redactor)
        orchestration: dict[str, Any] = {
            "spec": spec.to_dict(), "phase": "pending", "outcome": None, "failed_step": None,
            "deadline": None, "params": resolved, "policy": spec.policy if slot else "allow",
            "slot": slot, "concurrency_key": key, "launch_key": launch_key,
            "trigger_id": trigger_id, "config_version": config_version, "parent": parent,
            "seal_root": seal_root, "completion_event": None}
        queued = Run(run_id=run_id, kind=RUN_KIND_WORKSTREAM, status="queued", created_at=now,
                     updated_at=now, workstream_id=spec.id, trace_id=trace,
                     params=self.redactor.redact(resolved), event=event_dict,
                     parent_run_id=parent["run_id"] if parent else None,
                     steps=Plan(spec).dump_steps(), orchestration=orchestration)
        self._specs[run_id] = spec
        plan = Plan(spec)
        advance = plan.start(now)
        running = self._with(queued, plan, now, advance)
        cause = (f" by trigger {trigger_id}" if trigger_id else "") + (
            f" on event {event.type} ({event.id})" if event is not None else "")
        decision = self.slots.launch(
            run_id=run_id, running_doc=running.model_dump_json(),
            queued_doc=queued.model_dump_json() if slot and spec.policy == "queue" else "",
            score=now.timestamp(),
            ttl=self.runs.ttl_seconds, policy=spec.policy, slot=slot, launch_key=launch_key,
            lines=[self.redactor.redact_text(line) for line in (
                f"workstream {spec.id}: run {run_id} launched{cause}", *advance.notes)],
            queued_line=self.redactor.redact_text(
                f"workstream {spec.id}: queued (concurrency key {key!r}) behind run "))
        if decision.decision == "duplicate":
            first, _, rest = decision.other.partition(":")
            first_run, _, holder = rest.partition(":")
            return LaunchResult(first_run or None, "duplicate",
                                f"launched before with key {launch_key!r}: {first}"
                                + (f" run {first_run}" if first_run else f" (run {holder} was "
                                   "active)"))
        if decision.decision == "skipped":
            return LaunchResult(None, "skipped", f"run {decision.other} of {spec.id} is active "
                                f"for concurrency key {key!r} (policy skip)")
        if decision.decision == "queued":
            self.runs.note("launch", _for_log(queued))
            return LaunchResult(run_id, "queued", f"waits for run {decision.other} to end "
                                f"(concurrency key {key!r})")
        self._send_all(running, advance)
        self.runs.note("launch", _for_log(running))
        if decision.decision == "cancelled_previous":
            previous = decision.other
            with contextlib.suppress(NothingToCancel, RunNotFound):
                self.cancel_run(previous, reason=f"superseded by run {run_id} (concurrency key "
                                f"{key!r}, policy cancel_previous)")
            return LaunchResult(run_id, "cancelled_previous", f"cancelled run {previous}, "
                                f"which held concurrency key {key!r}")
        return LaunchResult(run_id, "launched", cause.strip() or "by hand")

    def _concurrency_key(self, spec: WorkstreamSpec, event: dict[str, Any] | None,
                         params: dict[str, Any], trace: str) -> str:
        try:
            return str(render(spec.concurrency_key, {"event": event or _no_event(trace),
                                                     "params": params}))
        except ValidationError as exc:
            raise ValidationError(f"concurrency key of {spec.id}: {exc}") from None

    def _default_queue(self, step: StepSpec) -> str:
        kind = step_kinds().get(step.kind)
        chooser = getattr(kind, "default_queue", None)
        return str(chooser(self.settings)) if callable(chooser) else DEFAULT_QUEUE

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

        snapshot, _ = self.records.transact(run_id, change)
        if lost:
            self._apply(snapshot.run, lost[0])
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

        snapshot, _ = self.records.transact(run_id, change, known=known)
        if advances:
            self._apply(snapshot.run, advances[0])
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
        snapshot, _ = self.records.transact(run_id, change)
        if not advances:
            raise NothingToCancel(f"run {run_id} already ended: {snapshot.run.status}")
        self._apply(snapshot.run, advances[0])
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

        snapshot, _ = self.records.transact(run_id, change)
        if not advances:
            return None
        self._apply(snapshot.run, advances[0])
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
            snapshot, _ = self.records.transact(run_id, change)
        except RunNotFound:
            return None
        if not advances:
            return None
        self._apply(snapshot.run, advances[0])
        return snapshot.run

    # --- the record --------------------------------------------------------------------------------

    def spec_of(self, run: Run) -> WorkstreamSpec:
        spec = self._specs.get(run.run_id)
        if spec is None:
            spec = WorkstreamSpec.from_dict(run.orchestration["spec"])
            if len(self._specs) > 1000:
                self._specs.clear()
            self._specs[run.run_id] = spec
        return spec

    def plan_of(self, run: Run) -> Plan:
        orchestration = run.orchestration
        return Plan(self.spec_of(run), run.steps, phase=orchestration.get("phase", "pending"),
                    outcome=orchestration.get("outcome"),
                    failed_step=orchestration.get("failed_step"), error=run.error)

    def template_context(self, run: Run, plan: Plan) -> dict[str, Any]:
        """What step templates see (``event``, ``params``, ``steps``, ``run``)."""
        orchestration = run.orchestration
        return {
            "event": run.event if run.event else _no_event(run.trace_id or run.run_id),
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
        return new, effects

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

    def _apply(self, run: Run, advance: Advance) -> None:
        """After a commit: send the attempts it queued, cancel sub-workstreams it stopped, and
        finalize the run if it ended (lines, stop requests and the output's end are written)."""
        self._send_all(run, advance)
        for child in advance.stop_children:
            with contextlib.suppress(NothingToCancel, RunNotFound):
                self.cancel_run(child, reason=f"its parent run {run.run_id} stopped")
        if advance.ended is not None:
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
        options: dict[str, Any] = {
            "kwargs": {"run_id": run_id, "step_id": step.id, "attempt": attempt},
            "queue": queue or DEFAULT_QUEUE, "task_id": f"{run_id}:{step.id}:{attempt}",
            "soft_time_limit": soft, "time_limit": timeout + grace,
            "expires": countdown + waiting + EXPIRES_SLACK_SECONDS,
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
            self.runs.note("finish", _for_log(run))


def _ending_line(run: Run) -> str:
    took = f" in {run.duration:.2f}s" if run.duration is not None else ""
    why = f": {run.error}" if run.error and run.status != "succeeded" else ""
    return f"workstream {run.workstream_id}: {run.status}{took}{why}"


def _for_log(run: Run) -> Run:
    """The run as runs.jsonl keeps it: without the definition it carries (the config has it)."""
    return run.model_copy(update={"orchestration": {
        key: value for key, value in run.orchestration.items() if key != "spec"}})


def beat_key(run_id: str, step_id: str, attempt: int) -> str:
    return f"{WS_STEP_BEAT_PREFIX}{run_id}:{step_id}:{attempt}"


def stop_key(run_id: str, step_id: str) -> str:
    return f"{WS_STEP_STOP_PREFIX}{run_id}:{step_id}"


def _no_event(trace_id: str) -> dict[str, Any]:
    """What templates see as ``event`` in a run launched by hand."""
    return {"id": None, "type": None, "source": None, "time": None, "data": {},
            "trace_id": trace_id, "parent_id": None, "hops": 0}


def orchestrator_from(settings: Settings, client: redis.Redis, bus: EventBus, run_store: RunStore,
                      send: SendTask, *, catalog: WorkstreamCatalog | None = None,
                      redactor: Redactor | None = None) -> Orchestrator:
    """An orchestrator from settings: the catalog is ``<config_dir>/workstreams.yaml`` (read when
    first needed: workers executing steps never need it), the clock is Redis's."""

    def load() -> WorkstreamCatalog:
        return WorkstreamCatalog.load(settings.config_dir / WORKSTREAMS_FILE)

    clock = synced_clock(client)
    return Orchestrator(catalog if catalog is not None else load, client=client,
                        runs=run_store.with_clock(clock), bus=bus, send=send, settings=settings,
                        redactor=redactor, clock=clock)


def synced_clock(client: redis.Redis, *, every: float = 10.0) -> Callable[[], datetime]:
    """Redis's clock (as every host agrees on it), read once every ``every`` seconds and carried
    on meanwhile by this host's monotonic clock: a launch then costs no ``TIME`` round trip."""
    lock = threading.Lock()
    state = {"offset": 0.0, "synced": -math.inf}

    def now() -> datetime:
        mono = time.monotonic()
        with lock:
            if mono - state["synced"] > every:
                seconds, micros = client.time()
                state["offset"] = seconds + micros / 1_000_000 - time.monotonic()
                state["synced"] = mono
            offset = state["offset"]
        return datetime.fromtimestamp(time.monotonic() + offset, tz=UTC)

    return now
