"""Schedules under failure, with real Beat processes: a one-second schedule fires every slot
exactly once while the leading Beat is SIGKILLed and the next leader SIGSTOPped and resumed
(each slot is fenced in Redis where the task fires it, not only by Beat's lock).

The default run keeps it to ~25 s; PITSTOP_LONG_TESTS=1 runs the two-minute version.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from tests.support import wait_for, worker_args
from tests.trigger_project import beat_leader, fired_slots, slot_tally, started, wait_for_slot

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LONG = os.environ.get("PITSTOP_LONG_TESTS") == "1"
PHASE = 24.0 if LONG else 3.0
"""Seconds between disruptions (the long version spans about two minutes)."""


def test_every_slot_fires_exactly_once_through_beat_failures(
        tick_project: tuple[Path, dict[str, str], redis.Redis]) -> None:
    home, env, client = tick_project
    with started(env, home) as start:
        worker = start("worker", worker_args("sched", concurrency=2))
        worker.wait_for_output("ready.", 60)
        beats = [start("beat-a")]
        beat_leader(client, beats)
        beats.append(start("beat-b"))
        wait_for(lambda: len(fired_slots(home)) >= 3, 30, interval=0.2, message="slots to fire")
        started_at = time.time()
        time.sleep(PHASE)  # let the schedule run: the disruptions must fall inside it

        first = beat_leader(client, beats)
        first.kill()  # SIGKILL the leader; a supervisor would start another Beat
        beats.remove(first)
        beats.append(start("beat-c"))
        second = beat_leader(client, beats)
        time.sleep(PHASE)

        os.killpg(second.pid, signal.SIGSTOP)  # the leader freezes; its lock expires
        try:
            wait_for(lambda: beat_leader(client, beats) is not second, 30, interval=0.2,
                     message="another Beat to take over")
            time.sleep(PHASE)
        finally:
            os.killpg(second.pid, signal.SIGCONT)  # wakes up believing it leads
        time.sleep(PHASE)
        ended = time.time()
        wait_for_slot(home, ended)

    tally = slot_tally(home, client, ended)
    assert all(count == 1 for count in tally.counts.values()), tally.counts.most_common(3)
    assert not tally.missing, f"slots never fired: {tally.missing}"
    assert min(tally.slots) < started_at and max(tally.slots) >= ended - 1
    # One run per slot, too (the fence is where the task fires, not only Beat's lock).
    assert len(tally.runs) == len(tally.slots) and set(tally.runs.values()) == {1}
