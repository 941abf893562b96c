"""A pitstop project of its own for trigger tests: config files, a private Redis, helpers to
count launches (run records) and read routing decisions, and the one-second schedule that the
Beat failure tests judge slot by slot."""

from __future__ import annotations

import os
import textwrap
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from pitstop.kernel.constants import BEAT_LOCK_KEY
from pitstop.kernel.statelog import read_log
from pitstop.runs.store import RunStore
from tests.support import ROOT, Proc, redis_running, wait_for

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


@contextmanager
def own_project(home: Path, redis_dir: Path, *, triggers: str, workstreams: str
                ) -> Iterator[tuple[Path, dict[str, str], redis.Redis]]:
    """``make_project`` at ``home`` on a redis-server of its own (files in ``redis_dir``): yields
    the home, the environment for pitstop processes there and a client of that Redis."""
    with redis_running(redis_dir) as (_, info):
        env = make_project(home, info.url, triggers=triggers, workstreams=workstreams)
        client = redis.Redis.from_url(info.url)
        try:
            yield home, env, client
        finally:
            client.close()


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


TICK_TRIGGERS = """
    triggers:
      - id: tick
        schedule: {every: 1s}
        workstream: WS-TICK
        params: {slot: "{{ schedule.slot }}"}
"""
TICK_WORKSTREAMS = """
    workstreams:
      WS-TICK:
        params: {slot: ""}
        steps:
          - {id: note, kind: emit, params: {type: test.ticked}}
"""
"""A one-second schedule (rule ``tick``) launching WS-TICK with its slot as a parameter."""


@contextmanager
def started(env: dict[str, str], home: Path) -> Iterator[Callable[..., Proc]]:
    """``start(name, args=["beat"])`` runs a pitstop process in ``home`` (log ``<name>.log``);
    every one started is stopped on leaving, the last first."""
    procs: list[Proc] = []

    def start(name: str, args: list[str] | None = None) -> Proc:
        proc = Proc(args or ["beat"], env, home / f"{name}.log", cwd=home)
        procs.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in reversed(procs):
            proc.stop()


def beat_leader(client: redis.Redis, beats: list[Proc]) -> Proc:
    """The Beat among ``beats`` holding the singleton lock (waits until one does)."""
    def find() -> Proc | None:
        token = client.get(BEAT_LOCK_KEY)
        if token is None:
            return None
        pid = int(token.decode().split("/")[1])
        return next((beat for beat in beats if beat.pid == pid), None)

    return wait_for(find, 30, interval=0.1, message="a Beat to lead")


def fired_slots(home: Path) -> list[int]:
    """The slots (epoch seconds) the ``tick`` rule launched, one entry per launch."""
    return [int(datetime.fromisoformat(d["slot"].replace("Z", "+00:00")).timestamp())
            for d in decisions(home, rule="tick", decision="launched")]


@dataclass
class SlotTally:
    """The ``tick`` schedule's launches up to ``ended``: how often each slot fired, the slots of
    the window that never did, and WS-TICK's runs per slot."""

    slots: list[int]
    counts: Counter[int]
    missing: list[int]
    runs: Counter[str]


def wait_for_slot(home: Path, ended: float) -> None:
    wait_for(lambda: max(fired_slots(home)) >= int(ended), 30, interval=0.2,
             message="the last slot to fire")


def slot_tally(home: Path, client: redis.Redis, ended: float) -> SlotTally:
    slots = fired_slots(home)
    window = range(min(slots), int(ended) + 1)
    return SlotTally(slots, Counter(slots), sorted(set(window) - set(slots)),
                     Counter(run.params["slot"] for run in workstream_runs(client, "WS-TICK")))
