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

    # Or fields no sender writes: the run ends failed at once, never left running.
    for fields, says in (({"timeout": -5}, "timeout -5 is not a positive number"),
                         ({"args": "--flag"}, "args is not a list of strings"),
                         ({"shell": True}, "unknown fields shell")):
        odd = store.create_run(kind="script", queue="linux")
        celery_app.send_task(TASK_RUN_SCRIPT, queue="linux", task_id=odd.run_id, kwargs={
            "run_id": odd.run_id, "script": str(pitstop_home / "scripts" / "deploy.py"),
            **fields})
        ended = _ended(store, odd.run_id)
        assert ended.status == "failed" and says in (ended.error or ""), ended.error
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


SECRET_ARGS_SCRIPT = """
    import hashlib, os, sys
    # Proof that the real values arrived, without printing them.
    print("received", hashlib.sha256("\\0".join(sys.argv[1:]).encode()).hexdigest())
    print("args:", " ".join(sys.argv[1:]))
    print(f"building {os.environ['BUILD_TYPE']} for sha {os.environ['GIT_SHA']}")
    print("label:", os.environ["BUILD_LABEL"], "token:", os.environ["DEPLOY_TOKEN"])
"""


@pytest.mark.timeout(150)
def test_secret_arguments_never_leak_and_plain_env_values_stay_readable(
        pitstop_env: dict[str, str], pitstop_home: Path, tmp_path: Path) -> None:
    """Issue 6 items 2 and 3, end to end on a Redis with its append-only file on."""
    import hashlib
    import uuid

    from pitstop.connection.server import RedisServer
    from tests.support import running, task_outcome

    tag = uuid.uuid4().hex[:10]
    canaries = [f"canary{n}-{tag}" for n in range(6)]
    args = ["--token", canaries[0], "--api-key", canaries[1], "--secret", canaries[2],
            "--password", canaries[3], f"--password={canaries[4]}", "--release"]
    path = write_script(pitstop_home, f"secret_args_{tag}.py", SECRET_ARGS_SCRIPT)
    server = RedisServer(tmp_path / "aof-redis", appendonly=True)
    info = server.start()
    state = tmp_path / "state"
    env = {**pitstop_env, "PITSTOP_REDIS_URL": info.url, "PITSTOP_STATE_DIR": str(state)}
    try:
        with running(["worker", "-Q", "linux", "-c", "1", "-n", f"aof-{tag}@%h"], env,
                     tmp_path / "worker.log", ready="ready.", timeout=60) as worker:
            done = run_cli(["run", path, "--wait", "--json", "-e", "GIT_SHA=abc123",
                            "-e", "BUILD_TYPE=release", "-e", f"DEPLOY_TOKEN={canaries[5]}x",
                            "--secret-env", f"BUILD_LABEL={canaries[5]}", "--", *args], env)
            assert done.returncode == 0, done.stderr
            run_id = json.loads(done.stdout.splitlines()[-1])["run_id"]
            client = redis.Redis.from_url(info.url)
            outcome = wait_for(lambda: task_outcome(client, run_id), 10,
                               message="the task result")
            assert outcome["status"] == "SUCCESS"
            shown = [run_cli(command, env) for command in (
                ["show", run_id], ["show", run_id, "--json", "--output"], ["events", "--json"],
                ["log", "cli_executions"], ["log", "runs"], ["runs", "--json"])]
            worker_log = worker.output()
        aof = (tmp_path / "aof-redis" / "appendonly.aof").read_bytes()
    finally:
        server.stop()
    expected = hashlib.sha256("\0".join(args).encode()).hexdigest()
    lines = done.stdout.splitlines()
    assert f"received {expected}" in lines  # the script got the real values
    assert "args: --token *** --api-key *** --secret *** --password *** --password=*** --release" \
        in lines
    # Plain --env values are data, not secrets: shown as they are (issue 6 item 3).
    assert "building release for sha abc123" in lines
    assert "label: *** token: ***" in lines  # marked secret, or secret by name
    assert aof and b"abc123" in aof  # the AOF holds what Redis was sent
    places = {"cli output": done.stdout + done.stderr, "worker log": worker_log,
              "aof": aof.decode(errors="replace"), "result": json.dumps(outcome),
              **{f"pitstop {i}": c.stdout + c.stderr for i, c in enumerate(shown)},
              **{log.name: log.read_text() for log in state.glob("*.jsonl")}}
    assert {"runs.jsonl", "cli_executions.jsonl"} <= set(places)
    assert all(c.returncode == 0 for c in shown), [c.stderr for c in shown]
    for canary in canaries:
        leaks = [where for where, text in places.items() if canary in text]
        assert not leaks, (canary, leaks)
