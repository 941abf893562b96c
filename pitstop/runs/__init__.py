"""The orchestrator's run store: run records in Redis (claim, heartbeat, reap) and a run's output."""

from pitstop.runs.output import OutputWriter, RunOutput, reap_lost_runs
from pitstop.runs.store import Run, RunStore, redis_clock

__all__ = ["OutputWriter", "Run", "RunOutput", "RunStore", "reap_lost_runs", "redis_clock"]
