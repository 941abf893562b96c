"""Running one script non-interactively on a build machine: the pure core behind ``run_script``.

:class:`CLIWrapper` checks the path (inside the allowed roots, before anything runs), picks the
interpreter from the extension, runs the script in its own session with a filtered environment and
no stdin, streams redacted output lines live, enforces the timeout and cancellation by killing the
whole process group, and reports an :class:`~pitstop.scripts.result.ExecutionResult`. State log,
event bus and run store are optional: given none of them, a wrapper used inside a pitstop project
records there (``.state/cli_executions.jsonl``, and ``tool.*`` events while the project's Redis is
up: see :mod:`pitstop.scripts.project`); outside one, or with ``project=False``, it is a plain
library. The rules applied before anything runs live in :mod:`pitstop.scripts.policy`; running
the process (session, deadline, cancellation, group kill) in :mod:`pitstop.scripts.process`;
draining the pipes in :mod:`pitstop.scripts.outputreader`; the result and its exit codes in
:mod:`pitstop.scripts.result`. What stays here is the run's bookkeeping: run store, bus, state log.

Decisions worth knowing:

* The child env gets ``NON_INTERACTIVE=1`` and ``CI=1`` (most tools then skip prompts, pagers and
  progress animations), ``GIT_TERMINAL_PROMPT=0``, ``DEBIAN_FRONTEND=noninteractive``,
  ``PIP_NO_INPUT=1`` and ``PYTHONUNBUFFERED=1`` (so Python output streams live). Explicit ``env``
  values win over these, but names that would run other code (``LD_PRELOAD``, ``BASH_ENV``,
  ``PATH``, ``PYTHONPATH`` … see :data:`~pitstop.scripts.policy.PROTECTED_ENV`) are refused
  before anything runs: whoever can enqueue a run must not be able to run more than the script.
* After a normal exit, processes the script left behind in its process group (background
  daemons) are killed too (``kill_leftovers=True``): on a shared build machine a leaked daemon
  holds resources and the output pipes. A script that must leave a service running has to
  detach it into its own session (``setsid``).
* Exit codes follow the shell: 124 on timeout, 130 on cancellation, ``128 + n`` when killed by
  signal ``n``, 126/127 when the program cannot be executed / found (then ``pid`` is ``None``).
* ``output_cap_bytes`` bounds what is sent to ``output_sink`` per stream; past it the stream is
  marked truncated and only drained. The tails always show the real end of the output.
* ``cancel_check`` and ``heartbeat`` run on a helper thread of their own, so a call stuck on a
  stalled Redis never delays the timeout.
* An exception raised into the wait (Celery's soft time limit) kills the process group before it
  propagates. Exceptions from ``cancel_check``, ``heartbeat`` and ``output_sink`` are logged and
  the script keeps running. Bus, run store and state log errors before the start propagate
  (nothing ran). After the end, run store writes are retried for ``record_patience`` seconds
  while Redis is unreachable; then errors are logged and the result is still returned.
* Per-line redaction cannot catch a secret split across lines; the tails are redacted whole.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitstop.bus.events import Event
from pitstop.connection.outage import RedisOutage
from pitstop.kernel.constants import (
    EVENT_TOOL_FAILED,
    EVENT_TOOL_INVOKED,
    EVENT_TOOL_SUCCEEDED,
    LOG_CLI_EXECUTIONS,
    RUN_KIND_SCRIPT,
)
from pitstop.kernel.errors import ScriptError, ValidationError
from pitstop.kernel.ids import new_id, utc_iso
from pitstop.kernel.proc import RUN_ID_ENV, SUPERVISOR_ENV, supervisor_token
from pitstop.kernel.redaction import Redactor
from pitstop.scripts.policy import DEFAULT_ENV_ALLOWLIST, PROTECTED_ENV, ScriptPolicy
from pitstop.scripts.process import ProcessOutcome, run_process
from pitstop.scripts.project import ProjectRecording, project_recording
from pitstop.scripts.result import ExecutionResult

if TYPE_CHECKING:
    from pitstop.bus.eventbus import EventBus
    from pitstop.kernel.statelog import StateLog
    from pitstop.runs.store import RunStore

__all__ = ["CLIWrapper"]

log = logging.getLogger(__name__)


class CLIWrapper:
    """Runs scripts non-interactively, with timeouts, cancellation and redacted output.

    ``output_sink(stream, line)`` receives every redacted line live ("stdout"/"stderr"), from
    reader threads, one call at a time. ``cancel_check()`` is polled about every 0.2 s and
    ``heartbeat()`` called every ``heartbeat_interval`` seconds while the script runs, both on a
    helper thread (with ``runs`` and no ``heartbeat``, ``runs.heartbeat(run_id)`` is used); the
    result waits (up to 10 s) for a call still in flight. Killing sends SIGTERM to
    the process group and SIGKILL after ``kill_grace`` seconds; ``kill_leftovers`` also does it
    after a normal exit. ``protected_env`` lists the ``env`` names refused (pass ``()`` when the
    caller is trusted); ``caller_env``, when given, the only names (globs) ``env`` may set, as a
    worker does for whoever enqueued the run (``scripts.caller_env``). Use one wrapper per
    concurrent run: the callbacks belong to the instance.

    When the script has ended, the run store writes of its result are retried while Redis is
    unreachable, for ``record_patience`` seconds and never past ``give_up_by`` (a
    :func:`time.monotonic` time, such as a task's hard time limit).

    Given none of ``bus``, ``runs`` and ``state_log`` (the seed's ``CLIWrapper(timeout=300)``),
    :meth:`wrap` records in the project found from the working directory, as git finds
    ``.git``: it appends to its ``cli_executions`` log and publishes ``tool.*`` events while its
    Redis answers (it never starts the embedded one, and a failing publish only costs the
    events). ``project=False`` turns that off.
    """

    def __init__(
        self,
        timeout: float = 300,
        *,
        allowed_roots: Sequence[Path | str] | None = None,
        env_allowlist: Sequence[str] = DEFAULT_ENV_ALLOWLIST,
        protected_env: Sequence[str] = PROTECTED_ENV,
        caller_env: Sequence[str] | None = None,
        output_cap_bytes: int = 1_000_000,
        tail_bytes: int = 16_384,
        redactor: Redactor | None = None,
        bus: EventBus | None = None,
        runs: RunStore | None = None,
        state_log: StateLog | None = None,
        output_sink: Callable[[str, str], None] | None = None,
        cancel_check: Callable[[], bool] | None = None,
        heartbeat: Callable[[], None] | None = None,
        heartbeat_interval: float = 5.0,
        clock: Callable[[], datetime] | None = None,
        kill_grace: float = 2.0,
        kill_leftovers: bool = True,
        record_patience: float = 0.0,
        give_up_by: float | None = None,
        project: bool = True,
    ) -> None:
        _positive("timeout", timeout)
        _positive("heartbeat_interval", heartbeat_interval)
        if output_cap_bytes < 0 or tail_bytes < 0 or kill_grace < 0 or not record_patience >= 0:
            raise ValidationError("output_cap_bytes, tail_bytes, kill_grace and record_patience "
                                  "must not be negative")
        self.timeout = float(timeout)
        self.output_cap_bytes = output_cap_bytes
        self.tail_bytes = tail_bytes
        self.redactor = redactor if redactor is not None else Redactor.from_environ(os.environ)
        self._own_redactor = redactor is None
        # The seed's plain CLIWrapper() records where its project is (see pitstop.scripts.project).
        self._project_pending = project and bus is None and runs is None and state_log is None
        self._recording: ProjectRecording | None = None
        self.bus = bus
        self.runs = runs
        self.state_log = state_log
        self.output_sink = output_sink
        self.cancel_check = cancel_check
        self.heartbeat = heartbeat
        self.heartbeat_interval = float(heartbeat_interval)
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.kill_grace = float(kill_grace)
        self.kill_leftovers = kill_leftovers
        self.record_patience = float(record_patience)
        self.give_up_by = give_up_by
        self.host = socket.gethostname()
        self.policy = ScriptPolicy(allowed_roots=allowed_roots, env_allowlist=env_allowlist,
                                   protected_env=protected_env, caller_env=caller_env,
                                   redactor=self.redactor,
                                   host=self.host)
        self.allowed_roots = self.policy.allowed_roots

    # --- before anything runs (see pitstop.scripts.policy) ------------------------------------------

    def resolve_script(self, path: str | Path) -> Path:
        """The real path of an allowed script, or :class:`PathNotAllowed`."""
        return self.policy.resolve_script(path)

    def resolve_workdir(self, cwd: str | Path) -> Path:
        """The real path of an existing working directory inside the allowed roots."""
        return self.policy.resolve_workdir(cwd)

    def command_for(self, script: Path, args: Sequence[str], *,
                    search_path: str | None = None) -> list[str]:
        """The argv that runs ``script`` (interpreters looked up on ``search_path``)."""
        return self.policy.command_for(script, args, search_path=search_path)

    def child_env(self, env: Mapping[str, str] | None = None,
                  parent: Mapping[str, str] | None = None) -> dict[str, str]:
        """The script's environment; refuses protected names, learns secret values."""
        return self.policy.child_env(env, parent)

    # --- running ----------------------------------------------------------------------------------

    def wrap(
        self,
        path: str | Path,
        args: Sequence[str] = (),
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        timeout: float | None = None,
        run_id: str | None = None,
        trace_id: str | None = None,
    ) -> ExecutionResult:
        """Run one script to completion, timeout or cancellation.

        Raises :class:`PathNotAllowed`, :class:`InterpreterNotFound` or :class:`ScriptError`
        before anything runs; afterwards it always returns a result.
        """
        if isinstance(args, str):
            raise ValidationError("args must be a list of strings, not one string")
        limit = self.timeout if timeout is None else float(timeout)
        _positive("timeout", limit)
        if self._project_pending:
            self._use_project()
        script = self.resolve_script(path)
        child_env = self.child_env(env)
        argv = self.command_for(script, list(args), search_path=child_env.get("PATH"))
        workdir = None if cwd is None else self.resolve_workdir(cwd)

        # Secret flag values (--token X, --password=X) become *** and are learnt as secrets
        # before the script starts, so its own output cannot show them either.
        shown_args = self.redactor.redact_args(list(args))
        shown_script = self.redactor.redact_text(str(script))
        run_id = self._start_run(run_id, shown_script, shown_args, trace_id)
        # Inherited by all the script spawns: scripts can name their run, and a sweep can find
        # what a SIGKILLed worker left behind (see pitstop.kernel.proc).
        child_env[RUN_ID_ENV] = run_id
        child_env[SUPERVISOR_ENV] = supervisor_token()
        try:
            invoked = self._publish(
                EVENT_TOOL_INVOKED,
                {"run_id": run_id, "script": shown_script, "args": shown_args, "host": self.host},
                parent=None, trace_id=trace_id, after_run=False)
            result = self._execute(run_id, argv, env=child_env, cwd=workdir, limit=limit,
                                   shown_script=shown_script, shown_args=shown_args)
        except BaseException as exc:
            self._abandon_run(run_id, exc)
            raise
        self._finish(result, trace_id, invoked)
        return result

    def _execute(self, run_id: str, argv: list[str], *, env: dict[str, str], cwd: Path | None,
                 limit: float, shown_script: str, shown_args: list[str]) -> ExecutionResult:
        started_at = self.clock()
        beat = self.heartbeat
        if beat is None and self.runs is not None:
            runs = self.runs

            def beat() -> None:
                runs.heartbeat(run_id)
        outcome = run_process(
            argv, env=env, cwd=cwd, limit=limit, redactor=self.redactor,
            output_sink=self.output_sink, output_cap_bytes=self.output_cap_bytes,
            tail_bytes=self.tail_bytes, cancel_check=self.cancel_check, heartbeat=beat,
            heartbeat_interval=self.heartbeat_interval, kill_grace=self.kill_grace,
            kill_leftovers=self.kill_leftovers)
        return self._result(run_id, shown_script, shown_args, outcome, started_at)

    def _result(self, run_id: str, script: str, args: list[str], outcome: ProcessOutcome,
                started_at: datetime) -> ExecutionResult:
        code = outcome.exit_code
        return ExecutionResult(
            run_id=run_id, script=script, args=args, exit_code=code,
            succeeded=code == 0 and not outcome.timed_out and not outcome.cancelled,
            timed_out=outcome.timed_out, cancelled=outcome.cancelled,
            duration=round(outcome.duration, 6), stdout_tail=outcome.stdout_tail,
            stderr_tail=outcome.stderr_tail, host=self.host, started_at=utc_iso(started_at),
            finished_at=utc_iso(self.clock()), pid=outcome.pid,
            stdout_truncated=outcome.stdout_truncated, stderr_truncated=outcome.stderr_truncated,
        )

    # --- bookkeeping ------------------------------------------------------------------------------

    def _start_run(self, run_id: str | None, script: str, args: list[str],
                   trace_id: str | None) -> str:
        if self.runs is None:
            return run_id or new_id(int(self.clock().timestamp() * 1000))
        if run_id is None:
            run = self.runs.create_run(kind=RUN_KIND_SCRIPT, params={"script": script, "args": args},
                                       trace_id=trace_id)
            run_id = run.run_id
        run = self.runs.update_run(run_id, status="running", host=self.host)
        if run.terminal:
            # a redelivered task must not run a finished script a second time
            raise ScriptError(f"run {run_id} already ended ({run.status}); not running it again")
        return run_id

    def _abandon_run(self, run_id: str, exc: BaseException) -> None:
        """Best effort: a run whose execution blew up must not stay ``running``."""
        if self.runs is None:
            return
        try:
            self.runs.update_run(run_id, status="failed",
                                 error=self.redactor.redact_text(f"{type(exc).__name__}: {exc}"))
        except Exception:
            log.exception("could not mark run %s failed", run_id)

    def _publish(self, event_type: str, data: dict[str, Any], *, parent: Event | None,
                 trace_id: str | None, after_run: bool) -> Event | None:
        if self.bus is None:
            return None
        bus = self.bus
        try:
            return bus.publish(event_type, self.redactor.redact(data), parent=parent,
                               trace_id=trace_id)
        except Exception:
            if self._recording is not None:
                # A bus found in the project, not one the caller relies on: run without it.
                log.warning("could not publish %s to the project's Redis; no more tool.* "
                            "events from this call", event_type, exc_info=True)
                self.bus = self._recording.bus = None
                return None
            if not after_run:
                raise
            # the script already ran: losing an event beats losing (and re-running) the result
            log.exception("could not publish %s", event_type)
            return None

    def _use_project(self) -> None:
        """Record in the project found from the working directory: its ``cli_executions``
        log, and its bus while its Redis answers (connected again on a later call if not)."""
        if self._recording is None:
            recording = project_recording(None if self._own_redactor else self.redactor)
            if recording is None:
                self._project_pending = False  # not in a project: a plain library
                return
            self._recording = recording
            self.redactor = self.policy.redactor = recording.redactor
            self.state_log = recording.state_log
        self.bus = self._recording.connect_bus()

    def _finish(self, result: ExecutionResult, trace_id: str | None,
                invoked: Event | None) -> None:
        record = result.to_dict()
        record["execution_id"] = new_id(int(self.clock().timestamp() * 1000))
        if trace_id:
            record["trace_id"] = trace_id
        if self.state_log is not None:
            try:
                self.state_log.append(record)
            except Exception:
                log.exception("could not append to the %s log", LOG_CLI_EXECUTIONS)
        if self.runs is not None:
            self._record(self.runs, result, record)
        self._publish(EVENT_TOOL_SUCCEEDED if result.succeeded else EVENT_TOOL_FAILED, {
            "run_id": result.run_id, "script": result.script, "exit_code": result.exit_code,
            "duration": result.duration, "timed_out": result.timed_out,
            "cancelled": result.cancelled, "host": result.host,
        }, parent=invoked, trace_id=trace_id, after_run=True)

    def _record(self, runs: RunStore, result: ExecutionResult, record: dict[str, Any]) -> None:
        """The execution record and the final status, retried while Redis is unreachable (both
        writes are idempotent: a retry after a lost reply changes nothing twice)."""
        run_id = result.run_id

        def write() -> None:
            runs.record_cli_execution(run_id, record)
            runs.update_run(run_id, status=result.status, exit_code=result.exit_code)

        def on_down(exc: BaseException) -> None:
            if self.record_patience > 0:
                log.warning("run %s: Redis unreachable while recording its result (%s, exit code "
                            "%d): retrying for up to %gs (%s)", run_id, result.status,
                            result.exit_code, self.record_patience, exc)

        outage = RedisOutage(self.record_patience, what=f"recording the result of run {run_id}",
                             give_up_by=self.give_up_by, on_down=on_down,
                             on_up=lambda: log.info("run %s: result recorded once Redis was back",
                                                    run_id))
        try:
            outage.call(write)
        except Exception:
            log.exception("could not record the result of run %s (%s, exit code %d); the reaper "
                          "marks it lost", run_id, result.status, result.exit_code)


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValidationError(f"{name} must be a positive number of seconds, got {value!r}")
