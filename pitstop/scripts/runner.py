"""The worker's side of a script run: claim it, run it once, report it.

``tasks.scripts.run_script`` only turns a Celery message into a :class:`ScriptRequest`, hands
it to a :class:`ScriptRunner` and maps the outcome to Celery (retry, result, ``ScriptFailed``).
Everything that decides something lives here and never imports Celery:

* **Claim.** A run is claimed atomically (``queued → running``). A redelivered message finds it
  finished (skip), running on a live worker (skip), or running on a dead one: then it is re-run
  only when idempotent, and otherwise marked ``lost`` at once. A claim whose reply was lost is
  retried here, in the same process, where claiming again is the same claim.
* **Run.** Sealed ``--env`` values are opened (bound to this run, script and arguments) and
  redacted whatever their names; the script runs under a :class:`CLIWrapper` that streams its
  lines through an :class:`OutputWriter` and heart-beats the run.
* **Report.** Refused before it ran, failed, timed out, cancelled: the run record says so, the
  output ends with the result's own status, and :class:`ScriptFailed` tells Celery.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pitstop.bus.eventbus import EventBus
from pitstop.connection.outage import RedisOutage
from pitstop.kernel.errors import PitstopError, RunNotFound, ScriptError, ScriptFailed
from pitstop.kernel.proc import pid_alive
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.sealing import Sealer
from pitstop.kernel.settings import Settings
from pitstop.kernel.statelog import StateLog
from pitstop.runs.output import OutputWriter, RunOutput
from pitstop.runs.store import RunStore
from pitstop.scripts.cliwrapper import CLIWrapper, ExecutionResult
from pitstop.scripts.dispatch import seal_binding

log = logging.getLogger(__name__)

CLAIM_PATIENCE_SECONDS = 10.0
"""How long a claim is retried in-process while Redis is unreachable, before Celery's retry."""


@dataclass(frozen=True)
class ScriptRequest:
    """What a ``run_script`` message asks for."""

    run_id: str
    script: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout: float | None = None
    idempotent: bool = False
    trace_id: str | None = None
    sealed_env: str | None = None


@dataclass(frozen=True)
class Skip:
    """The message must not run the script: the run is already ``status``."""

    run_id: str
    status: str

    def as_result(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "skipped": True, "status": self.status}


