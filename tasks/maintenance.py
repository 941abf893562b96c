"""Housekeeping fired by Beat."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task

from pitstop.constants import TASK_REAP_RUNS
from pitstop.runoutput import RunOutput
from workers import context


@shared_task(name=TASK_REAP_RUNS, acks_late=True, ignore_result=True)
def reap_lost_runs() -> list[str]:
    """Mark runs whose worker stopped heart-beating as ``lost``; end their output streams."""
    settings = context.settings()
    lost = context.run_store().reap_lost(
        stale_after=timedelta(seconds=settings.scripts.lost_after_seconds))
    output = RunOutput(context.redis_client())
    for run in lost:
        # If its worker is in fact alive (a long network partition), it kills the script.
        output.request_cancel(run.run_id)
        output.close(run.run_id, status="lost", exit_code=None)
    return [run.run_id for run in lost]
