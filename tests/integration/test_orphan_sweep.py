"""A whole worker SIGKILLed mid-run: the sweep that finds its scripts' orphans marks the run lost
at once, without waiting for the reaper (scripts.lost_after_seconds)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import redis

from pitstop.fleet.supervisor import mark_orphaned_runs_lost
from pitstop.kernel.proc import Orphan
from pitstop.runs.output import RunOutput
from pitstop.runs.store import RunStore
from tests.support import pid_alive, run_cli, running, wait_for, write_script

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_runs_of_orphans_whose_supervisor_is_dead_are_marked_lost(
        redis_client: redis.Redis) -> None:
    store, output = RunStore(redis_client), RunOutput(redis_client)
    host, gone = socket.gethostname(), dead_pid()

    def running_run(*, host: str, pid: int) -> str:
        run = store.create_run(kind="script", queue="linux")
        store.claim_run(run.run_id, host=host, worker_pid=pid)
        return run.run_id

    ours = running_run(host=host, pid=gone)
    elsewhere = running_run(host="another-machine", pid=gone)  # same pid, other machine
    rerun = running_run(host=host, pid=os.getpid())  # taken again by a live worker process
    orphans = [Orphan(pid=1, run_id=run_id, supervisor=f"{gone}:12345")
               for run_id in (ours, ours, elsewhere, rerun, "no-such-run")]
    marked = mark_orphaned_runs_lost(store, output, orphans, host=host)
    assert [run.run_id for run in marked] == [ours]
    lost = store.get_run(ours)
    assert lost.status == "lost" and f"pid {gone}" in (lost.error or "")
    assert not output.close(ours, status="x", exit_code=None)  # its output has its end already
    assert store.get_run(elsewhere).status == "running"
    assert store.get_run(rerun).status == "running"


def test_a_whole_worker_sigkilled_mid_run_is_lost_when_its_successor_sweeps(
        pitstop_env: dict[str, str], pitstop_home: Path, tmp_path: Path) -> None:
    queue = f"sweep-{uuid.uuid4().hex[:8]}"
    env = {**pitstop_env, "PITSTOP_LOST_AFTER_SECONDS": "60"}  # the reaper would take a minute
    pid_file = tmp_path / "pids"
    path = write_script(pitstop_home, "leaves_a_child.py", """
        import os, signal, subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
        open(sys.argv[1] + ".tmp", "w").write(f"{os.getpid()} {child.pid}")
        os.replace(sys.argv[1] + ".tmp", sys.argv[1])
        signal.pause()
    """)
    store = RunStore(redis.Redis.from_url(env["PITSTOP_REDIS_URL"]))
    worker_args = ["worker", "-Q", queue, "-c", "1", "-n", f"{queue}@%h"]
    grandchild = 0
    try:
        with running(worker_args, env, tmp_path / "worker.log", ready="ready.",
                     timeout=60) as worker:
            sent = run_cli(["run", path, "--queue", queue, "--json", "--", str(pid_file)], env)
            assert sent.returncode == 0, sent.stderr
            run_id = json.loads(sent.stdout.strip().splitlines()[-1])["run_id"]
            wait_for(pid_file.exists, 30, message="the script to start")
            grandchild = int(pid_file.read_text().split()[1])
            worker.kill()  # the whole worker, pool processes included
        killed_at = time.monotonic()
        assert store.get_run(run_id).status == "running"
        with running(worker_args, env, tmp_path / "worker2.log", ready="ready.", timeout=60):
            run = wait_for(lambda: (r := store.get_run(run_id)).status != "running" and r, 30,
                           message="the run to leave running")
            took = time.monotonic() - killed_at
        assert run.status == "lost"
        assert "orphan sweep" in (run.error or "")
        assert took < 30  # not lost_after_seconds (60) after the last heartbeat
        assert not pid_alive(grandchild)
        shown = run_cli(["show", run_id, "--follow"], env, timeout=30)
        assert shown.returncode == 75, shown.stderr  # its output ended: followers stop waiting
    finally:
        if grandchild and pid_alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)
