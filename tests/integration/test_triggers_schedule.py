"""Schedules under failure, with real Beat processes: a one-second schedule fires every slot
exactly once while the leading Beat is SIGKILLed and the next leader SIGSTOPped and resumed
(each slot is fenced in Redis where the task fires it, not only by Beat's lock).

The default run keeps it to ~25 s; PITSTOP_LONG_TESTS=1 runs the two-minute version.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis

from pitstop.connection.server import RedisServer
from pitstop.kernel.constants import BEAT_LOCK_KEY
from tests.support import Proc, wait_for
from tests.trigger_project import decisions, make_project, workstream_runs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LONG = os.environ.get("PITSTOP_LONG_TESTS") == "1"
PHASE = 24.0 if LONG else 3.0
"""Seconds between disruptions (the long version spans about two minutes)."""


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], redis.Redis]]:
    server = RedisServer(tmp_path / "redis", appendonly=False)
    info = server.start()
    env = make_project(tmp_path / "home", info.url, triggers="""
        triggers:
          - id: tick
            schedule: {every: 1s}
            workstream: WS-TICK
            params: {slot: "{{ schedule.slot }}"}
    """, workstreams="""
        workstreams:
          WS-TICK:
            params: {slot: ""}
            steps:
              - {id: note, kind: emit, params: {type: test.ticked}}
    """)
    client = redis.Redis.from_url(info.url)
    try:
        yield tmp_path / "home", env, client
    finally:
        client.close()
        server.stop()


def _leader(client: redis.Redis, beats: list[Proc]) -> Proc:
    def find() -> Proc | None:
        token = client.get(BEAT_LOCK_KEY)
        if token is None:
            return None
        pid = int(token.decode().split("/")[1])
        return next((beat for beat in beats if beat.pid == pid), None)

    return wait_for(find, 30, interval=0.1, message="a Beat to lead")


def _slots(home: Path) -> list[int]:
    return [int(datetime.fromisoformat(d["slot"].replace("Z", "+00:00")).timestamp())
            for d in decisions(home, rule="tick", decision="launched")]


def test_every_slot_fires_exactly_once_through_beat_failures(
        project: tuple[Path, dict[str, str], redis.Redis]) -> None:
    home, env, client = project
    procs: list[Proc] = []

    def start(args: list[str], name: str) -> Proc:
        proc = Proc(args, env, home / f"{name}.log", cwd=home)
        procs.append(proc)
        return proc

    try:
        worker = start(["worker", "-Q", "default", "-c", "2", "-n", "sched@%h"], "worker")
        worker.wait_for_output("ready.", 60)
        beats = [start(["beat"], "beat-a")]
        _leader(client, beats)
        beats.append(start(["beat"], "beat-b"))
        wait_for(lambda: len(_slots(home)) >= 3, 30, interval=0.2, message="slots to fire")
        started = time.time()
        time.sleep(PHASE)  # let the schedule run: the disruptions must fall inside it

        first = _leader(client, beats)
        first.kill()  # SIGKILL the leader; a supervisor would start another Beat
        beats.remove(first)
        beats.append(start(["beat"], "beat-c"))
        second = _leader(client, beats)
        time.sleep(PHASE)

        os.killpg(second.pid, signal.SIGSTOP)  # the leader freezes; its lock expires
        try:
            wait_for(lambda: _leader(client, beats) is not second, 30, interval=0.2,
                     message="another Beat to take over")
            time.sleep(PHASE)
        finally:
            os.killpg(second.pid, signal.SIGCONT)  # wakes up believing it leads
        time.sleep(PHASE)
        ended = time.time()
        wait_for(lambda: max(_slots(home)) >= int(ended), 30, interval=0.2,
                 message="the last slot to fire")
    finally:
        for proc in reversed(procs):
            proc.stop()

    slots = _slots(home)
    counts = Counter(slots)
    assert all(count == 1 for count in counts.values()), counts.most_common(3)
    window = range(min(slots), int(ended) + 1)
    missing = sorted(set(window) - set(slots))
    assert not missing, f"slots never fired: {missing}"
    assert min(slots) < started and max(slots) >= ended - 1
    # One run per slot, too (the fence is where the task fires, not only Beat's lock).
    runs = Counter(run.params["slot"] for run in workstream_runs(client, "WS-TICK"))
    assert len(runs) == len(slots) and set(runs.values()) == {1}
