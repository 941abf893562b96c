"""What someone who can enqueue runs (or write task messages into Redis) still cannot do."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from pitstop.kernel.constants import RUN_INDEX, TASK_RUN_SCRIPT
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.settings import load_settings
from pitstop.runs.store import Run, RunStore
from pitstop.scripts.dispatch import ScriptDispatcher
from tests.support import Proc, run_cli, wait_for, write_script
from workers.app import create_app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CANARY_TOKEN = "canary-token-7f3a9c2e"


@pytest.fixture
def celery_app(pitstop_env: dict[str, str], pitstop_home: Path) -> Iterator[Celery]:
    settings = load_settings(pitstop_home / "config", environ=pitstop_env)
    app = create_app(settings, pitstop_env["PITSTOP_REDIS_URL"])
    try:
        yield app
    finally:
        app.close()


def _ended(store: RunStore, run_id: str) -> Run:
    return wait_for(lambda: (r := store.get_run(run_id)).terminal and r, 30,
                    message=f"run {run_id} to end")


def test_env_that_would_run_other_code_is_refused_at_the_front_door(
        pitstop_env: dict[str, str], pitstop_home: Path, tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    path = write_script(pitstop_home, "plain.sh", "echo plain\n")
    done = run_cli(["run", path, "--wait", "--env", f"BASH_ENV=$(touch {canary})"], pitstop_env)
    assert done.returncode == 2
    assert "--env BASH_ENV: may not be set" in done.stderr
    assert "touch" not in done.stderr  # the value is not echoed
    assert not canary.exists()


def test_forged_messages_cannot_reuse_sealed_secrets_or_inject_env(
        session_worker: Proc, pitstop_env: dict[str, str], pitstop_home: Path,
        tmp_path: Path, celery_app: Celery) -> None:
    settings = load_settings(pitstop_home / "config", environ=pitstop_env)
    store = RunStore(redis.Redis.from_url(pitstop_env["PITSTOP_REDIS_URL"]))
    sent: list[dict[str, object]] = []

    def send(name: str, **options: object) -> None:
        sent.append(options)
        celery_app.send_task(name, **options)

    deploy = write_script(pitstop_home, "deploy.py", "print('deployed')\n")
    leak = write_script(pitstop_home, "leak.py", """
        import os
        print("token:", os.environ.get("DEPLOY_TOKEN"))
    """)
    dispatcher = ScriptDispatcher(settings, store, Redactor(), send)
    legit = dispatcher.enqueue(deploy, env={"DEPLOY_TOKEN": CANARY_TOKEN})
    assert _ended(store, legit.run_id).status == "succeeded"
    sealed = sent[0]["kwargs"]["sealed_env"]  # type: ignore[index]
    assert sealed and CANARY_TOKEN not in json.dumps(sent[0]["kwargs"])

    # Someone with the Redis password copies the sealed blob into a message of their own.
    stolen = store.create_run(kind="script", queue="linux")
    celery_app.send_task(TASK_RUN_SCRIPT, queue="linux", task_id=stolen.run_id, kwargs={
        "run_id": stolen.run_id, "script": leak, "args": [], "env": {}, "sealed_env": sealed})
    refused = _ended(store, stolen.run_id)
    assert refused.status == "failed"
    assert "sealed for another run" in (refused.error or "")
    assert refused.executions == []  # nothing ran

    # Or writes a plain message that sets the loader's environment.
    canary = tmp_path / "pwned"
    forged = store.create_run(kind="script", queue="linux")
    celery_app.send_task(TASK_RUN_SCRIPT, queue="linux", task_id=forged.run_id, kwargs={
        "run_id": forged.run_id, "script": str(pitstop_home / "scripts" / "deploy.py"),
        "args": [], "env": {"PYTHONSTARTUP": str(canary), "PYTHONINSPECT": "1",
                            "LD_PRELOAD": str(tmp_path / "evil.so")}})
    injected = _ended(store, forged.run_id)
    assert injected.status == "failed"
    assert "--env LD_PRELOAD, PYTHONINSPECT, PYTHONSTARTUP: may not be set" in (injected.error or "")
    assert injected.executions == []

    # Or names that are no loader variable but still run code: only the worker's own
    # scripts.caller_env decides what a message may set.
    home = tmp_path / "home"
    planted = store.create_run(kind="script", queue="linux")
    celery_app.send_task(TASK_RUN_SCRIPT, queue="linux", task_id=planted.run_id, kwargs={
        "run_id": planted.run_id, "script": str(pitstop_home / "scripts" / "deploy.py"),
        "args": [], "env": {"HOME": str(home), "CC": f"touch {canary}", "GIT_SHA": "abc"}})
    planted_run = _ended(store, planted.run_id)
    assert planted_run.status == "failed"
    assert "--env CC, HOME: not a name callers may set (scripts.caller_env)" in (
        planted_run.error or "")
    assert planted_run.executions == []
    assert not canary.exists()
    assert CANARY_TOKEN not in session_worker.output()


@pytest.mark.parametrize(("argv", "says"), [
    (["/etc/passwd"], "outside the allowed roots"),
    (["../../../../etc/passwd"], "outside the allowed roots"),
    (["plain.sh", "--queue", "linux,default"], "a queue name is letters"),
    (["plain.sh", "-e", "1BAD=x"], "--env expects NAME=value or NAME"),
    (["plain.sh", "-e", "CC=gcc -wrapper,/tmp/x", "-e", "MAKEFLAGS=x"],
     "--env CC, MAKEFLAGS: not a name callers may set (scripts.caller_env)"),
])
def test_the_cli_refuses_before_a_run_is_queued(pitstop_env: dict[str, str], pitstop_home: Path,
                                                argv: list[str], says: str) -> None:
    write_script(pitstop_home, "plain.sh", "echo plain\n")
    client = redis.Redis.from_url(pitstop_env["PITSTOP_REDIS_URL"])
    before = client.zcard(RUN_INDEX)
    done = run_cli(["run", *argv, "--wait"], pitstop_env, cwd=pitstop_home)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
    assert "queued" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "/tmp/x" not in done.stderr  # never a value
    assert client.zcard(RUN_INDEX) == before  # no run recorded, nothing sent
