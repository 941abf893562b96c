"""A pitstop project of its own for trigger tests: config files, a private Redis, helpers to
count launches (run records) and read routing decisions."""

from __future__ import annotations

import os
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from pitstop.kernel.statelog import read_log
from pitstop.runs.store import RunStore
from tests.support import ROOT

SETTINGS = """\
bus:
  claim_idle_ms: 1500      # a killed router's events are reclaimed quickly
celery:
  beat_lock_ttl: 2         # a standby Beat takes over within ~3 s
  queues: [default]
"""


def make_project(home: Path, redis_url: str, *, triggers: str, workstreams: str,
                 settings: str = SETTINGS) -> dict[str, str]:
    """Write ``home/config/*`` and return the environment for pitstop processes there."""
    config = home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (home / "scripts").mkdir(exist_ok=True)
    (config / "pitstop.yaml").write_text(settings)
    (config / "triggers.yaml").write_text(textwrap.dedent(triggers))
    (config / "workstreams.yaml").write_text(textwrap.dedent(workstreams))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
    env.update({
        "PITSTOP_HOME": str(home),
        "PITSTOP_REDIS_URL": redis_url,
        "PITSTOP_STATE_DIR": str(home / ".state"),
        "PITSTOP_CONFIG_DIR": str(config),
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    })
    return env


def decisions(home: Path, **match: Any) -> list[dict[str, Any]]:
    """Routing decisions from ``.state/trigger_executions.jsonl`` with the given field values."""
    return [record for record in read_log("trigger_executions", home / ".state")
            if all(record.get(key) == value for key, value in match.items())]


def workstream_runs(client: redis.Redis, workstream_id: str | None = None) -> list[Any]:
    return RunStore(client).list_runs(kind="workstream", workstream_id=workstream_id,
                                      limit=100_000)


def launches_per_event(client: redis.Redis, workstream_id: str) -> Counter[str]:
    """How many runs of ``workstream_id`` each triggering event launched."""
    return Counter(str((run.event or {}).get("id")) for run in workstream_runs(client,
                                                                               workstream_id))
