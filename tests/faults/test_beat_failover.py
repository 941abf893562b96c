"""Beat under failure, the other way round from tests/integration/test_triggers_schedule.py (whose
fixture and helpers this reuses): the leading Beat is SIGSTOPped first (it freezes holding its
lock, and wakes later believing it still leads), and the Beat that takes over is SIGKILLed; a third
takes over. A one-second schedule must fire every slot exactly once (the slot fence is where the
task fires, not only Beat's lock), none missed beyond the catch-up policy, and the take-over gaps
are reported.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import redis

from tests.faults.report import long_mode, record
from tests.integration.test_triggers_schedule import _leader, _slots, project  # noqa: F401
from tests.support import Proc, wait_for
from tests.trigger_project import workstream_runs

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(300)]

PHASE = 20.0 if long_mode() else 3.0


def test_a_frozen_leader_and_a_killed_successor_fire_every_slot_once(
        project: tuple[Path, dict[str, str], redis.Redis]) -> None:  # noqa: F811
    home, env, client = project
    procs: list[Proc] = []

    def start(name: str, args: list[str] | None = None) -> Proc:
        proc = Proc(args or ["beat"], env, home / f"{name}.log", cwd=home)
        procs.append(proc)
        return proc

    takeovers: list[float] = []
    try:
        start("worker", ["worker", "-Q", "default", "-c", "2", "-n", "beatfault@%h"]) \
            .wait_for_output("ready.", 60)
        beats = [start("beat-a")]
        first = _leader(client, beats)
        beats += [start("beat-b"), start("beat-c")]
        wait_for(lambda: len(_slots(home)) >= 3, 30, interval=0.2, message="slots to fire")
        started = time.time()
        time.sleep(PHASE)  # the schedule runs: the disruptions must fall inside it

        os.killpg(first.pid, signal.SIGSTOP)  # frozen holding the lock
        frozen_at = time.monotonic()
        try:
            second = wait_for(lambda: (leader := _leader(client, beats)) is not first and leader,
                              30, interval=0.1, message="a standby to take over")
            takeovers.append(time.monotonic() - frozen_at)
            time.sleep(PHASE)
            second.kill()  # SIGKILL the new leader
            killed_at = time.monotonic()
            beats.remove(second)
            wait_for(lambda: (leader := _leader(client, beats)) not in (first, second) and leader,
                     30, interval=0.1, message="the third Beat to take over")
            takeovers.append(time.monotonic() - killed_at)
            time.sleep(PHASE)
        finally:
            os.killpg(first.pid, signal.SIGCONT)  # wakes believing it leads
        time.sleep(PHASE)
        ended = time.time()
        wait_for(lambda: max(_slots(home)) >= int(ended), 30, interval=0.2,
                 message="the last slot to fire")
    finally:
        for proc in reversed(procs):
            proc.stop()

    slots = _slots(home)
    counts = Counter(slots)
    window = range(min(slots), int(ended) + 1)
    missing = sorted(set(window) - set(slots))
    runs = Counter(run.params["slot"] for run in workstream_runs(client, "WS-TICK"))
    record("beat_failover", {"slots": len(slots), "fired_twice": sum(n > 1 for n in counts.values()),
                             "missed": len(missing), "takeover_s": [round(t, 2) for t in takeovers],
                             "runs_per_slot_max": max(runs.values())})
    assert all(count == 1 for count in counts.values()), counts.most_common(3)
    assert not missing, f"slots never fired: {missing}"
    assert min(slots) < started and max(slots) >= ended - 1
    assert len(runs) == len(slots) and set(runs.values()) == {1}
