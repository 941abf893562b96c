"""Beat under failure, the other way round from tests/integration/test_triggers_schedule.py (the
same one-second schedule and slot tally, from tests/trigger_project.py): the leading Beat is
SIGSTOPped first (it freezes holding its lock, and wakes later believing it still leads), and the
Beat that takes over is SIGKILLed; a third takes over. A one-second schedule must fire every slot
exactly once (the slot fence is where the task fires, not only Beat's lock), none missed beyond
the catch-up policy, and the take-over gaps are reported.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import redis

from tests.faults.report import long_mode, record
from tests.support import wait_for, worker_args
from tests.trigger_project import beat_leader, fired_slots, slot_tally, started, wait_for_slot

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(300)]

PHASE = 20.0 if long_mode() else 3.0


def test_a_frozen_leader_and_a_killed_successor_fire_every_slot_once(
        tick_project: tuple[Path, dict[str, str], redis.Redis]) -> None:
    home, env, client = tick_project
    takeovers: list[float] = []
    with started(env, home) as start:
        start("worker", worker_args("beatfault", concurrency=2)).wait_for_output("ready.", 60)
        beats = [start("beat-a")]
        first = beat_leader(client, beats)
        beats += [start("beat-b"), start("beat-c")]
        wait_for(lambda: len(fired_slots(home)) >= 3, 30, interval=0.2, message="slots to fire")
        started_at = time.time()
        time.sleep(PHASE)  # the schedule runs: the disruptions must fall inside it

        os.killpg(first.pid, signal.SIGSTOP)  # frozen holding the lock
        frozen_at = time.monotonic()
        try:
            second = wait_for(
                lambda: (leader := beat_leader(client, beats)) is not first and leader,
                30, interval=0.1, message="a standby to take over")
            takeovers.append(time.monotonic() - frozen_at)
            time.sleep(PHASE)
            second.kill()  # SIGKILL the new leader
            killed_at = time.monotonic()
            beats.remove(second)
            wait_for(
                lambda: (leader := beat_leader(client, beats)) not in (first, second) and leader,
                30, interval=0.1, message="the third Beat to take over")
            takeovers.append(time.monotonic() - killed_at)
            time.sleep(PHASE)
        finally:
            os.killpg(first.pid, signal.SIGCONT)  # wakes believing it leads
        time.sleep(PHASE)
        ended = time.time()
        wait_for_slot(home, ended)

    tally = slot_tally(home, client, ended)
    record("beat_failover", {"slots": len(tally.slots),
                             "fired_twice": sum(n > 1 for n in tally.counts.values()),
                             "missed": len(tally.missing),
                             "takeover_s": [round(t, 2) for t in takeovers],
                             "runs_per_slot_max": max(tally.runs.values())})
    assert all(count == 1 for count in tally.counts.values()), tally.counts.most_common(3)
    assert not tally.missing, f"slots never fired: {tally.missing}"
    assert min(tally.slots) < started_at and max(tally.slots) >= ended - 1
    assert len(tally.runs) == len(tally.slots) and set(tally.runs.values()) == {1}
