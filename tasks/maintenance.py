"""Housekeeping fired by Beat."""

from __future__ import annotations

from datetime import timedelta

from celery import shared_task

from pitstop import runoutput
from pitstop.constants import TASK_REAP_RUNS
from pitstop.runoutput import RunOutput
from workers import context


@shared_task(name=TASK_REAP_RUNS, acks_late=True, ignore_result=True)
def reap_lost_runs() -> list[str]:
    """Mark runs whose worker stopped heart-beating as ``lost``; end their output streams."""
    stale_after = timedelta(seconds=context.settings().scripts.lost_after_seconds)
    lost = runoutput.reap_lost_runs(context.run_store(), RunOutput(context.redis_client()),
                                    stale_after=stale_after)
    return [run.run_id for run in lost]
