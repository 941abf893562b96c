"""Events through the router into one-step workstreams on two workers while worker processes are
SIGKILLed at random moments: two pool processes, then a whole worker (started again at once).

The step runs a script that appends one line per execution to an effect ledger. A share of the
events is published twice with the same envelope (a publisher retrying after a lost reply), so
the router's dedupe is exercised on every run, not only when a kill happens to hit its window.

Proved: 0 events lost (each has exactly one launch and one run), 0 runs left unfinished, 0
duplicate side effects (no event's effect appears twice in the ledger; every succeeded run's
appears once). Reported: how many runs the kills cost (ended failed: a killed step has no
retries, so it is never executed twice), and the recovery time after the whole-worker kill
(until every run the dead worker held has ended).

Short mode: 300 events; ``PITSTOP_FAULTS_LONG=1``: the issue's 10,000.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from pitstop.bus.eventbus import EventBus
from pitstop.kernel.proc import stat_fields
from pitstop.kernel.serverinfo import ServerInfo
from tests.faults.harness import (
    LEDGER_SCRIPT,
    LEDGER_TRIGGERS,
    Project,
    ledger_workstreams,
    runs_of,
    runs_per_event,
    unfinished,
)
from tests.faults.report import long_mode, record, scale
from tests.support import wait_for, write_script

pytestmark = [pytest.mark.faults, pytest.mark.integration,
              pytest.mark.timeout(3600 if long_mode() else 240)]

SETTINGS = """\
bus:
  claim_idle_ms: 1500      # a killed router's events are reclaimed quickly
celery:
  beat_lock_ttl: 2
  queues: [default]
"""


def pool_children(pid: int) -> list[int]:
    """The pool processes of the worker whose main process is ``pid`` (its direct children)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(entry.name)
            if fields is not None and len(fields) > 1 and fields[1] == str(pid):
                children.append(int(entry.name))
    return sorted(children)


def ledger_lines(ledger: Path) -> list[tuple[str, str]]:
    if not ledger.exists():
        return []
    return [tuple(line.split(" ", 1)) for line in ledger.read_text().splitlines() if line]  # type: ignore[misc]


