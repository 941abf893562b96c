"""The worker's side of a step: claim the attempt, render its params, run its kind, report.

``tasks.workstreams.workstream_step`` only hands a message to :meth:`StepExecutor.run` and maps a
Redis outage before the claim to a Celery retry. While the kind executes, a helper thread keeps
the attempt's heartbeat key alive (the reaper gives up on an attempt whose key expired) and
polls whether the run was cancelled or the step asked to stop.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pydantic

from pitstop.connection.outage import RedisOutage
from pitstop.kernel.constants import RUN_CANCEL_PREFIX
from pitstop.kernel.errors import PitstopError
from pitstop.kernel.redaction import Redactor
from pitstop.runs.store import Run, RunStore
from pitstop.scripts.runner import ScriptRunner
from pitstop.workstreams.driver import Claimed, beat_key, stop_key
from pitstop.workstreams.orchestrator import Orchestrator
from pitstop.workstreams.plan import AttemptResult
from pitstop.workstreams.records import Snapshot
from pitstop.workstreams.steps import StepContext, StepKind, StepResult, step_kinds
from pitstop.workstreams.templates import render

__all__ = ["StepExecutor", "StepOutcome"]

log = logging.getLogger(__name__)

MAX_OUTPUT_BYTES = 32 * 1024
"""Most bytes of outputs one step keeps in the run record (longer text values are dropped)."""
CANCEL_POLL_SECONDS = 0.25


@dataclass(frozen=True)
class StepOutcome:
    """What one message did (for the task's result and the worker's log)."""

    run_id: str
    step_id: str
    attempt: int
    status: str
    """The attempt's status, or ``skipped`` when the message had nothing to do."""
    message: str = ""

    def as_result(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "step": self.step_id, "attempt": self.attempt,
                "status": self.status, "message": self.message}


class StepExecutor:
    """Executes step attempts for one worker process (``host``, ``pid``)."""

    def __init__(self, orchestrator: Orchestrator, *, host: str, pid: int,
                 new_redactor: Callable[[], Redactor],
                 script_runner: Callable[[], ScriptRunner] | None = None,
                 runs: RunStore | None = None,
                 timeout_errors: tuple[type[BaseException], ...] = ()) -> None:
        self.orchestrator = orchestrator
        self.host = host
        self.pid = pid
        self._new_redactor = new_redactor
        self._script_runner = script_runner
        self._runs = runs or orchestrator.runs
        self._timeout_errors = timeout_errors

    def claim(self, run_id: str, step_id: str, attempt: int) -> Claimed | None:
        """Claim the attempt (raises :class:`RedisUnavailable`: nothing has started yet)."""
        return self.orchestrator.claim_step(run_id, step_id, attempt, host=self.host, pid=self.pid)

    def run(self, claimed: Claimed, attempt: int, *, give_up_by: float | None = None
            ) -> StepOutcome:
        """Execute a claimed attempt and report how it ended."""
        run, step = claimed.run, claimed.step
        redactor = self._new_redactor()
        kind = step_kinds().get(step.kind)
        if kind is None:
            return self._report(run, step.id, attempt, AttemptResult(
                "failed", message=f"step kind {step.kind!r} is not installed on {self.host}",
                retryable=False), give_up_by)
        try:
            params = self._params(claimed, kind)
        except (PitstopError, pydantic.ValidationError) as exc:
            message = redactor.redact_text(_one_line(exc))
            return self._report(run, step.id, attempt, AttemptResult(
                "failed", message=f"bad params: {message}", retryable=False), give_up_by)
        scripts = self.orchestrator.settings.scripts
        timeout = min(step.timeout or scripts.default_timeout, scripts.max_timeout)
        watch = _Watch(self.orchestrator, run.run_id, step.id, attempt)
        ctx = StepContext(
            run_id=run.run_id, workstream_id=run.workstream_id or "", step_id=step.id,
            attempt=attempt, params=params, event=run.event, trace_id=run.trace_id,
            hops=int((run.event or {}).get("hops", 0)), timeout=timeout,
            settings=self.orchestrator.settings, redis=self.orchestrator.client,
            bus=self.orchestrator.bus, redactor=redactor, cancelled=watch.cancelled.is_set,
            queue=step.queue, runs=self._runs,
            script_runner=(self._script_runner() if self._script_runner is not None
                           and getattr(kind, "uses_scripts", False) else None),
            give_up_by=give_up_by,
            launch_workstream=lambda workstream_id, sub_params: self.orchestrator.launch_child(
                run.run_id, step.id, attempt, workstream_id, sub_params))
        _watcher().add(watch)
        try:
            result = self._execute(kind, ctx, timeout, redactor)
        finally:
            _watcher().remove(watch)
        if result.status == "waiting":
            child = str(result.outputs.get("run_id") or "")
            self._outage(give_up_by).call(lambda: self.orchestrator.wait_for_child(
                run.run_id, step.id, attempt, child, known=claimed.snapshot))
            return StepOutcome(run.run_id, step.id, attempt, "waiting", result.message)
        outputs = _capped(redactor.redact(result.outputs))
        return self._report(run, step.id, attempt, AttemptResult(
            result.status, outputs, redactor.redact_text(result.message)), give_up_by,
            known=claimed.snapshot)

    def _params(self, claimed: Claimed, kind: StepKind) -> pydantic.BaseModel:
        raw = self.orchestrator.unseal(claimed.run, claimed.step)
        context = self.orchestrator.template_context(claimed.run, claimed.plan)
        return kind.params_model.model_validate(render(raw, context))

    def _execute(self, kind: StepKind, ctx: StepContext, timeout: float,
                 redactor: Redactor) -> StepResult:
        try:
            return kind.execute(ctx)
        except self._timeout_errors:
            return StepResult("timed_out", message=f"took longer than its timeout of {timeout:g}s")
        except PitstopError as exc:
            return StepResult("failed", message=redactor.redact_text(_one_line(exc)))
        except Exception as exc:
            log.exception("step %s of run %s: %s failed", ctx.step_id, ctx.run_id, kind.name)
            return StepResult("failed", message=redactor.redact_text(
                f"{type(exc).__name__}: {_one_line(exc)}"))

    def _report(self, run: Run, step_id: str, attempt: int, result: AttemptResult,
                give_up_by: float | None, *, known: Snapshot | None = None) -> StepOutcome:
        """Record the result, riding out a short Redis outage; if that fails the reaper finds the
        attempt's heartbeat gone and ends it."""
        try:
            self._outage(give_up_by).call(lambda: self.orchestrator.finish_step(
                run.run_id, step_id, attempt, result, known=known))
        except PitstopError as exc:
            log.error("step %s of run %s: could not record that attempt %d %s: %s", step_id,
                      run.run_id, attempt, result.status, exc)
        return StepOutcome(run.run_id, step_id, attempt, result.status, result.message)

    def _outage(self, give_up_by: float | None) -> RedisOutage:
        return RedisOutage(self.orchestrator.settings.scripts.lost_after_seconds,
                           what="recording a workstream step", give_up_by=give_up_by)


