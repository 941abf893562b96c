"""Coming back to a run: ``pitstop show --follow`` and ``pitstop cancel``."""

from __future__ import annotations

import json
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
import redis

from pitstop.runs.store import RunStore
from tests.support import Proc, pid_alive, pitstop_cmd, run_cli, wait_for, write_script

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

WAITS_FOREVER = """
    import os, signal, sys
    open(sys.argv[1], "w").write(str(os.getpid()))
    print("running", flush=True)
    signal.pause()
"""


def start_run(env: dict[str, str], *args: str) -> str:
    done = run_cli(["run", "--json", *args], env)
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    assert isinstance(run_id, str)
    return run_id


def store(env: dict[str, str]) -> RunStore:
    return RunStore(redis.Redis.from_url(env["PITSTOP_REDIS_URL"]))


def follow(env: dict[str, str], run_id: str) -> subprocess.Popen[str]:
    return subprocess.Popen(pitstop_cmd("show", run_id[:12], "--follow"), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_follow_then_cancel_a_running_run(session_worker: Proc, pitstop_env: dict[str, str],
                                          pitstop_home: Path, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    path = write_script(pitstop_home, "forever.py", WAITS_FOREVER)
    run_id = start_run(pitstop_env, path, "--", str(pid_file))

    follower = follow(pitstop_env, run_id)
    assert follower.stdout is not None
    assert follower.stdout.readline() == "running\n"  # live, from a second process
    script_pid = int(pid_file.read_text())

    done = run_cli(["cancel", run_id, "--wait"], pitstop_env)
    assert done.returncode == 0, done.stderr
    assert f"run {run_id} cancelled" in done.stderr
    assert follower.wait(30) == 130  # the follower ends with the run's exit code
    assert store(pitstop_env).get_run(run_id).status == "cancelled"
    wait_for(lambda: not pid_alive(script_pid), 10, message="the script to be killed")

    again = run_cli(["cancel", run_id], pitstop_env)
    assert again.returncode == 1
    assert f"run {run_id} already ended: cancelled" in again.stderr


def test_ctrl_c_on_a_follower_never_cancels_the_run(
        session_worker: Proc, pitstop_env: dict[str, str], pitstop_home: Path,
        tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    path = write_script(pitstop_home, "forever2.py", WAITS_FOREVER)
    run_id = start_run(pitstop_env, path, "--", str(pid_file))
    follower = follow(pitstop_env, run_id)
    assert follower.stdout is not None
    assert follower.stdout.readline() == "running\n"
    follower.send_signal(signal.SIGINT)
    assert follower.wait(30) == 130
    assert store(pitstop_env).get_run(run_id).status == "running"
    assert pid_alive(int(pid_file.read_text()))
    assert run_cli(["cancel", run_id, "--wait"], pitstop_env).returncode == 0


def test_follow_a_finished_run_replays_its_output_and_exit_code(
        session_worker: Proc, pitstop_env: dict[str, str], pitstop_home: Path) -> None:
    path = write_script(pitstop_home, "three.py", """
        import sys
        print("one"); print("two", file=sys.stderr)
        sys.exit(3)
    """)
    run_id = start_run(pitstop_env, path)
    wait_for(lambda: store(pitstop_env).get_run(run_id).terminal, 30, message="the run to end")
    done = run_cli(["show", run_id, "--follow"], pitstop_env)
    assert done.returncode == 3
    assert done.stdout == "one\n"
    assert "two\n" in done.stderr


def test_cancel_a_queued_run_before_any_worker_takes_it(
        pitstop_env: dict[str, str], pitstop_home: Path, tmp_path: Path) -> None:
    canary = tmp_path / "ran"
    path = write_script(pitstop_home, "never.py", f"open({str(canary)!r}, 'w').close()\n")
    run_id = start_run(pitstop_env, path, "--queue", f"nobody-{uuid.uuid4().hex[:8]}")

    done = run_cli(["cancel", run_id[:16]], pitstop_env)
    assert done.returncode == 0, done.stderr
    assert "cancelled before it started" in done.stderr
    final = store(pitstop_env).get_run(run_id)
    assert (final.status, final.error) == ("cancelled", "cancelled before it started")
    # Its output stream is closed, so a follower ends at once with the cancel code.
    assert run_cli(["show", run_id, "--follow"], pitstop_env, timeout=20).returncode == 130
    assert not canary.exists()


def test_cancel_an_unknown_run_is_a_clear_error(pitstop_env: dict[str, str]) -> None:
    done = run_cli(["cancel", "no-such-run-id"], pitstop_env)
    assert done.returncode == 4  # the exit-code table's "not found"
    assert "no run 'no-such-run-id'" in done.stderr


def test_a_mistyped_option_is_an_error_not_a_script_argument(
        pitstop_env: dict[str, str], pitstop_home: Path) -> None:
    path = write_script(pitstop_home, "typo.py", "print('ran')\n")
    client = redis.Redis.from_url(pitstop_env["PITSTOP_REDIS_URL"])
    before = len(RunStore(client).list_runs(limit=1000))
    done = run_cli(["run", path, "--wiat", "--timout", "5"], pitstop_env)
    assert done.returncode == 2
    assert "No such option '--wiat'. Did you mean '--wait'?" in done.stderr
    assert len(RunStore(client).list_runs(limit=1000)) == before  # nothing was enqueued


def test_show_output_and_cancel_accept_the_random_end_of_an_id(
        session_worker: Proc, pitstop_env: dict[str, str], pitstop_home: Path) -> None:
    path = write_script(pitstop_home, "two_lines.py", "print('first'); print('second')\n")
    run_id = start_run(pitstop_env, "-Q", "linux", path)  # -Q as for workers
    wait_for(lambda: store(pitstop_env).get_run(run_id).terminal, 30, message="the run to end")
    for part in (run_id[-8:], run_id[:20]):
        shown = run_cli(["show", part, "--output"], pitstop_env)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.endswith("first\nsecond\n")
    assert run_cli(["show", run_id[-3:]], pitstop_env).returncode == 4  # too short to guess
    unknown = run_cli(["show", "no-such-run-id"], pitstop_env)
    assert unknown.returncode == 4, unknown.stderr  # not found, as the exit-code table says
    assert "no run 'no-such-run-id'" in unknown.stderr


def test_two_quick_ctrl_cs_still_cancel_the_run(
        session_worker: Proc, pitstop_env: dict[str, str], pitstop_home: Path,
        tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    path = write_script(pitstop_home, "forever3.py", WAITS_FOREVER)
    waiter = subprocess.Popen(pitstop_cmd("run", path, "--wait", "--", str(pid_file)),
                              env=pitstop_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    assert waiter.stdout is not None and waiter.stderr is not None
    assert waiter.stdout.readline() == "running\n"
    run_id = waiter.stderr.readline().split()[2]  # "pitstop: run <id> queued on 'linux'"
    script_pid = int(pid_file.read_text())
    waiter.send_signal(signal.SIGINT)
    waiter.send_signal(signal.SIGINT)  # before the follow loop got round to the first
    assert waiter.wait(30) == 130
    final = wait_for(lambda: (r := store(pitstop_env).get_run(run_id)).terminal and r, 30,
                     message="the run to be cancelled")
    assert final.status == "cancelled"
    wait_for(lambda: not pid_alive(script_pid), 10, message="the script to be killed")
