"""Finding processes left behind by scripts whose worker died, on a fake and a real /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pitstop.kernel.proc import (
    RUN_ID_ENV,
    SUPERVISOR_ENV,
    find_orphans,
    start_time,
    supervisor_token,
    sweep_orphans,
)
from tests.support import pid_alive, wait_for

pytestmark = pytest.mark.timeout(30)

linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")


def fake_process(root: Path, pid: int, *, start: int = 100, state: str = "S",
                 env: dict[str, str] | None = None, comm: str = "python") -> None:
    entry = root / str(pid)
    entry.mkdir()
    # field 22 (starttime) is the 20th after "(comm)"
    after = [state, "1", *(["0"] * 17), str(start), "0"]
    (entry / "stat").write_text(f"{pid} ({comm}) {' '.join(after)}\n")
    if env is not None:
        (entry / "environ").write_bytes(b"".join(f"{k}={v}".encode() + b"\0"
                                                 for k, v in env.items()))


@pytest.fixture
def proc_root(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    root.mkdir()
    (root / "self").mkdir()  # non-numeric entries are ignored
    fake_process(root, 10, start=500)                       # a live supervisor
    return root


@pytest.mark.parametrize(("env", "orphan"), [
    ({SUPERVISOR_ENV: "10:500", RUN_ID_ENV: "r1"}, False),   # supervisor alive
    ({SUPERVISOR_ENV: "11:500", RUN_ID_ENV: "r1"}, True),    # supervisor gone
    ({SUPERVISOR_ENV: "10:499", RUN_ID_ENV: "r1"}, True),    # pid 10 now names another process
    ({SUPERVISOR_ENV: "11", RUN_ID_ENV: "r1"}, True),        # no start time known: pid only
    ({SUPERVISOR_ENV: "10", RUN_ID_ENV: "r1"}, False),
    ({SUPERVISOR_ENV: "garbage"}, False),                    # not ours to judge
    ({"PATH": "/bin"}, False),                               # not a script's process
    ({}, False),
])
def test_orphan_is_a_marked_process_whose_supervisor_is_gone(
        proc_root: Path, env: dict[str, str], orphan: bool) -> None:
    fake_process(proc_root, 20, env=env)
    found = find_orphans(proc_root)
    assert [o.pid for o in found] == ([20] if orphan else [])
    if orphan:
        assert found[0].run_id == env.get(RUN_ID_ENV)
        assert found[0].supervisor == env[SUPERVISOR_ENV]


def test_zombies_and_unreadable_processes_are_skipped(proc_root: Path) -> None:
    fake_process(proc_root, 21, state="Z", env={SUPERVISOR_ENV: "11:1"})
    fake_process(proc_root, 22, env=None)  # environ of another user's process: unreadable
    fake_process(proc_root, 23, env={SUPERVISOR_ENV: "11:1"}, comm="evil) Z (name")
    assert [o.pid for o in find_orphans(proc_root)] == [23]


def test_a_supervisor_that_became_a_zombie_is_gone(proc_root: Path) -> None:
    fake_process(proc_root, 12, start=7, state="Z")
    fake_process(proc_root, 24, env={SUPERVISOR_ENV: "12:7", RUN_ID_ENV: "r"})
    assert [o.pid for o in find_orphans(proc_root)] == [24]


@pytest.mark.parametrize(("status", "killed"), [
    ("running", True), ("lost", True),
    ("succeeded", False), ("failed", False), ("cancelled", False), ("timed_out", False),
    (None, False),  # run unknown here (expired, or another Redis)
])
def test_sweep_kills_only_orphans_of_in_flight_runs(
        proc_root: Path, status: str | None, killed: bool) -> None:
    fake_process(proc_root, 30, env={SUPERVISOR_ENV: "11:5", RUN_ID_ENV: "run-1"})
    fake_process(proc_root, 31, env={SUPERVISOR_ENV: "11:5"})  # no run id: never killed
    kills: list[tuple[int, int]] = []
    asked: list[str] = []

    def run_status(run_id: str) -> str | None:
        asked.append(run_id)
        return status

    swept = sweep_orphans(run_status, proc_root, kill=lambda pid, sig: kills.append((pid, sig)))
    assert asked == ["run-1"]
    assert kills == ([(30, signal.SIGKILL)] if killed else [])
    assert [o.pid for o in swept] == ([30] if killed else [])


def test_a_process_that_vanished_meanwhile_is_not_reported(proc_root: Path) -> None:
    fake_process(proc_root, 32, env={SUPERVISOR_ENV: "11:5", RUN_ID_ENV: "r"})

    def gone(pid: int, sig: int) -> None:
        raise ProcessLookupError(pid)

    assert sweep_orphans(lambda _: "lost", proc_root, kill=gone) == []


@linux_only
def test_real_orphan_found_after_its_supervisor_dies(tmp_path: Path) -> None:
    """A supervisor process starts a marked child, then dies; the child is an orphan."""
    pid_file = tmp_path / "child"
    supervisor = subprocess.Popen([sys.executable, "-c", f"""
import os, subprocess, sys
from pitstop.kernel.proc import supervisor_token
env = dict(os.environ, {SUPERVISOR_ENV}=supervisor_token(), {RUN_ID_ENV}="run-real")
child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"], env=env,
                         start_new_session=True)
open({str(pid_file)!r}, "w").write(str(child.pid))
sys.stdin.read()  # lives until the test closes stdin
"""], stdin=subprocess.PIPE)
    child = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 10,
                         message="the marked child"))
    try:
        assert child not in [o.pid for o in find_orphans()]  # its supervisor lives
        assert supervisor.stdin is not None
        supervisor.stdin.close()
        supervisor.wait(10)
        assert [(o.pid, o.run_id) for o in find_orphans() if o.pid == child] == [(child, "run-real")]
        swept = sweep_orphans(lambda rid: "lost" if rid == "run-real" else None)
        assert [o.pid for o in swept] == [child]
        wait_for(lambda: not pid_alive(child), 10, message="the orphan to die")
    finally:
        if pid_alive(child):
            os.kill(child, signal.SIGKILL)


@linux_only
def test_supervisor_token_names_this_process() -> None:
    token = supervisor_token()
    assert token == f"{os.getpid()}:{start_time(os.getpid())}"
    assert start_time(2**22 + 12345) is None


@linux_only
def test_group_alive_until_its_last_member_is_gone_or_a_zombie() -> None:
    from pitstop.kernel.proc import group_alive

    leader = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"],
                              start_new_session=True)
    try:
        assert group_alive(leader.pid)
        os.kill(leader.pid, signal.SIGKILL)
        wait_for(lambda: not group_alive(leader.pid), 10, message="the group to be gone")
    finally:
        leader.kill()
        leader.wait(10)
    assert not group_alive(leader.pid)


def test_stat_fields_survive_a_command_name_with_parentheses(proc_root: Path) -> None:
    from pitstop.kernel.proc import stat_fields

    fake_process(proc_root, 40, start=77, comm="a) b (c")
    fields = stat_fields(40, proc_root)
    assert fields is not None and fields[0] == "S" and fields[19] == "77"
    assert stat_fields(41, proc_root) is None