class _Watch:
    """One executing attempt: its heartbeat key and whether it was asked to stop."""

    def __init__(self, orchestrator: Orchestrator, run_id: str, step_id: str,
                 attempt: int) -> None:
        self.client = orchestrator.client
        self.ttl = orchestrator.beat_ttl
        self.beat_key = beat_key(run_id, step_id, attempt)
        self.watched = (f"{RUN_CANCEL_PREFIX}{run_id}", stop_key(run_id, step_id))
        self.cancelled = threading.Event()
        self.beat_every = max(0.5, min(5.0, self.ttl / 4))
        self.last_beat = time.monotonic()  # the claim set the key

    def poll(self, now: float) -> None:
        if not self.cancelled.is_set() and self.client.exists(*self.watched):
            self.cancelled.set()
        if now - self.last_beat >= self.beat_every:
            self.client.set(self.beat_key, "1", ex=self.ttl)
            self.last_beat = now


class _Watcher:
    """One thread per process polls every executing attempt's watch (starting a thread per step
    would cost milliseconds before each step starts)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._watches: set[_Watch] = set()
        self._thread = threading.Thread(target=self._loop, name="pitstop-step-watcher",
                                        daemon=True)
        self._thread.start()

    def add(self, watch: _Watch) -> None:
        with self._lock:
            self._watches.add(watch)

    def remove(self, watch: _Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def _loop(self) -> None:
        while True:
            time.sleep(CANCEL_POLL_SECONDS)
            with self._lock:
                watches = list(self._watches)
            for watch in watches:
                try:
                    watch.poll(time.monotonic())
                except Exception as exc:  # a Redis blip: the next round tries again
                    log.debug("step heartbeat: %s", exc)


_WATCHER: _Watcher | None = None
_WATCHER_LOCK = threading.Lock()


def _watcher() -> _Watcher:
    """This process's watcher (a forked child starts its own)."""
    global _WATCHER
    with _WATCHER_LOCK:
        if _WATCHER is None or _WATCHER.pid != os.getpid():
            _WATCHER = _Watcher()
        return _WATCHER


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _capped(outputs: Any) -> dict[str, Any]:
    """Outputs that are JSON and fit :data:`MAX_OUTPUT_BYTES` (long text values dropped)."""
    if not isinstance(outputs, dict):
        return {}
    try:
        text = json.dumps(outputs, default=str)
    except (TypeError, ValueError, RecursionError):
        return {"error": "the step's outputs are not JSON"}
    size = len(text)
    clean: dict[str, Any] = json.loads(text)
    if size <= MAX_OUTPUT_BYTES:
        return clean
    kept = {key: value for key, value in clean.items()
            if not isinstance(value, str | list | dict) or len(json.dumps(value)) <= 1024}
    kept["truncated"] = True
    return kept
