"""The ``pitstop`` command itself, in subprocesses, as a user would run it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import redis

from pitstop.kernel.serverinfo import ServerInfo
from pitstop.runs.store import RunStore
from tests.support import ROOT, Proc, pid_alive, pitstop_cmd, run_cli, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]


@pytest.fixture
def fresh_home(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A project directory with no Redis configured: pitstop must use its embedded server."""
    (tmp_path / "config").mkdir()
    (tmp_path / "scripts").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    return tmp_path, env


def test_up_emit_events_watch_doctor_and_clean_shutdown(
        fresh_home: tuple[Path, dict[str, str]]) -> None:
    home, env = fresh_home
    up = Proc(["up", "-c", "1"], env, home / "up.log", cwd=home)
    try:
        up.wait_for_output("Ctrl-C stops everything", 60)
        info = json.loads((home / ".state" / "redis" / "server.json").read_text())
        assert pid_alive(info["pid"])

        watcher = subprocess.Popen(pitstop_cmd("watch", "phase.*.completed", "--count", "1"),
                                   env=env, cwd=home, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        assert watcher.stderr is not None
        assert "watching" in watcher.stderr.readline()

        emitted = run_cli(["emit", "phase.1.tests.completed"], env, cwd=home)  # not matched
        assert emitted.returncode == 0, emitted.stderr
        emitted = run_cli(["emit", "phase.1.completed", "--data", '{"x": 1}', "--json"], env,
                          cwd=home)
        assert emitted.returncode == 0, emitted.stderr
        event = json.loads(emitted.stdout)
        out, _ = watcher.communicate(timeout=30)
        assert watcher.returncode == 0
        assert event["id"] in out
        assert "phase.1.tests.completed" not in out

        history = run_cli(["events"], env, cwd=home)
        assert history.returncode == 0, history.stderr
        assert event["id"] in history.stdout
        assert event["time"] in history.stdout
        assert '{"x": 1}' in history.stdout
        as_json = run_cli(["events", "phase.*.completed", "--json"], env, cwd=home)
        assert [json.loads(line)["id"] for line in as_json.stdout.splitlines()] == [event["id"]]

        doctor = wait_for(lambda: _doctor_ok(env, home), 60, interval=0.5,
                          message="doctor to report healthy")
        assert "workers" in doctor and "beat" in doctor
    finally:
        up.popen.send_signal(signal.SIGINT)
        code = up.popen.wait(60)
        up.stop()
    assert code == 0, up.output()[-3000:]
    assert "stopped" in up.output()
    wait_for(lambda: not pid_alive(info["pid"]), 20, message="embedded redis to stop")


def _doctor_ok(env: dict[str, str], home: Path) -> str | None:
    done = run_cli(["doctor"], env, cwd=home)
    return done.stdout if done.returncode == 0 else None


def test_doctor_lists_problems_and_fails_without_workers(
        fresh_home: tuple[Path, dict[str, str]]) -> None:
    home, env = fresh_home
    try:
        stopped = run_cli(["doctor"], env, cwd=home)
        assert stopped.returncode == 3  # Redis unreachable: as for every other command
        assert "FAIL redis" in stopped.stdout  # doctor reports; it never starts anything
        assert run_cli(["redis", "start"], env, cwd=home).returncode == 0
        done = run_cli(["doctor", "--timeout", "0.5"], env, cwd=home)
        assert done.returncode == 1
        assert "FAIL workers" in done.stdout
        assert "FAIL beat" in done.stdout
        assert "ok   redis" in done.stdout
    finally:
        run_cli(["redis", "stop"], env, cwd=home)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("bus:\n  max_hops: [1\n", "pitstop.yaml:3: invalid YAML"),
        ("bus:\n  unknown_key: 1\n", "pitstop.yaml:2 at bus.unknown_key: unknown key"),
        ("scripts:\n  default_timeout: soon\n", "pitstop.yaml:2 at scripts.default_timeout"),
    ],
)
def test_bad_config_is_a_clear_error_with_exit_code_2(
        fresh_home: tuple[Path, dict[str, str]], yaml_text: str, expected: str) -> None:
    home, env = fresh_home
    (home / "config" / "pitstop.yaml").write_text(yaml_text)
    done = run_cli(["events"], env, cwd=home)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["emit", "phase..completed"], "empty segment"),
        (["emit", "a.b", "--data", "[1]"], "JSON object"),
        (["emit", "a.b", "--data", "{bad"], "not valid JSON"),
        (["emit", "a.b", "--data", json.dumps({"blob": "x" * 70_000})], "over the cap"),
        (["watch", "a..b"], "empty segment"),
    ],
)
def test_bad_input_is_a_clear_error_with_exit_code_2(
        fresh_home: tuple[Path, dict[str, str]], args: list[str], expected: str) -> None:
    home, env = fresh_home
    try:
        done = run_cli(args, env, cwd=home)
        assert done.returncode == 2, done.stderr
        assert expected in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        run_cli(["redis", "stop"], env, cwd=home)


def test_events_accepted_while_nothing_else_runs_are_kept(
        fresh_home: tuple[Path, dict[str, str]]) -> None:
    home, env = fresh_home
    try:
        ids = [json.loads(run_cli(["emit", "build.done", f"n={n}", "--json"], env,
                                  cwd=home).stdout)["id"] for n in range(3)]
        # Restart the embedded server: the events are durable (AOF).
        assert run_cli(["redis", "stop"], env, cwd=home).returncode == 0
        assert run_cli(["redis", "start"], env, cwd=home).returncode == 0  # readers never start it
        listed = run_cli(["events", "--json"], env, cwd=home)
        assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == ids
    finally:
        run_cli(["redis", "stop"], env, cwd=home)


