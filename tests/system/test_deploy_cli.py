"""``pitstop deploy`` as a user runs it: rollback on a failed smoke check and the history showing
both, a concurrent deployment refused, a production deployment waiting for its approval."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import redis

from pitstop.connection.server import RedisServer
from pitstop.kernel.constants import DEPLOY_LOCK_PREFIX
from pitstop.kernel.serverinfo import ServerInfo
from tests.support import ROOT, Proc, run_cli

pytestmark = [pytest.mark.system, pytest.mark.timeout(90)]

DEPLOY_SH = """#!/bin/sh
# Holds until the test says go when asked to (a long deployment), then records the version.
if [ -n "$HOLD" ] && [ "$1" = "$HOLD" ]; then
  echo "holding $1"
  while [ ! -e "$GO" ]; do sleep 0.05; done
fi
echo "$1" > "$STATE"
"""
CHECK_SH = """#!/bin/sh
case "$(cat "$STATE")" in *broken*) echo "service answers 500" >&2; exit 1;; esac
"""


@pytest.fixture
def home(tmp_path: Path, own_redis: tuple[RedisServer, ServerInfo]) -> tuple[Path, dict[str, str]]:
    _, info = own_redis
    (tmp_path / "scripts").mkdir()
    (tmp_path / "config").mkdir()
    for name, body in (("deploy.sh", DEPLOY_SH), ("check.sh", CHECK_SH)):
        (tmp_path / "scripts" / name).write_text(body)
        (tmp_path / "scripts" / name).chmod(0o755)
    state, go = tmp_path / "version", tmp_path / "go"
    command = (f'{{script: deploy.sh, args: ["{{version}}"], env: {{STATE: "{state}", '
               f'GO: "{go}", HOLD: "${{HOLD:-}}"}}}}')
    (tmp_path / "config" / "deployments.yaml").write_text(f"""
environments:
  staging:
    deploy: {command}
    rollback: {command}
    smoke:
      - {{name: service, script: check.sh, env: {{STATE: "{state}"}}}}
  production:
    deploy: {command}
    smoke:
      - {{name: service, script: check.sh, env: {{STATE: "{state}"}}}}
    approval: {{required: true, approvers: [bob], timeout: 300}}
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
    env.update({"PITSTOP_HOME": str(tmp_path), "PITSTOP_REDIS_URL": info.url,
                "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "PITSTOP_USER": "alice"})
    return tmp_path, env


def test_a_failed_smoke_check_rolls_back_and_the_history_shows_both(
        home: tuple[Path, dict[str, str]]) -> None:
    path, env = home
    first = run_cli(["deploy", "staging", "--version", "1.0"], env)
    assert first.returncode == 0, first.stderr
    assert "staging  deploy 1.0  succeeded" in first.stdout
    bad = run_cli(["deploy", "staging", "--version", "1.1-broken"], env)
    assert bad.returncode == 1, bad.stderr
    assert "rolled_back" in bad.stdout and "smoke check failed: service" in bad.stdout
    assert "rolling staging back to 1.0" in bad.stderr
    assert (path / "version").read_text().strip() == "1.0"

    history = run_cli(["deploy", "history", "staging"], env)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert "deploy 1.1-broken  rolled_back  (previous 1.0)" in lines[0]
    assert "by alice" in lines[0]
    assert any("FAIL smoke" in line and "service answers 500" in line for line in lines)
    assert any("ok   rollback_smoke" in line for line in lines)
    assert any("deploy 1.0  succeeded" in line for line in lines)
    status = run_cli(["deploy", "status"], env)
    assert "staging" in status.stdout and "current 1.0" in status.stdout


def test_a_second_deploy_during_the_first_is_refused_with_a_clear_message(
        home: tuple[Path, dict[str, str]]) -> None:
    path, env = home
    client = redis.Redis.from_url(env["PITSTOP_REDIS_URL"])
    first = Proc(["deploy", "staging", "--version", "2.0"], {**env, "HOLD": "2.0"},
                 path / "first.log")
    try:
        first.wait_for_output("holding 2.0", 30)
        assert client.exists(f"{DEPLOY_LOCK_PREFIX}staging")
        second = run_cli(["deploy", "staging", "--version", "2.1"], env)
        assert second.returncode == 1
        assert "refused: staging is being deployed by deployment" in second.stderr
        assert "deploy of 2.0 by alice" in second.stderr
        assert "Traceback" not in second.stderr
        (path / "go").touch()
        assert first.popen.wait(30) == 0, first.output()
    finally:
        first.stop()
    assert (path / "version").read_text().strip() == "2.0"  # never interleaved
    history = run_cli(["deploy", "history", "staging", "--json"], env).stdout.splitlines()
    assert [(json.loads(line)["version"], json.loads(line)["status"]) for line in history] == [
        ("2.1", "refused"), ("2.0", "succeeded")]


def test_a_production_deploy_waits_for_its_approval(home: tuple[Path, dict[str, str]]) -> None:
    path, env = home
    waiting = Proc(["deploy", "production", "--version", "3.0"], env, path / "prod.log")
    try:
        waiting.wait_for_output("waiting for approval", 30)
        assert not (path / "version").exists()  # nothing deployed yet
        line = next(line for line in waiting.output().splitlines() if "awaits approval" in line)
        deployment_id = line.split()[1]
        own = run_cli(["deploy", "approve", deployment_id], env)  # alice requested it
        assert own.returncode == 2 and "not approve" in own.stderr
        approved = run_cli(["deploy", "approve", deployment_id, "--as", "bob"], env)
        assert approved.returncode == 0, approved.stderr
        assert waiting.popen.wait(30) == 0, waiting.output()
    finally:
        waiting.stop()
    assert "production  deploy 3.0  succeeded" in waiting.output()
    assert (path / "version").read_text().strip() == "3.0"
