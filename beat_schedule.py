"""What Celery Beat fires, built from settings (pure: no Celery import)."""

from __future__ import annotations

from typing import Any

from pitstop.kernel.constants import (
    DEFAULT_QUEUE,
    TASK_ALERTS_SUMMARY,  # alerts
    TASK_FIRE_SCHEDULES,  # triggers
    TASK_REAP_RUNS,
    TASK_REAP_WORKSTREAMS,  # workstreams
)
from pitstop.kernel.settings import Settings
from pitstop.triggers.feed import ScheduleFeed  # triggers
from pitstop.triggers.schedules import ScheduleTicker  # triggers


def build_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Celery ``beat_schedule``: entry name -> task, interval (seconds) and options."""
    reap_every = max(5.0, settings.scripts.lost_after_seconds / 2)
    return {
        "reap-lost-runs": {
            "task": TASK_REAP_RUNS,
            "schedule": reap_every,
            "options": {"queue": DEFAULT_QUEUE, "expires": reap_every},
        },
        "reap-workstreams": {  # workstreams: dead step workers, unsent steps, unfinished ends
            "task": TASK_REAP_WORKSTREAMS,
            "schedule": reap_every,
            "options": {"queue": DEFAULT_QUEUE, "expires": reap_every},
        },
        "alerts-daily-summary": {  # alerts: sends yesterday's summary once, after summary.at
            "task": TASK_ALERTS_SUMMARY,
            "schedule": 300.0,
            "options": {"queue": DEFAULT_QUEUE, "expires": 300.0},
        },
        "trigger-schedules": {  # triggers: due at each slot of the schedules in force
            "task": TASK_FIRE_SCHEDULES,
            "schedule": ScheduleTicker(_trigger_schedules(settings)),
            "options": {"queue": DEFAULT_QUEUE, "expires": 60.0},
        },
    }


def _trigger_schedules(settings: Settings) -> ScheduleFeed:  # triggers
    """The schedules of the trigger config in force, read through Redis when Beat asks."""
    from pitstop.connection.connect import connect

    return ScheduleFeed(settings.config_dir, lambda: connect(settings, check=False))