def test_log_command_reads_state_logs(fresh_home: tuple[Path, dict[str, str]]) -> None:
    home, env = fresh_home
    state = home / ".state"
    state.mkdir()
    (state / "runs.jsonl").write_text(
        '{"schema": "pitstop.runs.store/1", "ts": "2026-01-01T00:00:00Z", "op": "create"}\n'
        '{"schema": "pitstop.runs.store/1", "ts": "2026-01-02T00:00:00Z", "op": "update"}\n'
        '{"schema": "pitstop.runs.store/1", "ts": "2026-01-0'  # torn last line from a crash
    )
    done = run_cli(["log", "runs", "--grep", "update"], env, cwd=home)
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["op"] for line in done.stdout.splitlines()] == ["update"]
    missing = run_cli(["log", "nope"], env, cwd=home)
    assert missing.returncode == 2
    assert "no state log" in missing.stderr


def test_up_restarts_a_killed_redis_and_work_goes_on(
        fresh_home: tuple[Path, dict[str, str]]) -> None:
    home, env = fresh_home
    script = home / "scripts" / "ok.py"
    script.write_text("print('still working')\n")
    up = Proc(["up", "-c", "1"], env, home / "up.log", cwd=home)
    try:
        up.wait_for_output("Ctrl-C stops everything", 60)
        first = json.loads((home / ".state" / "redis" / "server.json").read_text())
        os.kill(first["pid"], signal.SIGKILL)
        up.wait_for_output("restarting it on port", 30)
        second = wait_for(lambda: _server_info_if_changed(home, first["pid"]), 30,
                          message="a new embedded redis")
        assert second["port"] == first["port"]
        emitted = run_cli(["emit", "after.restart"], env, cwd=home)
        assert emitted.returncode == 0, emitted.stderr
        # The worker reconnects on its own and runs scripts again.
        done = wait_for(lambda: _run_ok(env, home, script), 90, interval=0.5,
                        message="a script run after the restart")
        assert "still working" in done
    finally:
        up.popen.send_signal(signal.SIGINT)
        code = up.popen.wait(60)
        up.stop()
    assert code == 0, up.output()[-3000:]


def _server_info_if_changed(home: Path, old_pid: int) -> dict[str, int] | None:
    try:
        info: dict[str, int] = json.loads((home / ".state" / "redis" / "server.json").read_text())
    except (OSError, ValueError):
        return None
    return info if info["pid"] != old_pid and pid_alive(info["pid"]) else None


def _run_ok(env: dict[str, str], home: Path, script: Path) -> str | None:
    try:
        done = run_cli(["run", str(script), "--wait", "--timeout", "20"], env, cwd=home,
                       timeout=30)
    except subprocess.TimeoutExpired:
        return None
    return done.stdout if done.returncode == 0 else None


def test_events_and_runs_tables_print_markup_like_text_verbatim(
        pitstop_env: dict[str, str], celery_redis: ServerInfo) -> None:
    # Rich would read "[/]" as a closing tag and crash with MarkupError; "[bold]" would vanish.
    emitted = run_cli(["emit", "markup.check", "--source", "ci[/]runner[bold]",
                       "--data", json.dumps({"note": "[/] and [bold]x[/bold]"})], pitstop_env)
    assert emitted.returncode == 0, emitted.stderr
    listed = run_cli(["events", "markup.*"], pitstop_env)
    assert listed.returncode == 0, listed.stderr
    assert "ci[/]runner[bold]" in listed.stdout
    assert "[/] and [bold]x[/bold]" in listed.stdout

    client = redis.Redis.from_url(celery_redis.url)
    try:
        RunStore(client).create_run(kind="script", queue="linux",
                                    params={"script": "scripts/[/]odd[bold].sh"})
    finally:
        client.close()
    runs = run_cli(["runs", "--limit", "3"], pitstop_env)
    assert runs.returncode == 0, runs.stderr
    assert "scripts/[/]odd[bold].sh" in runs.stdout


def test_runs_and_show_escape_terminal_control_sequences(
        pitstop_env: dict[str, str], celery_redis: ServerInfo) -> None:
    evil = "scripts/x\x1b]0;pwned\x07\x1b[2J\r\u202eevil\x9b31m.sh"
    client = redis.Redis.from_url(celery_redis.url)
    try:
        store = RunStore(client)
        run = store.create_run(kind="script", queue="lin\x1b[5mux", params={"script": evil})
        store.update_run(run.run_id, status="failed", host="h\x1b[2Jost",
                         error=f"script {evil!s} not found")
    finally:
        client.close()
    listed = run_cli(["runs", "--limit", "5"], pitstop_env)
    shown = run_cli(["show", run.run_id], pitstop_env)
    for done in (listed, shown):
        assert done.returncode == 0, done.stderr
        assert not any(c in done.stdout for c in "\x1b\x07\x9b\r\u202e"), done.stdout
    assert "x\\x1b]0;pwned\\x07\\x1b[2J" in listed.stdout.replace("\n", "")
    assert "h\\x1b[2Jost" in listed.stdout
    assert "\\x1b[2J\\r\\u202eevil" in shown.stdout


def test_a_bad_env_name_is_refused_without_echoing_the_value(pitstop_env: dict[str, str]
                                                             ) -> None:
    done = run_cli(["run", "scripts/hello.sh", "--env", "DEPLOY-TOKEN=ghp_s3cretvalue"],
                   pitstop_env)
    assert done.returncode == 2, done.stderr
    assert "DEPLOY-TOKEN" in done.stderr
    assert "ghp_s3cretvalue" not in done.stderr + done.stdout
