"""``run_script``: run one script on the worker that took it from its queue."""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis
from celery import Task, shared_task

from pitstop import components
from pitstop.cliwrapper import CLIWrapper
from pitstop.constants import LOG_CLI_EXECUTIONS, TASK_RUN_SCRIPT
from pitstop.dispatch import seal_binding
from pitstop.errors import RedisUnavailable, RunNotFound, ScriptError, ScriptFailed, ValidationError
from pitstop.proc import pid_alive
from pitstop.runoutput import OutputWriter, RunOutput
from workers import context

log = logging.getLogger(__name__)
INFRA_ERRORS = (redis.ConnectionError, redis.TimeoutError, RedisUnavailable)
TIME_LIMIT_MARGIN = 5.0
"""Seconds kept before the task's hard time limit for what follows the retries of a result."""


# ``throws``: a failing script is a FAILURE in Flower and the result backend, logged by the
# worker as one line rather than as a crash with a traceback.
@shared_task(name=TASK_RUN_SCRIPT, bind=True, acks_late=True, reject_on_worker_lost=True,
             max_retries=5, default_retry_delay=2, throws=(ScriptFailed,))
def run_script(self: Task, run_id: str, script: str, args: list[str] | None = None,
               env: dict[str, str] | None = None, cwd: str | None = None,
               timeout: float | None = None, idempotent: bool = False,
               trace_id: str | None = None, sealed_env: str | None = None) -> dict[str, Any]:
    """Run ``script`` for run ``run_id``; never starts a script twice unless ``idempotent``.

    Returns the execution result when the script succeeded; raises :class:`ScriptFailed` when
    it ran and failed, was refused or was lost, after the run record says so.
    """
    task_started = time.monotonic()
    settings = context.settings()
    runs = context.run_store()
    output = RunOutput(context.redis_client())
    host = socket.gethostname()
    stale_after = timedelta(seconds=settings.scripts.lost_after_seconds)
    try:
        claimed = runs.claim_run(run_id, host=host, worker_pid=os.getpid())
        if claimed is None:
            current = runs.get_run(run_id)
            if current.status != "running":
                return {"run_id": run_id, "skipped": True, "status": current.status}
            # Redelivered while marked running: did the process that ran it die?
            dead = ((current.host == host and not pid_alive(current.worker_pid))
                    or runs.is_stale(current, stale_after=stale_after))
            if not dead:
                return {"run_id": run_id, "skipped": True, "status": current.status}
            if idempotent or settings.scripts.retry_idempotent:
                claimed = runs.claim_run(run_id, host=host, worker_pid=os.getpid(),
                                         allow_rerun=True)
            if claimed is None:
                lost = runs.update_run(run_id, status="lost",
                                       error="the worker process running this script died")
                output.close(run_id, status="lost", exit_code=None)
                raise ScriptFailed(f"run {run_id} {lost.status}: {lost.error}")
    except INFRA_ERRORS as exc:
        # Nothing has started yet: safe to try again later. Keep the masked arguments: a retry
        # is a new message, and Celery does not carry argsrepr/kwargsrepr over by itself.
        raise self.retry(exc=exc, argsrepr=self.request.argsrepr,
                         kwargsrepr=self.request.kwargsrepr) from exc
    except RunNotFound:
        # Expired, or enqueued against another Redis: there is nobody to report to.
        log.error("run %s: no run record; not running %s", run_id, script)
        return {"run_id": run_id, "skipped": True, "status": "unknown"}

    limit = min(timeout or settings.scripts.default_timeout, settings.scripts.max_timeout)
    # A redactor of this run's own: it learns this run's secret --env values, which must not
    # accumulate in a long-lived worker (nor be missing from this run's logs).
    redactor = context.new_redactor()
    # When the script ends while Redis is unreachable, its result and output are retried for as
    # long as the worker would not count as lost yet, and never past the hard time limit
    # (Celery would kill us in the middle).
    patience = settings.scripts.lost_after_seconds
    hard_limit = _hard_time_limit(self)
    give_up_by = None if hard_limit is None else task_started + hard_limit - TIME_LIMIT_MARGIN
    writer = OutputWriter(output, run_id, patience=patience, give_up_by=give_up_by)
    wrapper = CLIWrapper(
        timeout=limit,
        allowed_roots=settings.scripts.allowed_roots,
        env_allowlist=settings.scripts.env_allowlist,
        output_cap_bytes=settings.scripts.output_cap_bytes,
        redactor=redactor,
        bus=context.bus(),
        runs=runs,  # also heart-beats the run while the script runs
        state_log=components.state_log(LOG_CLI_EXECUTIONS, settings, redactor),
        output_sink=writer.write,
        cancel_check=lambda: output.cancel_requested(run_id),
        # Several beats per reaper window, so a live run is never mistaken for a lost one.
        heartbeat_interval=max(0.5, min(5.0, settings.scripts.lost_after_seconds / 4)),
        record_patience=patience,
        give_up_by=give_up_by,
    )
    try:
        unsealed = _unseal(sealed_env, seal_binding(run_id, script, list(args or []), cwd))
        for value in unsealed.values():
            # Sealed by the sender because it is (or may be) secret: redact it whatever its name.
            redactor.add_secret(value)
        full_env = {**(env or {}), **unsealed}
        result = wrapper.wrap(script, args or [], env=full_env,
                              cwd=Path(cwd) if cwd else None, run_id=run_id, trace_id=trace_id)
    except (ScriptError, ValidationError) as exc:
        # Refused before anything ran: say why where the waiting CI step will see it.
        message = redactor.redact_text(str(exc))
        runs.update_run(run_id, status="failed", error=message)
        writer.write("stderr", f"pitstop: {message}")
        writer.close(status="failed", exit_code=None)
        raise ScriptFailed(f"run {run_id} refused: {message}") from None
    except BaseException:
        # Celery's soft time limit, or a bug: the wrapper has marked the run; end its output.
        writer.close(status="failed", exit_code=None)
        raise
    # The result's own status, not the record's: if Redis was down when the script ended, the
    # record may still say running, and the end entry is what followers exit with.
    writer.close(status=result.status, exit_code=result.exit_code)
    if not result.succeeded:
        raise ScriptFailed(f"run {run_id} {result.status}: exit code {result.exit_code} after "
                           f"{result.duration:.2f}s" + (" (timed out)" if result.timed_out else ""))
    return redactor.redact(result.to_dict())  # type: ignore[no-any-return]


def _hard_time_limit(task: Task) -> float | None:
    """Seconds this task may run before Celery kills it (None: no limit)."""
    limits = task.request.timelimit or (None, None)
    hard = limits[0] or task.time_limit or task.app.conf.task_time_limit
    return float(hard) if hard else None


def _unseal(sealed_env: str | None, bound_to: dict[str, Any]) -> dict[str, str]:
    if not sealed_env:
        return {}
    sealer = context.settings().sealer()
    if sealer is None:
        raise ScriptError("this run carries encrypted --env values but this worker has no "
                          "PITSTOP_SECRET_KEY to decrypt them")
    return sealer.unseal(sealed_env, bound_to=bound_to)
