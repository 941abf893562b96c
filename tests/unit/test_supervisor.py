"""``pitstop up``'s supervision of its children, with real processes and a clock of our own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from pitstop.fleet.supervisor import Supervisor, child_pids, describe_exit
from tests.support import FIXTURE_SCRIPTS, pid_alive, wait_for

pytestmark = pytest.mark.timeout(60)

linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

EXIT_3 = [sys.executable, "-c", "raise SystemExit(3)"]
WAIT_FOREVER = [sys.executable, str(FIXTURE_SCRIPTS / "wait_forever.py")]
IGNORE_TERM = [sys.executable, "-u", str(FIXTURE_SCRIPTS / "ignore_term.py")]


class Monotonic:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Monotonic:
    return Monotonic()


@pytest.fixture
def said() -> list[str]:
    return []


@pytest.fixture
def make(clock: Monotonic, said: list[str]) -> Iterator[list[Supervisor]]:
    made: list[Supervisor] = []
    yield made
    for supervisor in made:
        supervisor.terminate()
        supervisor.kill()


def supervise(made: list[Supervisor], plan: list[tuple[str, list[str]]], clock: Monotonic,
              said: list[str], **options: float) -> Supervisor:
    supervisor = Supervisor(plan, dict(os.environ), say=said.append, clock=clock, **options)
    made.append(supervisor)
    supervisor.start()
    return supervisor


def exited(supervisor: Supervisor, name: str) -> None:
    popen = supervisor.child(name).popen
    assert popen is not None
    popen.wait(30)


def test_a_child_that_keeps_exiting_is_restarted_with_doubling_delays(
        make: list[Supervisor], clock: Monotonic, said: list[str]) -> None:
    supervisor = supervise(make, [("worker", EXIT_3)], clock, said, max_delay=4.0)
    delays = []
    pids = set()
    for _ in range(4):
        child = supervisor.child("worker")
        assert child.popen is not None
        pids.add(child.popen.pid)
        exited(supervisor, "worker")
        supervisor.poll()
        assert child.popen is None and child.restart_at is not None
        delay = child.restart_at - clock.now
        delays.append(delay)
        clock.now += delay - 0.01
        supervisor.poll()
        assert child.popen is None  # not before its time
        clock.now += 0.01
        supervisor.poll()
        assert child.popen is not None  # restarted
    assert delays == [1.0, 2.0, 4.0, 4.0]
    assert len(pids) == 4
    assert said[0].startswith("worker (pid ") and "exited with 3 after 0s; restarting it in 1s" \
        in said[0]
    assert len(said) == 4  # one line each time


def test_a_child_that_ran_for_a_while_is_restarted_after_the_first_delay_again(
        make: list[Supervisor], clock: Monotonic, said: list[str]) -> None:
    supervisor = supervise(make, [("beat", EXIT_3)], clock, said, stable_after=60.0)
    for _ in range(3):
        exited(supervisor, "beat")
        supervisor.poll()
        clock.now += 10
        supervisor.poll()
    assert "restarting it in 4s" in said[-1]
    exited(supervisor, "beat")
    clock.now += 61  # it ran for a minute before exiting
    supervisor.poll()
    assert said[-1].endswith("after 61s; restarting it in 1s")


def test_a_killed_child_is_named_by_its_signal_and_restarted(
        make: list[Supervisor], clock: Monotonic, said: list[str]) -> None:
    supervisor = supervise(make, [("worker", WAIT_FOREVER)], clock, said)
    first = supervisor.child("worker").popen
    assert first is not None
    os.kill(first.pid, signal.SIGKILL)
    first.wait(30)
    supervisor.poll()
    assert f"worker (pid {first.pid}) was killed by SIGKILL" in said[-1]
    clock.now += 1
    supervisor.poll()
    second = supervisor.child("worker").popen
    assert second is not None and second.pid != first.pid and second.poll() is None


def test_stopping_warm_then_killing_what_ignores_it_and_no_restart_after(
        make: list[Supervisor], clock: Monotonic, said: list[str], tmp_path: Path) -> None:
    log = tmp_path / "children.log"

    def spawn(args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(list(args), env=dict(env), stdout=out,
                                    start_new_session=True)

    supervisor = Supervisor([("worker", IGNORE_TERM), ("beat", WAIT_FOREVER)], dict(os.environ),
                            say=said.append, clock=clock, spawn=spawn)
    make.append(supervisor)
    supervisor.start()
    worker = supervisor.child("worker").popen
    assert worker is not None
    wait_for(lambda: b"ready" in log.read_bytes(), 30, message="the worker ignoring SIGTERM")
    supervisor.terminate()
    beat = supervisor.child("beat").popen
    assert beat is not None
    beat.wait(30)  # SIGTERM stops it
    assert not supervisor.wait(clock.now + 5, give_up=lambda: True)  # the worker ignores it
    assert [name for name, _ in supervisor.running()] == ["worker"]
    assert supervisor.kill() == ["worker"]
    assert worker.returncode == -signal.SIGKILL
    clock.now += 100
    supervisor.poll()
    assert supervisor.running() == [] and said == []


def test_wait_returns_once_every_child_has_exited(
        make: list[Supervisor], clock: Monotonic, said: list[str]) -> None:
    supervisor = supervise(make, [("worker", WAIT_FOREVER)], clock, said)
    supervisor.terminate()
    assert supervisor.wait(clock.now + 1, give_up=lambda: False)  # the clock stands still
    assert supervisor.running() == []


@linux_only
def test_child_pids_are_the_direct_children(tmp_path: Path) -> None:
    code = ("import subprocess, sys; "
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            "print(p.pid, flush=True); p.wait()")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert child_pids(parent.pid) == {child}
        assert child_pids(child) == set()
    finally:
        os.kill(child, signal.SIGKILL)
        parent.wait(30)
    assert not pid_alive(child)


def test_describe_exit() -> None:
    assert describe_exit(0) == "exited with 0"
    assert describe_exit(-9) == "was killed by SIGKILL"
