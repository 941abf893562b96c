"""``pitstop run`` through a real Celery worker and a real Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import uuid
from pathlib import Path

import pytest
import redis

from pitstop.kernel.constants import EVENT_STREAM
from pitstop.runs.store import RunStore
from tests.support import (
    FIXTURE_SCRIPTS,
    Proc,
    gate,
    pid_alive,
    pitstop_cmd,
    run_cli,
    running,
    task_outcome,
    wait_for,
    write_script,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_python_script_output_and_exit_code(session_worker: Proc, pitstop_env: dict[str, str],
                                            pitstop_home: Path) -> None:
    path = write_script(pitstop_home, "echo_exit.py", """
        import sys
        print("args:", sys.argv[1:])
        print("to stderr", file=sys.stderr)
        sys.exit(int(sys.argv[1]))
    """)
    done = run_cli(["run", path, "--wait", "--", "3", "two words"], pitstop_env)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "args: ['3', 'two words']\n"
    assert "to stderr" in done.stderr


def test_celery_and_flower_see_a_failing_script_as_failure(
        session_worker: Proc, pitstop_env: dict[str, str], pitstop_home: Path) -> None:
    path = write_script(pitstop_home, "exit_code.py", """
        import sys
        sys.exit(int(sys.argv[1]))
    """)
    client = redis.Redis.from_url(pitstop_env["PITSTOP_REDIS_URL"])
    log_start = len(session_worker.output())
    states = {}
    for code in ("0", "3"):
        done = run_cli(["run", path, "--wait", "--json", "--", code], pitstop_env)
        assert done.returncode == int(code), done.stderr
        run_id = json.loads(done.stdout.splitlines()[-1])["run_id"]
        outcome = wait_for(lambda rid=run_id: task_outcome(client, rid), 10,
                           message="the task result")
        states[code] = (run_id, outcome)
    assert states["0"][1]["status"] == "SUCCESS"
    assert states["0"][1]["result"]["exit_code"] == 0
    run_id, failed = states["3"]
    assert failed["status"] == "FAILURE"
    assert failed["result"]["exc_type"] == "ScriptFailed"
    [message] = failed["result"]["exc_message"]
    assert re.fullmatch(rf"run {run_id} failed: exit code 3 after \d+\.\d\ds", message), message
    # An expected failure: one log line, not a traceback.
    wait_for(lambda: "raised expected: ScriptFailed" in session_worker.output()[log_start:], 10,
             message="the worker's log line")
    assert "Traceback" not in session_worker.output()[log_start:]


def test_shell_script_runs_non_interactively(session_worker: Proc, pitstop_env: dict[str, str],
                                             pitstop_home: Path) -> None:
    path = write_script(pitstop_home, "ni.sh", """\
        #!/usr/bin/env bash
        echo "NON_INTERACTIVE=$NON_INTERACTIVE"
        if read -r line; then echo "read: $line"; else echo "stdin closed"; fi
    """)
    done = run_cli(["run", path, "--wait"], pitstop_env, input_text="should not be read\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["NON_INTERACTIVE=1", "stdin closed"]


def test_run_without_wait_prints_run_id_and_run_is_recorded(
        session_worker: Proc, pitstop_env: dict[str, str], pitstop_home: Path,
        celery_redis: object) -> None:
    path = write_script(pitstop_home, "quick.py", "print('quick')\n")
    done = run_cli(["run", path], pitstop_env)
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    shown = wait_for(lambda: _terminal_show(run_id, pitstop_env), 30, message="run to finish")
    assert shown["status"] == "succeeded"
    assert shown["exit_code"] == 0
    assert shown["executions"][0]["exit_code"] == 0
    assert shown["finished_at"] >= shown["started_at"]
    human = run_cli(["show", run_id[:13]], pitstop_env)  # a unique prefix is enough
    assert human.returncode == 0, human.stderr
    assert "succeeded" in human.stdout
    assert "quick" in human.stdout  # the output's tail


def test_timeout_over_the_maximum_is_refused(pitstop_env: dict[str, str],
                                             pitstop_home: Path) -> None:
    path = write_script(pitstop_home, "whatever.py", "print('x')\n")
    done = run_cli(["run", path, "--timeout", "99999"], pitstop_env)
    assert done.returncode == 2
    assert "max_timeout" in done.stderr


def _terminal_show(run_id: str, env: dict[str, str]) -> dict[str, object] | None:
    shown = run_cli(["show", run_id, "--json"], env)
    data = json.loads(shown.stdout)
    return data if data["status"] in ("succeeded", "failed", "timed_out") else None


def test_output_streams_while_script_is_still_running(
        session_worker: Proc, pitstop_env: dict[str, str], tmp_path: Path) -> None:
    socket_path = tmp_path / "gate.sock"
    with gate(socket_path) as open_gate:
        proc = subprocess.Popen(
            pitstop_cmd("run", str(FIXTURE_SCRIPTS / "wait_for_gate.py"), "--wait", "--",
                        str(socket_path)),
            env=pitstop_env, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        # The script cannot print "second" before the gate opens, and we open it only after
        # "first" has reached us.
        assert proc.stdout.readline() == "first\n"
        open_gate()
        assert proc.stdout.readline() == "second\n"
    assert proc.wait(30) == 0


def test_timeout_kills_the_whole_process_tree(session_worker: Proc, pitstop_env: dict[str, str],
                                              pitstop_home: Path, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    path = write_script(pitstop_home, "tree.sh", """\
        #!/usr/bin/env bash
        sleep 1000 &
        echo $! >> "$1"
        bash -c 'sleep 1000 & echo $! >> "$0"; wait' "$1" &
        echo $$ >> "$1"
        echo started
        wait
    """)
    done = run_cli(["run", path, "--wait", "--timeout", "1", "--", str(pids)], pitstop_env)
    assert done.returncode == 124, done.stderr
    assert "timed out after 1.0s" in done.stderr
    recorded = [int(line) for line in pids.read_text().split()]
    assert len(recorded) >= 3
    wait_for(lambda: not any(pid_alive(pid) for pid in recorded), 10,
             message="every process of the script to be gone")


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["../../etc/passwd"], "outside the allowed roots"),
        (["/etc/passwd"], "outside the allowed roots"),
        (["--", "-rf"], "may not start with '-'"),
    ],
)
def test_path_escapes_are_refused_before_anything_runs(
        session_worker: Proc, pitstop_env: dict[str, str], argv: list[str], reason: str) -> None:
    done = run_cli(["run", "--wait", *argv], pitstop_env)
    assert done.returncode == 2
    assert reason in done.stderr
    assert "Traceback" not in done.stderr


def test_symlink_out_of_the_roots_is_refused(session_worker: Proc, pitstop_env: dict[str, str],
                                             pitstop_home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.py"
    canary = tmp_path / "ran"
    outside.write_text(f"open({str(canary)!r}, 'w').close()\n")
    link = pitstop_home / "scripts" / f"link-{uuid.uuid4().hex}.py"
    link.symlink_to(outside)
    done = run_cli(["run", str(link), "--wait"], pitstop_env)
    assert done.returncode == 2
    assert "allowed" in done.stderr
    assert not canary.exists()


def test_arguments_are_passed_literally(session_worker: Proc, pitstop_env: dict[str, str],
                                        pitstop_home: Path, tmp_path: Path) -> None:
    canary = tmp_path / "CANARY"
    path = write_script(pitstop_home, "argv.sh", """\
        #!/usr/bin/env bash
        for a in "$@"; do printf '<%s>\\n' "$a"; done
    """)
    tricky = [f"; touch {canary}", f"$(touch {canary})", f"`touch {canary}`",
              f"a\ntouch {canary}", "--flag"]
    done = run_cli(["run", path, "--wait", "--", *tricky], pitstop_env)
    assert done.returncode == 0, done.stderr
    assert not canary.exists()
    assert f"<$(touch {canary})>" in done.stdout
    assert "<--flag>" in done.stdout


def test_canary_secret_never_leaks(session_worker: Proc, pitstop_env: dict[str, str],
                                   pitstop_home: Path, celery_redis: object) -> None:
    canary = f"canary-{uuid.uuid4().hex}"
    path = write_script(pitstop_home, "leak.py", """
        import os, sys
        print("token is", os.environ.get("DEPLOY_TOKEN"))
        print("arg is", sys.argv[1:])
    """)
    env = {**pitstop_env, "DEPLOY_TOKEN": canary}
    done = run_cli(["run", path, "--wait", "--env", "DEPLOY_TOKEN", "--json", "--",
                    f"--token={canary}"], env)
    assert done.returncode == 0, done.stderr
    assert canary not in done.stdout + done.stderr
    assert "***" in done.stdout
    run = json.loads(done.stdout.splitlines()[-1])
    client = redis.Redis.from_url(pitstop_env["PITSTOP_REDIS_URL"])
    # Events, the run record and the Celery result never hold the value.
    entries = client.xrange(EVENT_STREAM)
    assert entries
    assert all(canary.encode() not in value for _, fields in entries for value in fields.values())
    assert canary.encode() not in (client.get(f"pitstop:run:{run['run_id']}") or b"")
    result = wait_for(lambda: task_outcome(client, run["run_id"]), 10, message="the task result")
    assert result["status"] == "SUCCESS"
    assert canary not in json.dumps(result)
    state = Path(pitstop_env["PITSTOP_STATE_DIR"])
    for log in state.glob("*.jsonl"):
        assert canary not in log.read_text(), log.name
    assert canary not in session_worker.output()
    # Nor does any key in Redis: queues, messages, results (it travels sealed).
    assert not [key for key in client.scan_iter() if canary.encode() in _dump(client, key)]


def _dump(client: redis.Redis, key: bytes) -> bytes:
    kind = client.type(key)
    if kind == b"string":
        return client.get(key) or b""
    if kind == b"list":
        return b"".join(client.lrange(key, 0, -1))
    if kind == b"hash":
        return b"".join(k + v for k, v in client.hgetall(key).items())
    if kind == b"set":
        return b"".join(client.smembers(key))
    if kind == b"zset":
        return b"".join(client.zrange(key, 0, -1))
    if kind == b"stream":
        return b"".join(v for _, fields in client.xrange(key) for v in fields.values())
    return b""


def test_secret_env_without_a_shared_key_is_refused(pitstop_env: dict[str, str],
                                                    pitstop_home: Path) -> None:
    path = write_script(pitstop_home, "needs_token.py", "print('ran')\n")
    env = {k: v for k, v in pitstop_env.items() if k != "PITSTOP_SECRET_KEY"}
    env["DEPLOY_TOKEN"] = "secret-value-xyz"
    done = run_cli(["run", path, "--env", "DEPLOY_TOKEN"], env)
    assert done.returncode == 2
    assert "PITSTOP_SECRET_KEY" in done.stderr
    assert "secret-value-xyz" not in done.stderr


def test_a_worker_with_another_key_fails_the_run_clearly(
        pitstop_env: dict[str, str], pitstop_home: Path, tmp_path: Path) -> None:
    from pitstop.kernel.sealing import generate_key

    queue = f"wrongkey-{uuid.uuid4().hex[:8]}"
    path = write_script(pitstop_home, "needs_token2.py", "print('ran')\n")
    worker_env = {**pitstop_env, "PITSTOP_SECRET_KEY": generate_key()}
    with running(["worker", "-Q", queue, "-c", "1", "-n", f"{queue}@%h"], worker_env,
                 tmp_path / "worker.log", ready="ready.", timeout=60):
        env = {**pitstop_env, "DEPLOY_TOKEN": "secret-value-xyz"}
        done = run_cli(["run", path, "--queue", queue, "--env", "DEPLOY_TOKEN", "--wait"], env)
    assert done.returncode == 2
    assert "cannot decrypt" in done.stderr
    assert "ran" not in done.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_ctrl_c_or_a_cancelled_ci_job_cancels_the_remote_run(
        session_worker: Proc, pitstop_env: dict[str, str], pitstop_home: Path, tmp_path: Path,
        sig: signal.Signals) -> None:
    pid_file = tmp_path / "pid"
    path = write_script(pitstop_home, "forever.py", """
        import os, signal, sys
        open(sys.argv[1], "w").write(str(os.getpid()))
        print("running", flush=True)
        signal.pause()
    """)
    proc = subprocess.Popen(pitstop_cmd("run", path, "--wait", "--", str(pid_file)),
                            env=pitstop_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "running\n"
    script_pid = int(pid_file.read_text())
    proc.send_signal(sig)
    assert proc.wait(30) == 130
    wait_for(lambda: not pid_alive(script_pid), 10, message="the script to be killed")


@pytest.mark.timeout(180)
def test_worker_killed_mid_run_ends_lost_not_running_forever(
        pitstop_env: dict[str, str], pitstop_home: Path, tmp_path: Path) -> None:
    queue = f"kill-{uuid.uuid4().hex[:8]}"
    env = {**pitstop_env, "PITSTOP_LOST_AFTER_SECONDS": "3"}
    pid_file = tmp_path / "pid"
    path = write_script(pitstop_home, "long.py", """
        import os, signal, subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", "import signal; signal.pause()"])
        open(sys.argv[1], "w").write(f"{os.getpid()} {child.pid}")
        print("running", flush=True)
        signal.pause()
    """)
    worker_args = ["worker", "-Q", queue, "-c", "1", "-n", f"{queue}@%h"]
    with running(worker_args, env, tmp_path / "worker.log", ready="ready.", timeout=60) as worker:
        waiter = subprocess.Popen(
            pitstop_cmd("run", path, "--queue", queue, "--wait", "--json", "--", str(pid_file)),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert waiter.stdout is not None
        assert waiter.stdout.readline() == "running\n"
        script_pid, grandchild_pid = map(int, pid_file.read_text().split())
        worker.kill()
    out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 75, err
    final = json.loads(out.splitlines()[-1])
    assert final["status"] == "lost"
    store = RunStore(redis.Redis.from_url(env["PITSTOP_REDIS_URL"]))
    assert store.get_run(final["run_id"]).status == "lost"
    # The script does not outlive its worker; what it started dies when a worker next starts here.
    wait_for(lambda: not pid_alive(script_pid), 10, message="the orphaned script to die")
    assert pid_alive(grandchild_pid)
    try:
        with running(worker_args, env, tmp_path / "worker2.log", ready="ready.",
                     timeout=60) as second:
            wait_for(lambda: not pid_alive(grandchild_pid), 20,
                     message="the sweep to kill the script's child")
            second.wait_for_output(f"left behind by run {final['run_id']}")
    finally:
        if pid_alive(grandchild_pid):
            os.kill(grandchild_pid, signal.SIGKILL)


def _start_waiting_run(path: str, queue: str, env: dict[str, str], *extra: str,
                       ) -> subprocess.Popen[str]:
    waiter = subprocess.Popen(
        pitstop_cmd("run", path, "--queue", queue, "--wait", "--json", *extra),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert waiter.stdout is not None
    assert waiter.stdout.readline() == "running\n"
    return waiter


def _kill_pool_process_running(queue: str, env: dict[str, str]) -> None:
    """SIGKILL the pool process that claimed the run on ``queue``; the worker lives on."""
    store = RunStore(redis.Redis.from_url(env["PITSTOP_REDIS_URL"]))
    run = wait_for(lambda: next((r for r in store.list_runs(limit=20)
                                 if r.queue == queue and r.worker_pid), None), 10,
                   message="the run to be claimed")
    assert run.worker_pid is not None
    os.kill(run.worker_pid, signal.SIGKILL)


@pytest.mark.timeout(180)
def test_pool_process_killed_mid_run_is_lost_at_once_not_rerun(
        pitstop_env: dict[str, str], pitstop_home: Path, tmp_path: Path) -> None:
    queue = f"pool-{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "attempts"
    path = write_script(pitstop_home, "count_attempts.py", """
        import signal, sys
        with open(sys.argv[1], "a") as f:
            f.write("x")
        print("running", flush=True)
        signal.pause()
    """)
    with running(["worker", "-Q", queue, "-c", "1", "-n", f"{queue}@%h"], pitstop_env,
                 tmp_path / "worker.log", ready="ready.", timeout=60):
        waiter = _start_waiting_run(path, queue, pitstop_env, "--", str(marker))
        _kill_pool_process_running(queue, pitstop_env)
        out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 75, err
    final = json.loads(out.splitlines()[-1])
    assert final["status"] == "lost"
    assert "died" in final["error"]
    assert marker.read_text() == "x"  # redelivered, but never started twice


@pytest.mark.timeout(180)
def test_idempotent_script_is_rerun_after_its_pool_process_dies(
        pitstop_env: dict[str, str], pitstop_home: Path, tmp_path: Path) -> None:
    queue = f"idem-{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "attempts"
    path = write_script(pitstop_home, "second_time_lucky.py", """
        import signal, sys
        with open(sys.argv[1], "a") as f:
            f.write("x")
        with open(sys.argv[1]) as f:
            attempt = len(f.read())
        print("running", flush=True)
        if attempt == 1:
            signal.pause()
        print(f"attempt {attempt} done", flush=True)
    """)
    with running(["worker", "-Q", queue, "-c", "1", "-n", f"{queue}@%h"], pitstop_env,
                 tmp_path / "worker.log", ready="ready.", timeout=60):
        waiter = _start_waiting_run(path, queue, pitstop_env, "--idempotent", "--",
                                    str(marker))
        _kill_pool_process_running(queue, pitstop_env)
        out, err = waiter.communicate(timeout=60)
    assert waiter.returncode == 0, err
    # the rerun's lines too (the first "running" was read above): the rerun numbers its lines
    # on after the first attempt's, so none of them is taken for a repeat and skipped
    assert out.splitlines()[:2] == ["running", "attempt 2 done"]
    final = json.loads(out.splitlines()[-1])
    assert final["status"] == "succeeded"
    assert final["attempts"] == 2


def test_ctrl_c_while_still_queued_cancels_without_a_worker(
        pitstop_env: dict[str, str], pitstop_home: Path) -> None:
    path = write_script(pitstop_home, "never.py", "print('must not run')\n")
    queue = f"nobody-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(pitstop_cmd("run", path, "--queue", queue, "--wait", "--json"),
                            env=pitstop_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stderr is not None
    assert "queued on" in proc.stderr.readline()
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    final = json.loads(out.splitlines()[-1])
    assert final["status"] == "cancelled"