class ScriptRunner:
    """Claims and runs scripts for one worker process (``host``, ``pid``)."""

    def __init__(self, settings: Settings, runs: RunStore, output: RunOutput, *, bus: EventBus,
                 host: str, pid: int, new_redactor: Callable[[], Redactor],
                 state_log: Callable[[Redactor], StateLog],
                 sealer: Callable[[], Sealer | None]) -> None:
        self.settings = settings
        self.runs = runs
        self.output = output
        self.bus = bus
        self.host = host
        self.pid = pid
        self._new_redactor = new_redactor
        self._state_log = state_log
        self._sealer = sealer

    # --- claim --------------------------------------------------------------------------------

    def claim(self, request: ScriptRequest) -> Skip | None:
        """None when this process now owns the run; else why the message must not run it.

        Raises :class:`ScriptFailed` when the run is found lost (its worker died and it is not
        idempotent), :class:`RedisUnavailable` when Redis stays unreachable.
        """
        outage = RedisOutage(CLAIM_PATIENCE_SECONDS, what=f"claiming run {request.run_id}")
        try:
            return outage.call(lambda: self._claim(request))
        except RunNotFound:
            # Expired, or enqueued against another Redis: there is nobody to report to.
            log.error("run %s: no run record; not running %s", request.run_id, request.script)
            return Skip(request.run_id, "unknown")

    def _claim(self, request: ScriptRequest) -> Skip | None:
        run_id = request.run_id
        if self.runs.claim_run(run_id, host=self.host, worker_pid=self.pid) is not None:
            return None
        current = self.runs.get_run(run_id)
        if current.status != "running":
            return Skip(run_id, current.status)
        # Redelivered while marked running: did the process that ran it die?
        stale_after = timedelta(seconds=self.settings.scripts.lost_after_seconds)
        dead = ((current.host == self.host and not pid_alive(current.worker_pid))
                or self.runs.is_stale(current, stale_after=stale_after))
        if not dead:
            return Skip(run_id, current.status)
        if ((request.idempotent or self.settings.scripts.retry_idempotent)
                and self.runs.claim_run(run_id, host=self.host, worker_pid=self.pid,
                                        allow_rerun=True) is not None):
            return None
        lost = self.runs.update_run(run_id, status="lost",
                                    error="the worker process running this script died")
        self.output.close(run_id, status="lost", exit_code=None)
        raise ScriptFailed(f"run {run_id} {lost.status}: {lost.error}")

    # --- run ----------------------------------------------------------------------------------

    def execute(self, request: ScriptRequest, *, give_up_by: float | None = None
                ) -> ExecutionResult:
        """Run the claimed script; returns its result when it succeeded.

        ``give_up_by`` (a :func:`time.monotonic` time, the task's hard limit less a margin)
        bounds the retries of the result and output while Redis is unreachable. Raises
        :class:`ScriptFailed` when the script was refused, failed, timed out or was cancelled.
        """
        scripts = self.settings.scripts
        run_id = request.run_id
        # A redactor of this run's own: it learns this run's secret --env values, which must not
        # accumulate in a long-lived worker (nor be missing from this run's logs).
        redactor = self._new_redactor()
        patience = scripts.lost_after_seconds
        writer = OutputWriter(self.output, run_id, patience=patience, give_up_by=give_up_by)
        wrapper = CLIWrapper(
            timeout=min(request.timeout or scripts.default_timeout, scripts.max_timeout),
            allowed_roots=scripts.allowed_roots,
            env_allowlist=scripts.env_allowlist,
            caller_env=scripts.caller_env,  # whoever enqueued it sets plain data only
            output_cap_bytes=scripts.output_cap_bytes,
            redactor=redactor,
            bus=self.bus,
            runs=self.runs,  # also heart-beats the run while the script runs
            state_log=self._state_log(redactor),
            output_sink=writer.write,
            cancel_check=lambda: self.output.cancel_requested(run_id),
            # Several beats per reaper window, so a live run is never mistaken for a lost one.
            heartbeat_interval=max(0.5, min(5.0, patience / 4)),
            record_patience=patience,
            give_up_by=give_up_by,
        )
        try:
            env = {**request.env, **self._unseal(request, redactor)}
            result = wrapper.wrap(request.script, request.args, env=env,
                                  cwd=Path(request.cwd) if request.cwd else None, run_id=run_id,
                                  trace_id=request.trace_id)
        except PitstopError as exc:
            # Refused before anything ran (path, interpreter, env, key): say why where the
            # waiting CI step will see it.
            message = redactor.redact_text(str(exc))
            self.runs.update_run(run_id, status="failed", error=message)
            writer.write("stderr", f"pitstop: {message}")
            writer.close(status="failed", exit_code=None)
            raise ScriptFailed(f"run {run_id} refused: {message}") from None
        except BaseException as exc:
            # Celery's soft time limit, or a bug. Inside wrap() the wrapper has ended the run
            # already (a terminal run ignores this); before it, this ends it.
            self._end_abruptly(run_id, redactor.redact_text(f"{type(exc).__name__}: {exc}"))
            writer.close(status="failed", exit_code=None)
            raise
        # The result's own status, not the record's: if Redis was down when the script ended,
        # the record may still say running, and the end entry is what followers exit with.
        writer.close(status=result.status, exit_code=result.exit_code)
        if not result.succeeded:
            raise ScriptFailed(f"run {run_id} {result.status}: exit code {result.exit_code} after "
                               f"{result.duration:.2f}s"
                               + (" (timed out)" if result.timed_out else ""))
        return result

    def _unseal(self, request: ScriptRequest, redactor: Redactor) -> dict[str, str]:
        if not request.sealed_env:
            return {}
        sealer = self._sealer()
        if sealer is None:
            raise ScriptError("this run carries encrypted --env values but this worker has no "
                              "PITSTOP_SECRET_KEY to decrypt them")
        values = sealer.unseal(request.sealed_env, bound_to=seal_binding(
            request.run_id, request.script, request.args, request.cwd))
        for value in values.values():
            # Sealed by the sender because it is (or may be) secret: redact it whatever its name.
            redactor.add_secret(value)
        return values

    def _end_abruptly(self, run_id: str, why: str) -> None:
        try:
            self.runs.update_run(run_id, status="failed", error=f"the worker gave up: {why}")
        except Exception:
            log.exception("run %s: could not record how it ended", run_id)
