"""The orchestrator: launches workstream runs, and drives them (:mod:`.driver`).

No Celery here: step attempts are sent through an injected ``send`` (``celery_app.send_task``).
A launch is one Redis script (the launch key, the concurrency slot, the run record with its
first steps marked queued, its first progress line: :mod:`.slots`) and one message per first
step. The run carries its definition as launched (sub-workstreams and sealed secrets included).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import redis

from pitstop.bus.eventbus import EventBus
from pitstop.bus.events import Event
from pitstop.kernel.constants import (
    DEFAULT_QUEUE,
    RUN_KIND_WORKSTREAM,
    WORKSTREAMS_FILE,
)
from pitstop.kernel.errors import (
    ConfigError,
    NothingToCancel,
    PitstopError,
    RunNotFound,
    ValidationError,
    WorkstreamUnavailable,
)
from pitstop.kernel.ids import new_id
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.settings import Settings
from pitstop.runs.store import Run, RunStore
from pitstop.workstreams.catalog import WorkstreamCatalog
from pitstop.workstreams.driver import Claimed, RunDriver, SendTask, beat_key, for_log, no_event, stop_key
from pitstop.workstreams.plan import Plan
from pitstop.workstreams.records import synced_clock
from pitstop.workstreams.seals import seal_spec
from pitstop.workstreams.spec import StepSpec, WorkstreamSpec
from pitstop.workstreams.steps import step_kinds
from pitstop.workstreams.templates import render

__all__ = ["Claimed", "LaunchResult", "Orchestrator", "SendTask", "beat_key", "orchestrator_from",
           "stop_key"]

log = logging.getLogger(__name__)


@dataclass
class LaunchResult:
    """What a launch did."""

    run_id: str | None
    status: str
    """``launched``, ``queued`` (waits for its concurrency slot), ``skipped`` (policy ``skip``
    and the slot is taken), ``cancelled_previous`` (launched; the slot's holder cancelled), or
    ``duplicate`` (this launch key was used before: ``run_id`` is that launch's run)."""
    reason: str


class Orchestrator(RunDriver):
    """Launches workstream runs, and drives them (:class:`RunDriver`)."""

    def __init__(self, catalog: WorkstreamCatalog | Callable[[], WorkstreamCatalog], *,
                 client: redis.Redis, runs: RunStore, bus: EventBus, send: SendTask,
                 settings: Settings, redactor: Redactor | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        super().__init__(client=client, runs=runs, bus=bus, send=send, settings=settings,
                         redactor=redactor, clock=clock)
        self._catalog = catalog if isinstance(catalog, WorkstreamCatalog) else None
        self._load_catalog = None if isinstance(catalog, WorkstreamCatalog) else catalog

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
        self.remember_spec(run_id, spec)
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
            self.runs.note("launch", for_log(queued))
            return LaunchResult(run_id, "queued", f"waits for run {decision.other} to end "
                                f"(concurrency key {key!r})")
        self._send_all(running, advance)
        self.runs.note("launch", for_log(running))
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
            return str(render(spec.concurrency_key, {"event": event or no_event(trace),
                                                     "params": params}))
        except ValidationError as exc:
            raise ValidationError(f"concurrency key of {spec.id}: {exc}") from None

    def _default_queue(self, step: StepSpec) -> str:
        kind = step_kinds().get(step.kind)
        chooser = getattr(kind, "default_queue", None)
        return str(chooser(self.settings)) if callable(chooser) else DEFAULT_QUEUE

def orchestrator_from(settings: Settings, client: redis.Redis, bus: EventBus, run_store: RunStore,
                      send: SendTask, *, catalog: WorkstreamCatalog | None = None,
                      redactor: Redactor | None = None) -> Orchestrator:
    """An orchestrator from settings: the catalog is ``<config_dir>/workstreams.yaml`` (read when
    first needed: workers executing steps never need it), the clock is Redis's."""

    def load() -> WorkstreamCatalog:
        return WorkstreamCatalog.load(settings.config_dir / WORKSTREAMS_FILE)

    clock = synced_clock(client)  # Redis's clock, without a TIME per change
    return Orchestrator(catalog if catalog is not None else load, client=client,
                        runs=run_store.with_clock(clock), bus=bus, send=send, settings=settings,
                        redactor=redactor, clock=clock)
