"""Which project a command works on, and what read-only commands leave running."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitstop.connection.server import RedisServer
from pitstop.kernel.proc import pid_alive
from pitstop.kernel.serverinfo import SERVER_INFO_FILE
from tests.support import ROOT, run_cli

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

NOT_RUNNING = "(no embedded Redis): start it with `pitstop up`, or set PITSTOP_REDIS_URL"


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A project (config/pitstop.yaml, scripts/) with no Redis configured. Every embedded Redis
    started under ``tmp_path`` (the project's, or a stray one a bug started) is stopped after."""
    home = tmp_path / "proj"
    (home / "config").mkdir(parents=True)
    (home / "config" / "pitstop.yaml").write_text("state_dir: .state\nlog_level: info\n")
    (home / "scripts").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
    env["PYTHONPATH"] = str(ROOT)
    try:
        yield home, env
    finally:
        for info in tmp_path.rglob(SERVER_INFO_FILE):
            RedisServer(info.parent).stop()


def test_read_only_commands_never_start_redis(project: tuple[Path, dict[str, str]]) -> None:
    home, env = project
    server_json = home / ".state" / "redis" / "server.json"
    for args in (["runs"], ["show", "0123456789"], ["events"], ["watch", "--timeout", "1"],
                 ["cancel", "0123456789"]):
        done = run_cli(args, env, cwd=home / "scripts")
        assert done.returncode == 3, (args, done.stdout, done.stderr)
        assert done.stderr.strip() == (
            f"pitstop: error: pitstop is not running in {home} {NOT_RUNNING}"), args
        assert not server_json.exists(), args
    logs = run_cli(["log"], env, cwd=home)
    assert logs.returncode == 0, logs.stderr
    assert not server_json.exists()
    # A command that writes still starts it, and then the readers find it.
    emitted = run_cli(["emit", "phase.1.completed", "--json"], env, cwd=home)
    assert emitted.returncode == 0, emitted.stderr
    assert pid_alive(json.loads(server_json.read_text())["pid"])
    listed = run_cli(["runs"], env, cwd=home)
    assert listed.returncode == 0, listed.stderr
    assert "no runs yet" in listed.stderr


def test_commands_in_a_subdirectory_use_the_project(project: tuple[Path, dict[str, str]],
                                                    tmp_path: Path) -> None:
    home, env = project
    emitted = run_cli(["emit", "phase.1.completed", "--json"], env, cwd=home)
    assert emitted.returncode == 0, emitted.stderr
    event_id = json.loads(emitted.stdout)["id"]

    below = run_cli(["events", "--json"], env, cwd=home / "scripts")
    assert below.returncode == 0, below.stderr
    assert [json.loads(line)["id"] for line in below.stdout.splitlines()] == [event_id]
    assert not (home / "scripts" / ".state").exists()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    homed = run_cli(["events", "--json"], {**env, "PITSTOP_HOME": str(home)}, cwd=elsewhere)
    assert homed.returncode == 0, homed.stderr
    assert event_id in homed.stdout
    assert not (elsewhere / ".state").exists()

    doctor = run_cli(["doctor", "--timeout", "0.2"], env, cwd=home / "scripts")
    assert f"valid ({home / 'config' / 'pitstop.yaml'}; project {home})" in doctor.stdout


def test_doctor_outside_a_project_says_it_uses_the_defaults(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
    env["PYTHONPATH"] = str(ROOT)
    done = run_cli(["doctor"], env, cwd=tmp_path)
    assert done.returncode == 3  # nothing runs here: no Redis
    config_line = next(line for line in done.stdout.splitlines() if " config " in line)
    assert config_line.startswith("ok")
    assert (f"no config file at {tmp_path / 'config' / 'pitstop.yaml'}: built-in defaults "
            f"(project {tmp_path})") in config_line
    assert NOT_RUNNING in done.stdout
    assert list(tmp_path.iterdir()) == []  # doctor creates nothing, not even .state/
