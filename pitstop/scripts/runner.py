"""The worker's side of a script run: claim it, run it once, report it.

``tasks.scripts.run_script`` only turns a Celery message into a :class:`ScriptRequest`, hands
it to a :class:`ScriptRunner` and maps the outcome to Celery (retry, result, ``ScriptFailed``).
Everything that decides something lives here and never imports Celery:

* **Claim.** A run is claimed atomically (``queued → running``). A redelivered message finds it
  finished (skip), running on a live worker (skip), or running on a dead one: then it is re-run
  only when idempotent, and otherwise marked ``lost`` at once. A claim whose reply was lost is
  retried here, in the same process, where claiming again is the same claim.
* **Run.** Sealed ``--env`` values and secret arguments are opened (bound to this run, script
  and arguments); values secret by name or marked secret by the caller (``secret_env``) are
  redacted from everything, plain ones (``GIT_SHA``) are not; the script runs under a
  :class:`CLIWrapper` that streams its lines through an :class:`OutputWriter` and heart-beats
  the run.
* **Report.** Refused before it ran, failed, timed out, cancelled: the run record says so, the
  output ends with the result's own status, and :class:`ScriptFailed` tells Celery.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from pitstop.bus.eventbus import EventBus
from pitstop.connection.outage import RedisOutage
from pitstop.kernel.errors import (
    PitstopError,
    RunNotFound,
    ScriptError,
    ScriptFailed,
    ValidationError,
)
from pitstop.kernel.proc import pid_alive
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.sealing import Sealer
from pitstop.kernel.settings import Settings
from pitstop.kernel.statelog import StateLog
from pitstop.runs.output import OutputWriter, RunOutput
from pitstop.runs.store import RunStore
from pitstop.scripts.cliwrapper import CLIWrapper
from pitstop.scripts.dispatch import seal_binding
from pitstop.scripts.result import ExecutionResult

log = logging.getLogger(__name__)

CLAIM_PATIENCE_SECONDS = 10.0
"""How long a claim is retried in-process while Redis is unreachable, before Celery's retry."""

_RUN_ID_RE = re.compile(r"[A-Za-z0-9._:-]{1,200}")


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
    sealed_args: str | None = None
    secret_env: list[str] = field(default_factory=list)
    unknown: tuple[str, ...] = ()
    """Fields the message had that ``run_script`` does not take (a forged message)."""

    def check(self) -> None:
        """Raise :class:`ValidationError` naming the first field that is not what a sender
        writes: the message may come from anyone who can write to Redis."""
        problem = _request_problem(self)
        if problem is not None:
            raise ValidationError(f"the task message is malformed: {problem}")


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
        if not isinstance(request.run_id, str) or not _RUN_ID_RE.fullmatch(request.run_id):
            # No run to report to: the message names none (forged or corrupt).
            log.error("a run_script message without a valid run id (%.80r): not running it",
                      request.run_id)
            return Skip(str(request.run_id)[:80], "invalid")
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
        try:
            # Everything from here on is inside the try: a message the sender never wrote
            # (timeout -5, a list where a string belongs) ends the run failed, saying why.
            request.check()
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
                # Several beats per reaper window, so a live run is never mistaken for lost.
                heartbeat_interval=max(0.5, min(5.0, patience / 4)),
                record_patience=patience,
                give_up_by=give_up_by,
            )
            args, env = self._unseal(request, redactor)
            result = wrapper.wrap(request.script, args, env=env,
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

    def _unseal(self, request: ScriptRequest, redactor: Redactor
                ) -> tuple[list[str], dict[str, str]]:
        """The script's real arguments and ``env``; teaches ``redactor`` the secret ones."""
        args, env = list(request.args), dict(request.env)
        if request.sealed_env or request.sealed_args:
            sealer = self._sealer()
            if sealer is None:
                raise ScriptError("this run carries encrypted values (--env or secret "
                                  "arguments) but this worker has no PITSTOP_SECRET_KEY to "
                                  "decrypt them")
            if request.sealed_env:
                env.update(sealer.unseal(request.sealed_env, bound_to=seal_binding(
                    request.run_id, request.script, request.args, request.cwd,
                    secret_env=request.secret_env)))
            if request.sealed_args:
                hidden = sealer.unseal(request.sealed_args, bound_to=seal_binding(
                    request.run_id, request.script, request.args, request.cwd, part="args"))
                args = _restore_args(args, hidden, redactor)
        for name in request.secret_env:
            # Marked secret by the caller (--secret-env): redacted whatever its name. Values
            # secret by name are learnt when the environment is built; plain ones stay readable.
            if name in env:
                redactor.add_secret(env[name])
        return args, env

    def _end_abruptly(self, run_id: str, why: str) -> None:
        try:
            self.runs.update_run(run_id, status="failed", error=f"the worker gave up: {why}")
        except Exception:
            log.exception("run %s: could not record how it ended", run_id)


def _restore_args(shown: list[str], hidden: dict[str, str], redactor: Redactor) -> list[str]:
    """``shown`` with the sealed secret arguments put back; a value the run's own redactor would
    not hide (a secret the sender knew from its environment) is taught to it."""
    args = list(shown)
    for key, value in hidden.items():
        index = int(key) if key.isdigit() else -1
        if not 0 <= index < len(args):
            raise ScriptError("the encrypted arguments are malformed")
        args[index] = value
    recognised = redactor.redact_args(args)
    for key in hidden:
        index = int(key)
        if recognised[index] == args[index]:
            redactor.add_secret(args[index])
    return args


def _request_problem(request: ScriptRequest) -> str | None:
    """What is wrong with a message's fields, or None (never quoting a whole value)."""

    def shown(value: object) -> str:
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."

    def strings(value: object) -> bool:
        return isinstance(value, list) and all(isinstance(item, str) for item in value)

    optional_strings = {"cwd": request.cwd, "trace_id": request.trace_id,
                        "sealed_env": request.sealed_env, "sealed_args": request.sealed_args}
    timeout = request.timeout
    if request.unknown:
        return f"unknown fields {', '.join(sorted(request.unknown)[:10])}"
    if not isinstance(request.script, str) or not request.script:
        return f"script {shown(request.script)} is not a path"
    if not strings(request.args):
        return "args is not a list of strings"
    if not isinstance(request.env, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in request.env.items()):
        return "env is not a mapping of strings to strings"
    if not strings(request.secret_env):
        return "secret_env is not a list of names"
    for name, value in optional_strings.items():
        if value is not None and not isinstance(value, str):
            return f"{name} {shown(value)} is not a string"
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int | float)
                                or not math.isfinite(timeout) or timeout <= 0):
        return f"timeout {shown(timeout)} is not a positive number of seconds"
    if not isinstance(request.idempotent, bool):
        return f"idempotent {shown(request.idempotent)} is not true or false"
    return None
