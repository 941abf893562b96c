"""CLIWrapper against a real Redis: events, run records, live output, cancellation, secrets."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from pitstop.bus.eventbus import EventBus
from pitstop.kernel.constants import LOG_CLI_EXECUTIONS, LOG_RUNS
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.statelog import StateLog
from pitstop.runs.output import OutputEnd, OutputLine, RunOutput
from pitstop.runs.store import RunStore
from pitstop.scripts.cliwrapper import EXIT_CANCELLED, CLIWrapper, ExecutionResult
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
