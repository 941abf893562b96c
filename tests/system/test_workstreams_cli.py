"""``pitstop launch --wait``, ``pitstop show`` and ``pitstop runs --workstream`` on workstream
runs, as a user runs them (the session worker executes the steps)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import textwrap
from pathlib import Path

import pytest

from tests.support import Proc, pitstop_cmd, run_cli, wait_for, write_script

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

WORKSTREAMS = """\
workstreams:
  WS-CLI:
    params: {who: fleet, code: "0"}
    steps:
      - id: greet
        kind: run
        params: {script: echo_args.py, args: ["hello {{ params.who }}"]}
      - parallel:
          - {id: check, kind: run, params: {script: exit_code.py, args: ["{{ params.code }}"]}}
          - {id: note, kind: emit, params: {type: cli.noted, data: {by: "{{ params.who }}"}}}
      - {id: done, kind: emit, params: {type: cli.done}}
    on_failure:
      - {id: tell, kind: emit, params: {type: cli.broken}}
  WS-HANG:
    steps:
      - {id: hang, kind: run, params: {script: "{{ params.script }}"}}
    params: {script: null}
"""


@pytest.fixture
def ws_cli_env(pitstop_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """The session's Redis and worker, with a config directory of this test's own."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "workstreams.yaml").write_text(textwrap.dedent(WORKSTREAMS))
    return {**pitstop_env, "PITSTOP_CONFIG_DIR": str(config)}


def test_launch_wait_show_and_runs(session_worker: Proc, ws_cli_env: dict[str, str]) -> None:
    done = run_cli(["launch", "WS-CLI", "--param", "who=world", "--wait"], ws_cli_env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    run_id = lines[0]
    assert re.fullmatch(r"[0-9a-f-]{36}", run_id)
    assert "[greet] [\"hello world\"]" in lines  # the script's own output, live
    assert any(line.startswith("step check: succeeded in") for line in lines)
    assert lines[-1].startswith("workstream WS-CLI: succeeded in")

    shown = run_cli(["show", run_id[-8:]], ws_cli_env)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert f"WS-CLI run {run_id} · succeeded" in out
    assert "params: who=world code=0" in out
    for step in ("greet", "check", "note", "done"):
        assert re.search(rf"{step}\s+succeeded\s+\d+\.\d\ds", out), out
    assert "parallel" in out and "on_failure" in out
    assert re.search(r"tell\s+skipped", out)
    assert "script run " in out  # where the script's own record is
    assert "event cli.done" in out and f"run   WS-CLI {run_id} succeeded <- this run" in out

    listed = run_cli(["runs", "--workstream", "WS-CLI", "--json"], ws_cli_env)
    assert listed.returncode == 0, listed.stderr
    assert run_id in [json.loads(line)["run_id"] for line in listed.stdout.splitlines()]
    assert run_cli(["runs", "--workstream", "NOPE", "--json"], ws_cli_env).stdout == ""


def test_launch_wait_exits_with_the_failing_scripts_code(
        session_worker: Proc, ws_cli_env: dict[str, str]) -> None:
    done = run_cli(["launch", "WS-CLI", "-p", "code=7", "--wait", "--json"], ws_cli_env)
    assert done.returncode == 7, done.stderr
    final = json.loads(done.stdout.splitlines()[-1])
    assert (final["status"], final["exit_code"]) == ("failed", 7)
    assert final["steps"]["tell"]["status"] == "succeeded"
    assert final["steps"]["done"]["status"] == "skipped"


def test_refusals_are_one_line(ws_cli_env: dict[str, str]) -> None:
    unknown = run_cli(["launch", "WS-NOPE"], ws_cli_env)
    assert unknown.returncode == 2
    assert "unknown workstream 'WS-NOPE'" in unknown.stderr
    assert "known: WS-CLI, WS-HANG" in unknown.stderr
    bad = run_cli(["launch", "WS-CLI", "-p", "whom=x"], ws_cli_env)
    assert bad.returncode == 2 and "has no param whom" in bad.stderr
    assert "Traceback" not in unknown.stderr + bad.stderr


def test_ctrl_c_cancels_the_workstream_and_its_script(
        session_worker: Proc, ws_cli_env: dict[str, str], pitstop_home: Path,
        tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = write_script(pitstop_home, "ws_pause.py", f"""
        import os, signal
        open({str(pid_file)!r}, "w").write(str(os.getpid()))
        print("waiting", flush=True)
        signal.pause()
    """)
    waiter = subprocess.Popen(pitstop_cmd("launch", "WS-HANG", "-p", f"script={script}",
                                          "--wait"),
                              env=ws_cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    assert waiter.stdout is not None
    run_id = waiter.stdout.readline().strip()
    wait_for(pid_file.exists, 20, message="the script to start")
    script_pid = int(pid_file.read_text())
    waiter.send_signal(signal.SIGINT)
    _, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 130, err
    shown = run_cli(["show", run_id, "--json"], ws_cli_env)
    assert json.loads(shown.stdout)["status"] == "cancelled"
    from pitstop.kernel.proc import pid_alive

    wait_for(lambda: not pid_alive(script_pid), 10, message="the script to be killed")
    again = run_cli(["cancel", run_id], ws_cli_env)
    assert again.returncode == 1 and "already ended: cancelled" in again.stderr
