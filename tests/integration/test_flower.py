"""Flower as ``pitstop flower`` runs it, on a real Redis with a real worker sending task events:
its HTTP API lists the worker and finished pitstop tasks under their names, with secret values
redacted from their arguments, and refuses requests without the login."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from pitstop.connection.server import RedisServer, free_port
from pitstop.kernel.sealing import generate_key
from pitstop.kernel.serverinfo import ServerInfo
from tests.support import FIXTURE_SCRIPTS, ROOT, Proc, run_cli, wait_for, write_script

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LOGIN = ("admin", "flower-test-pw")
SECRET = "tok-flower-canary-5150"


def test_flower_lists_workers_and_pitstop_tasks_redacted_and_needs_its_login(
        tmp_path: Path, own_redis: tuple[RedisServer, ServerInfo]) -> None:
    _, info = own_redis
    for name in ("config", "scripts"):
        (tmp_path / name).mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
    env.update({"PITSTOP_HOME": str(tmp_path), "PITSTOP_REDIS_URL": info.url,
                "PITSTOP_ALLOWED_ROOTS": os.pathsep.join([str(tmp_path / "scripts"),
                                                          str(FIXTURE_SCRIPTS)]),
                "PITSTOP_SECRET_KEY": generate_key(), "PITSTOP_TASK_EVENTS": "1",
                "PITSTOP_FLOWER_BASIC_AUTH": ":".join(LOGIN), "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1"})
    script = write_script(tmp_path, "greet.py", """
        import sys
        print("hello", sys.argv[1:])
    """)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = Proc(["worker", "-Q", "default,linux", "-c", "1", "-n", "flowertest@%h"], env,
                  tmp_path / "worker.log")
    flower = Proc(["flower", "--port", str(port)], env, tmp_path / "flower.log")
    try:
        worker.wait_for_output("ready.", 60)
        wait_for(lambda: _status(f"{base}/healthcheck") == 200, 60, interval=0.2,
                 message="Flower to listen")
        done = run_cli(["run", script, "--wait", "-e", f"DEPLOY_TOKEN={SECRET}", "--",
                        "--token", SECRET, "world"], env)
        assert done.returncode == 0, done.stderr
        smoke = run_cli(["smoke", "--timeout", "1", "-Q", "default"], env)  # a canary task too
        assert "ok   canary" in smoke.stdout, smoke.stdout + smoke.stderr

        # Without the login (or with a wrong one): 401, the API included.
        for path in ("/", "/api/workers", "/api/tasks", "/metrics"):
            assert httpx.get(base + path, timeout=5).status_code == 401, path
        assert httpx.get(f"{base}/api/tasks", auth=("admin", "nope"),
                         timeout=5).status_code == 401

        workers = wait_for(lambda: _workers(base), 30, interval=0.5,
                           message="Flower to list the worker")
        assert any(name.startswith("flowertest@") for name in workers)
        tasks = wait_for(lambda: _finished(base, {"pitstop.run_script", "pitstop.smoke_canary"}),
                         30, interval=0.5, message="Flower to list the finished tasks")
        run = next(task for task in tasks.values() if task["name"] == "pitstop.run_script")
        assert run["state"] == "SUCCESS"
        assert run["worker"].startswith("flowertest@")
        assert "greet.py" in run["kwargs"] and "DEPLOY_TOKEN" in run["kwargs"]
        assert "***" in run["kwargs"]
        page = httpx.get(f"{base}/tasks", auth=LOGIN, timeout=5)
        assert page.status_code == 200
        everything = json.dumps(tasks) + page.text + httpx.get(
            f"{base}/task/{run['uuid']}", auth=LOGIN, timeout=5).text
        assert SECRET not in everything
    finally:
        flower.stop()
        worker.stop()


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.TransportError:
        return None


def _workers(base: str) -> dict[str, Any] | None:
    response = httpx.get(f"{base}/api/workers", params={"refresh": "1"}, auth=LOGIN, timeout=10)
    assert response.status_code == 200, response.text
    value: dict[str, Any] = response.json()
    return value or None


def _finished(base: str, names: set[str]) -> dict[str, Any] | None:
    response = httpx.get(f"{base}/api/tasks", auth=LOGIN, timeout=10)
    assert response.status_code == 200, response.text
    tasks: dict[str, Any] = response.json()
    done = {task.get("name") for task in tasks.values() if task.get("state") == "SUCCESS"}
    return tasks if names <= done else None
