"""Keeping a machine's pitstop processes running: ``pitstop up``'s children and embedded Redis."""

from pitstop.fleet.beatlock import beat_alive, lock_lifetime, standby_delay
from pitstop.fleet.supervisor import (
    Child,
    EmbeddedRedisKeeper,
    Supervisor,
    mark_orphaned_runs_lost,
    mark_runs_lost,
)

__all__ = ["Child", "EmbeddedRedisKeeper", "Supervisor", "beat_alive", "lock_lifetime",
           "mark_orphaned_runs_lost", "mark_runs_lost", "standby_delay"]
