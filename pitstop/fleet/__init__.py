"""Keeping a machine's pitstop processes running: ``pitstop up``'s children and embedded Redis."""

from pitstop.fleet.supervisor import Child, EmbeddedRedisKeeper, Supervisor, mark_runs_lost

__all__ = ["Child", "EmbeddedRedisKeeper", "Supervisor", "mark_runs_lost"]
