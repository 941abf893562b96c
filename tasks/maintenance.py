"""Housekeeping: the reaper Beat fires, and the sweep for orphaned script processes."""

from __future__ import annotations

import logging
import socket
import threading
from datetime import timedelta
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init

from pitstop.fleet.supervisor import mark_orphaned_runs_lost
from pitstop.kernel import proc
from pitstop.kernel.constants import TASK_REAP_RUNS
from pitstop.kernel.errors import RunNotFound
from pitstop.runs import output as runoutput
from pitstop.runs.output import RunOutput
from workers import context

log = logging.getLogger(__name__)


@shared_task(name=TASK_REAP_RUNS, acks_late=True, ignore_result=True)
def reap_lost_runs() -> list[str]:
    """Mark runs whose worker stopped heart-beating ``lost`` and queued runs past their queue
    deadline ``expired``; end their output streams.

    Also sweeps this machine for processes such runs left behind.
    """
    stale_after = timedelta(seconds=context.settings().scripts.lost_after_seconds)
    lost = runoutput.reap_lost_runs(context.run_store(), RunOutput(context.redis_client()),
                                    stale_after=stale_after)
    sweep_orphans()
    return [run.run_id for run in lost]


def sweep_orphans() -> list[proc.Orphan]:
    """Kill what scripts of in-flight runs left behind when their worker process died, and mark
    those runs ``lost`` at once: the orphans prove their worker process dead."""
    runs = context.run_store()

    def run_status(run_id: str) -> str | None:
        try:
            return runs.get_run(run_id).status
        except RunNotFound:
            return None

    killed = proc.sweep_orphans(run_status)
    if killed:
        host = socket.gethostname()
        for run in mark_orphaned_runs_lost(runs, RunOutput(context.redis_client()), killed,
                                           host=host):
            log.warning("run %s marked lost: %s", run.run_id, run.error)
    return killed


@worker_process_init.connect
def _sweep_on_start(**_: Any) -> None:
    # A pool process replacing one that was killed, or a worker restarted after a SIGKILL, is the
    # first to know the old scripts' children may still run on this machine. In a thread: a
    # slow Redis must not hold up the pool process's start (Celery gives it a few seconds).
    threading.Thread(target=_sweep_logged, name="pitstop-orphan-sweep", daemon=True).start()


def _sweep_logged() -> None:
    try:
        sweep_orphans()
    except Exception:
        log.exception("sweeping orphaned script processes failed")