def test_random_sigkills_of_pool_processes_and_a_worker_lose_nothing_and_do_nothing_twice(
        private_redis: ServerInfo, tmp_path: Path) -> None:
    total = scale(300, 10_000)
    seed = int(os.environ.get("PITSTOP_FAULTS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    home = tmp_path / "home"
    ledger = tmp_path / "effects.log"
    (home / "scripts").mkdir(parents=True)
    script = write_script(home, "effect.sh", LEDGER_SCRIPT)
    project = Project.create(home, private_redis.url, workstreams=ledger_workstreams(script, ledger),
                             triggers=LEDGER_TRIGGERS, settings=SETTINGS,
                             extra_env={"PITSTOP_LOST_AFTER_SECONDS": "4",
                                        "PITSTOP_ALLOWED_ROOTS": str(home / "scripts")})
    client = redis.Redis.from_url(private_redis.url)
    bus = EventBus(client, source="fault-test")
    kills: list[dict[str, object]] = []
    try:
        workers = {"w1": project.start_worker("w1"), "w2": project.start_worker("w2")}
        project.start_beat()
        # Kill points: after this many effects. Two pool processes (of a worker drawn at random),
        # then a whole worker.
        points = sorted(rng.sample(range(total // 10, total * 6 // 10), 3))
        plan = [("pool", rng.choice(["w1", "w2"])), ("pool", rng.choice(["w1", "w2"])),
                ("worker", rng.choice(["w1", "w2"]))]
        twice = set(rng.sample(range(total), total // 20))
        started = time.monotonic()
        for seq in range(total):
            event = bus.publish("fault.tick", {"seq": seq})
            if seq in twice:
                bus.publish_event(event)  # the same envelope again: a redelivery
        published_s = time.monotonic() - started

        whole_kill: dict[str, object] = {}
        for point, (what, name) in zip(points, plan, strict=True):
            wait_for(lambda p=point: len(ledger_lines(ledger)) >= p, 120 if not long_mode() else 1800,
                     interval=0.05, message=f"{point} effects")
            proc = workers[name]
            if what == "pool":
                children = pool_children(proc.pid)
                assert children, f"{name} has no pool processes"
                victim = rng.choice(children)
                os.kill(victim, signal.SIGKILL)
                kills.append({"what": "pool process", "worker": name, "pid": victim,
                              "after_effects": point})
                continue
            in_flight = {run.run_id for run in runs_of(client) if not run.terminal
                         and any(step.get("status") == "running" for step in run.steps.values())}
            killed_at = time.monotonic()
            proc.kill()  # SIGKILL the process group: main process, pool, the scripts
            kills.append({"what": "whole worker", "worker": name, "pid": proc.pid,
                          "after_effects": point})
            workers[name] = project.start_worker(f"{name}-again")
            whole_kill = {"killed_at": killed_at, "in_flight": in_flight}

        try:
            wait_for(lambda: len(runs_of(client)) >= total and not unfinished(client),
                     120 if not long_mode() else 1800, interval=0.5,
                     message="every event's run to end")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {len(runs_of(client))} runs, unfinished "
                                 f"{unfinished(client)[:10]}") from None
        finished = time.monotonic()
        runs = runs_of(client)
        by_id = {run.run_id: run for run in runs}
        held = whole_kill.get("in_flight") or set()
        assert isinstance(held, set)
        killed_wall = time.time() - (time.monotonic() - float(whole_kill["killed_at"]))  # type: ignore[arg-type]
        # Recovered: every run the dead worker still held has ended (the reaper ends those whose
        # step stopped heart-beating); runs that ended before the kill took effect do not count.
        recovered = max((end for end in (by_id[run_id].finished_at.timestamp() for run_id in held
                                         if run_id in by_id and by_id[run_id].finished_at)
                         if end > killed_wall), default=None)
    finally:
        project.stop()

    per_event = runs_per_event(client)
    effects = ledger_lines(ledger)
    effect_seqs = Counter(seq for seq, _ in effects)
    seq_of = {run.run_id: str(run.params.get("seq")) for run in runs}
    statuses = Counter(run.status for run in runs)
    launched = project.decisions(rule="tick", decision="launched")
    figures = {
        "seed": seed,
        "events": total,
        "republished_events": len(twice),
        "kills": kills,
        "runs": len(runs),
        "run_statuses": dict(statuses),
        "effects": len(effects),
        "events_lost": total - len(per_event),
        "events_launched_twice": sum(n > 1 for n in per_event.values()),
        "duplicate_effects": sum(n - 1 for n in effect_seqs.values() if n > 1),
        "runs_held_by_killed_worker": len(held),
        "recovery_after_worker_kill_s": round(recovered - killed_wall, 2) if recovered else 0.0,
        "publish_s": round(published_s, 2),
        "all_done_s": round(finished - started, 2),
        "throughput_per_s": round(total / (finished - started), 1),
    }
    record("worker_kills", figures)
    client.close()
    assert len(launched) == total, f"{len(launched)} launches for {total} events"
    assert len(per_event) == total, "an event has no run"
    assert set(per_event.values()) == {1}, [e for e, n in per_event.items() if n > 1][:5]
    assert all(run.terminal for run in runs)
    assert figures["duplicate_effects"] == 0, effect_seqs.most_common(3)
    assert set(effect_seqs) <= set(seq_of.values())
    # Every succeeded run did its effect exactly once; a failed one (killed) at most once.
    assert all(effect_seqs[seq_of[run.run_id]] == 1 for run in runs if run.status == "succeeded")
    assert statuses["succeeded"] >= total - 3 * 4, statuses  # each kill costs at most the held runs
