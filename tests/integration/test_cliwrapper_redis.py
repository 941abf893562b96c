"""CLIWrapper against a real Redis: events, run records, live output, cancellation, secrets."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from pitstop.bus.eventbus import EventBus
from pitstop.kernel.constants import LOG_CLI_EXECUTIONS, LOG_RUNS
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.serverinfo import ServerInfo
from pitstop.kernel.statelog import StateLog
from pitstop.runs.output import OutputEnd, OutputLine, RunOutput
from pitstop.runs.store import RunStore
from pitstop.scripts.cliwrapper import CLIWrapper
from pitstop.scripts.result import EXIT_CANCELLED, ExecutionResult
from tests.support import FIXTURE_SCRIPTS

pytestmark = pytest.mark.integration

FIXTURES = FIXTURE_SCRIPTS
CANARY = "canary-Jd72kQp0-integration"


def _all_redis_text(client: redis.Redis) -> str:
    """Every key and value in Redis, whatever its type, as one text to search."""
    dumped: list[Any] = []
    for key in client.scan_iter("*"):
        kind = client.type(key)
        readers: dict[bytes, Callable[[Any], Any]] = {
            b"string": client.get, b"stream": client.xrange, b"hash": client.hgetall,
            b"list": lambda k: client.lrange(k, 0, -1), b"set": client.smembers,
            b"zset": lambda k: client.zrange(k, 0, -1)}
        dumped.append((key, readers[kind if isinstance(kind, bytes) else kind.encode()](key)))
    return repr(dumped)


def test_canary_secret_appears_nowhere(redis_client: redis.Redis, tmp_path: Path) -> None:
    redactor = Redactor()
    cli_log = StateLog(LOG_CLI_EXECUTIONS, tmp_path)
    runs = RunStore(redis_client, state_log=StateLog(LOG_RUNS, tmp_path))
    bus = EventBus(redis_client)
    output = RunOutput(redis_client)
    run = runs.create_run(kind="script", params={"script": "print_secret.py"})
    live: list[str] = []

    def sink(stream: str, line: str) -> None:
        live.append(line)
        output.append(run.run_id, stream, line)

    with bus.subscribe("tool.**") as watcher:
        result = CLIWrapper(allowed_roots=[FIXTURES], redactor=redactor, bus=bus, runs=runs,
                            state_log=cli_log, output_sink=sink).wrap(
            FIXTURES / "print_secret.py", ["GITHUB_TOKEN", CANARY, f"--password={CANARY}"],
            env={"GITHUB_TOKEN": CANARY}, run_id=run.run_id)
        received = [watcher.get(timeout=5), watcher.get(timeout=5)]

    assert result.succeeded
    assert result.stdout_tail.startswith("the value is ***\n")  # the script did print it
    assert any("***" in line for line in live)
    places = {
        "result": json.dumps(result.to_dict()),
        "cli log": (tmp_path / f"{LOG_CLI_EXECUTIONS}.jsonl").read_text(),
        "runs log": (tmp_path / f"{LOG_RUNS}.jsonl").read_text(),
        "live events": json.dumps([e.to_dict() for e in received if e is not None]),
        "event stream": json.dumps([e.to_dict() for e in bus.replay()]),
        "run record": runs.get_run(run.run_id).model_dump_json(),
        "redis": _all_redis_text(redis_client),
    }
    for where, text in places.items():
        assert text, where
        assert CANARY not in text, where
    assert [e.type for e in received if e is not None] == ["tool.invoked", "tool.succeeded"]


def test_run_record_and_events_follow_one_execution(redis_client: redis.Redis,
                                                    tmp_path: Path) -> None:
    runs = RunStore(redis_client)
    bus = EventBus(redis_client)
    wrapper = CLIWrapper(allowed_roots=[FIXTURES], redactor=Redactor(), bus=bus, runs=runs,
                         state_log=StateLog(LOG_CLI_EXECUTIONS, tmp_path))
    result = wrapper.wrap(FIXTURES / "exit_code.py", ["3"], trace_id="trace-int-1")

    run = runs.get_run(result.run_id)
    assert run.kind == "script" and run.status == "failed" and run.exit_code == 3
    assert run.trace_id == "trace-int-1" and run.host == result.host
    assert run.started_at is not None and run.finished_at is not None
    assert run.params == {"script": str(FIXTURES / "exit_code.py"), "args": ["3"]}
    (execution,) = run.executions
    assert execution["exit_code"] == 3 and execution["stdout_tail"] == ""

    events = list(bus.replay())
    assert [e.type for e in events] == ["tool.invoked", "tool.failed"]
    assert all(e.trace_id == "trace-int-1" for e in events)
    assert events[1].parent_id == events[0].id and events[1].severity == "failed"
    assert events[1].data["exit_code"] == 3 and events[1].data["run_id"] == result.run_id

    (line,) = (tmp_path / f"{LOG_CLI_EXECUTIONS}.jsonl").read_text().splitlines()
    assert json.loads(line)["run_id"] == result.run_id


@pytest.mark.timeout(30)
def test_live_output_and_cancellation_through_redis(redis_client: redis.Redis) -> None:
    runs = RunStore(redis_client)
    output = RunOutput(redis_client)
    run = runs.create_run(kind="script", params={})
    wrapper = CLIWrapper(
        allowed_roots=[FIXTURES], redactor=Redactor(), runs=runs,
        output_sink=lambda stream, line: output.append(run.run_id, stream, line),
        cancel_check=lambda: output.cancel_requested(run.run_id))
    results: list[ExecutionResult] = []

    def execute() -> None:
        result = wrapper.wrap(FIXTURES / "wait_forever.py", run_id=run.run_id, timeout=20)
        output.close(run.run_id, status=result.status, exit_code=result.exit_code)
        results.append(result)

    worker = threading.Thread(target=execute)
    worker.start()
    seen: list[OutputLine | OutputEnd] = []
    try:
        for item in output.follow(run.run_id, block_ms=100):
            if item is None:
                continue
            seen.append(item)
            if isinstance(item, OutputLine) and item.line == "started":
                output.request_cancel(run.run_id)  # the script is running: cancel it
            if isinstance(item, OutputEnd):
                break
    finally:
        output.request_cancel(run.run_id)
        worker.join(20)
    assert [(i.stream, i.line) for i in seen if isinstance(i, OutputLine)] == [
        ("stdout", "started")]
    end = seen[-1]
    assert isinstance(end, OutputEnd)
    assert (end.status, end.exit_code) == ("cancelled", EXIT_CANCELLED)
    assert results[0].cancelled
    stored = runs.get_run(run.run_id)
    assert stored.status == "cancelled" and stored.exit_code == EXIT_CANCELLED
    assert stored.started_at is not None and stored.finished_at is not None


# --- the seed's plain API, inside a project (issue 6 item 18) --------------------------------------


def _project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project as `pitstop` would find it, entered with cd, no PITSTOP_* variables."""
    project = tmp_path / "proj"
    (project / "config").mkdir(parents=True)
    (project / "scripts").mkdir()
    (project / "config" / "pitstop.yaml").write_text("log_level: info\n")
    (project / "scripts" / "my_script.py").write_text(
        "import sys\nprint('got', *sys.argv[1:])\n")
    for name in [n for n in os.environ if n.startswith("PITSTOP_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(project)
    return project


def _recorded(project: Path) -> list[dict[str, Any]]:
    path = project / ".state" / f"{LOG_CLI_EXECUTIONS}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_the_seeds_plain_wrapper_records_in_its_project(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_server: ServerInfo,
        redis_client: redis.Redis) -> None:
    project = _project(tmp_path, monkeypatch)
    monkeypatch.setenv("PITSTOP_REDIS_URL", redis_server.url)
    result = CLIWrapper(timeout=300).wrap("scripts/my_script.py", args=["--flag"])
    assert result.succeeded and result.stdout_tail == "got --flag\n"
    [record] = _recorded(project)
    assert (record["run_id"], record["args"], record["exit_code"]) == (result.run_id,
                                                                       ["--flag"], 0)
    events = [e for e in EventBus(redis_client).replay() if e.data.get("run_id") == result.run_id]
    assert [e.type for e in events] == ["tool.invoked", "tool.succeeded"]
    assert events[0].source.startswith("cliwrapper@")


def test_the_plain_wrapper_uses_the_embedded_redis_only_when_it_runs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pitstop.connection.server import RedisServer

    project = _project(tmp_path, monkeypatch)
    redis_dir = project / ".state" / "redis"
    first = CLIWrapper(timeout=300).wrap("scripts/my_script.py", args=["--flag"])
    assert [r["run_id"] for r in _recorded(project)] == [first.run_id]  # logged all the same
    assert not (redis_dir / "server.json").exists()  # and no Redis started for it
    server = RedisServer(redis_dir)
    info = server.start()
    try:
        second = CLIWrapper(timeout=300).wrap("scripts/my_script.py", args=["--flag"])
        client = redis.Redis.from_url(info.url)
        events = list(EventBus(client).replay())
        client.close()
    finally:
        server.stop()
    assert [r["run_id"] for r in _recorded(project)] == [first.run_id, second.run_id]
    assert [(e.type, e.data["run_id"]) for e in events] == [
        ("tool.invoked", second.run_id), ("tool.succeeded", second.run_id)]
