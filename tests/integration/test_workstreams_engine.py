"""The orchestrator against a real Redis, without Celery: messages are recorded and executed in
this process, so every interleaving (redelivery, a dead holder, a crash between commit and send)
is played out exactly."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from pitstop.kernel.constants import WS_ACTIVE_RUNS
from pitstop.kernel.errors import (
    ConfigError,
    NothingToCancel,
    ValidationError,
    WorkstreamUnavailable,
)
from pitstop.kernel.sealing import generate_key
from pitstop.kernel.serverinfo import ServerInfo
from pitstop.runs.output import RunOutput
from pitstop.runs.store import Run
from pitstop.workstreams import (
    LaunchResult,
    repair_runs,
)
from pitstop.workstreams.orchestrator import beat_key
from tests.support import FIXTURE_SCRIPTS, OrchestratorRig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

HOST = socket.gethostname()


def _emit(step_id: str, event_type: str = "x.done", *, data: dict[str, Any] | None = None,
          **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"type": event_type, **({"data": data} if data else {})}
    return {"id": step_id, "kind": "emit", "params": params, **extra}


def _script(step_id: str, script: str, *args: Any, env: dict[str, str] | None = None,
            **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"script": script, "args": list(args), **({"env": env} if env else {})}
    return {"id": step_id, "kind": "run", "queue": "q", "params": params, **extra}


class Harness(OrchestratorRig):
    """The rig, with shorthands: :meth:`drain` plays the sent messages in order."""

    def launch(self, workstream: str, **kwargs: Any) -> LaunchResult:
        return self.orchestrator.launch_workstream(workstream, **kwargs)

    def drain(self, limit: int = 50) -> list[tuple[str, str]]:
        done = []
        while self.sent and limit:
            limit -= 1
            message = self.sent.pop(0)
            done.append((message["kwargs"]["step_id"], self.deliver(message)))
        return done

    def run(self, run_id: str) -> Run:
        return self.orchestrator.runs.get_run(run_id)

    def steps(self, run_id: str) -> dict[str, str]:
        return {key: value["status"] for key, value in self.run(run_id).steps.items()}


@pytest.fixture
def harness_for(redis_client: redis.Redis, redis_server: ServerInfo,
                tmp_path: Path) -> Iterator[Any]:
    (tmp_path / "config").mkdir()

    def build(workstreams: dict[str, Any], *, secret_key: bool = True) -> Harness:
        env = {"PITSTOP_REDIS_URL": redis_server.url, "PITSTOP_STATE_DIR": str(tmp_path / "st"),
               "PITSTOP_CONFIG_DIR": str(tmp_path / "config"),
               "PITSTOP_ALLOWED_ROOTS": str(FIXTURE_SCRIPTS),
               "PITSTOP_LOST_AFTER_SECONDS": "2"}
        if secret_key:
            env["PITSTOP_SECRET_KEY"] = generate_key()
        return Harness.build(redis_client, env, workstreams, scripts=True)

    yield build


def test_a_run_goes_through_its_stages_and_announces_its_end_in_the_trace(
        harness_for: Any) -> None:
    h = harness_for({"WS": {"params": {"who": "world"}, "steps": [
        _script("hello", "echo_args.py", "hi {{ params.who }}", "{{ event.data.branch }}"),
        {"parallel": [_emit("tell", data={"code": "{{ steps.hello.exit_code }}"}),
                      {"id": "sub", "kind": "workstream", "params": {"workstream": "SUB"}}]},
        _emit("last", "ws.last")]},
        "SUB": {"steps": [_emit("inner", "sub.done")]}})
    cause = h.bus.publish("phase.1.completed", {"branch": "main"})
    launched = h.launch("WS", event=cause, trigger_id="t1")
    assert launched.status == "launched" and launched.run_id
    assert [m["queue"] for m in h.sent] == ["q"]
    h.drain()
    run = h.run(launched.run_id)
    assert run.status == "succeeded" and run.exit_code == 0
    assert h.steps(run.run_id) == {"hello": "succeeded", "tell": "succeeded",
                                   "sub": "succeeded", "last": "succeeded"}
    assert run.event is not None and run.event["id"] == cause.id
    hello = run.steps["hello"]
    assert hello["outputs"]["stdout_tail"].startswith('["hi world", "main"]')
    child = h.run(hello["outputs"]["run_id"])
    assert (child.kind, child.parent_run_id, child.status) == ("script", run.run_id, "succeeded")
    events = [e for e in h.bus.replay() if e.trace_id == cause.trace_id]
    by_type = {e.type: e for e in events}
    assert by_type["x.done"].data == {"code": "0"}
    assert by_type["x.done"].hops == 1
    done = by_type["workstream.ws.completed"]
    assert done.hops == cause.hops + 1 and done.parent_id == cause.id
    assert done.data["run_id"] == run.run_id and done.data["trigger_id"] == "t1"
    assert "workstream.sub.completed" in by_type
    assert not h.client.smembers(WS_ACTIVE_RUNS)  # finalized
    lines = [item.line for item in RunOutput(h.client).follow(run.run_id, block_ms=1)
             if item is not None and hasattr(item, "line")]
    assert lines[0].startswith("workstream WS: run")
    assert lines[-1].startswith("workstream WS: succeeded in")


def test_a_launch_key_launches_once(harness_for: Any) -> None:
    h = harness_for({"WS": {"steps": [_emit("a")]}})
    first = h.launch("WS", launch_key="event-1:rule")
    again = h.launch("WS", launch_key="event-1:rule")
    assert again.status == "duplicate" and again.run_id == first.run_id
    assert len(h.sent) == 1
    assert len(h.orchestrator.runs.list_runs(kind="workstream")) == 1


def test_a_redelivered_step_never_advances_twice(harness_for: Any) -> None:
    h = harness_for({"WS": {"steps": [_emit("a"), _emit("b")]}})
    run_id = h.launch("WS").run_id
    message = dict(h.sent[0])
    assert h.drain(1) == [("a", "succeeded")]
    assert h.deliver(message) == "skipped"
    assert [m["kwargs"]["step_id"] for m in h.sent] == ["b"]
    h.drain()
    assert h.run(run_id).status == "succeeded"


def test_concurrency_policies_per_key(harness_for: Any) -> None:
    h = harness_for({
        "SKIP": {"params": {"b": "main"}, "concurrency": {"policy": "skip", "key": "{{ params.b }}"},
                 "steps": [_emit("a")]},
        "QUEUE": {"concurrency": {"policy": "queue", "key": "{{ event.data.b }}"},
                  "steps": [_emit("a")]},
        "CANCEL": {"concurrency": {"policy": "cancel_previous"}, "steps": [_emit("a")]}})
    first = h.launch("SKIP")
    assert h.launch("SKIP").status == "skipped"
    assert h.launch("SKIP", params={"b": "other"}).status == "launched"  # another key
    h.drain()
    assert h.run(first.run_id).status == "succeeded"
    assert h.launch("SKIP").status == "launched"  # the slot is free again
    h.sent.clear()

    main = h.bus.publish("push", {"b": "main"})
    holder = h.launch("QUEUE", event=main)
    waiting = h.launch("QUEUE", event=main)
    third = h.launch("QUEUE", event=main)
    assert (waiting.status, third.status) == ("queued", "queued")
    assert h.run(waiting.run_id).status == "queued"
    assert len(h.sent) == 1
    h.drain(1)  # the holder ends: the first queued run starts, the other still waits
    assert h.run(holder.run_id).status == "succeeded"
    assert h.run(waiting.run_id).status == "running"
    assert h.run(third.run_id).status == "queued"
    h.drain()
    assert h.run(third.run_id).status == "succeeded"
    assert h.run(waiting.run_id).started_at >= h.run(holder.run_id).finished_at
    h.sent.clear()

    old = h.launch("CANCEL")
    new = h.launch("CANCEL")
    assert new.status == "cancelled_previous" and old.run_id in new.reason
    assert h.run(old.run_id).status == "cancelled"
    assert "superseded by run" in (h.run(old.run_id).error or "")
    assert [h.deliver(m) for m in h.sent] == ["skipped", "succeeded"]


def test_a_dead_holder_is_found_by_the_redelivered_message_and_the_step_retried(
        harness_for: Any) -> None:
    h = harness_for({"WS": {"steps": [_emit("a", retries=1, backoff=0)]}})
    run_id = h.launch("WS").run_id
    message = h.sent.pop(0)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert h.orchestrator.claim_step(run_id, "a", 1, host=HOST, pid=gone.pid) is not None
    assert h.deliver(message) == "skipped"  # the redelivery: its holder is dead
    state = h.run(run_id).steps["a"]
    assert (state["status"], state["attempt"]) == ("queued", 2)
    assert "died" in state["history"][0]["message"]
    assert h.drain() == [("a", "succeeded")]
    assert h.run(run_id).status == "succeeded"


def test_the_reaper_ends_silent_attempts_resends_unsent_ones_and_times_runs_out(
        harness_for: Any) -> None:
    h = harness_for({"WS": {"steps": [_emit("a")], "timeout": 3600},
                     "LONE": {"steps": [_emit("b")]}})
    run_id = h.launch("WS").run_id
    h.sent.clear()  # the launcher "died" before sending
    report = repair_runs(h.orchestrator, resend_after=0)
    assert any("sent again" in action for action in report.actions)
    assert [m["kwargs"]["step_id"] for m in h.sent] == ["a"]
    repair_runs(h.orchestrator, resend_after=0)
    assert len(h.sent) == 1  # once only
    claimed = h.orchestrator.claim_step(run_id, "a", 1, host="elsewhere", pid=1)
    assert claimed is not None
    h.orchestrator.runs.mutate(run_id, lambda run, now: run.model_copy(update={
        "orchestration": {**run.orchestration, "deadline": "2020-01-01T00:00:00+00:00"}}))
    report = repair_runs(h.orchestrator)
    assert h.run(run_id).status == "timed_out"  # past the run's own timeout
    assert any("timed out" in action for action in report.actions)

    lone = h.launch("LONE").run_id
    h.sent.clear()
    h.orchestrator.claim_step(lone, "b", 1, host="elsewhere", pid=1)
    h.client.delete(beat_key(lone, "b", 1))
    state = h.run(lone).steps["b"]
    a_while_ago = (h.orchestrator.now() - timedelta(seconds=10)).isoformat()
    h.orchestrator.runs.mutate(lone, lambda run, now: run.model_copy(
        update={"steps": {"b": {**state, "started_at": a_while_ago}}}), op="")
    repair_runs(h.orchestrator)
    final = h.run(lone)
    assert final.status == "failed"
    assert "stopped heart-beating" in (final.error or "")
    # a step silent past its timeout ends timed out
    late = h.launch("LONE").run_id
    h.orchestrator.claim_step(late, "b", 1, host="elsewhere", pid=1)
    h.client.delete(beat_key(late, "b", 1))
    state = h.run(late).steps["b"]
    h.orchestrator.runs.mutate(late, lambda run, now: run.model_copy(
        update={"steps": {"b": {**state, "started_at": "2020-01-01T00:00:00Z"}}}), op="")
    repair_runs(h.orchestrator)
    assert h.run(late).status == "timed_out"


def test_cancel_stops_the_run_and_skips_what_was_sent(harness_for: Any) -> None:
    h = harness_for({"WS": {"steps": [_emit("a"), _emit("b")]}})
    run_id = h.launch("WS").run_id
    cancelled = h.orchestrator.cancel_run(run_id, reason="by the test")
    assert cancelled.status == "cancelled" and cancelled.error == "by the test"
    assert h.drain() == [("a", "skipped")]
    assert h.steps(run_id) == {"a": "cancelled", "b": "skipped"}
    with pytest.raises(NothingToCancel):
        h.orchestrator.cancel_run(run_id)
    [ended] = [e for e in h.bus.replay() if e.type == "workstream.ws.failed"]
    assert ended.data["status"] == "cancelled"


def test_a_template_that_fails_to_render_fails_the_step_without_retrying(
        harness_for: Any) -> None:
    h = harness_for({"WS": {"steps": [_emit("a", data={"b": "{{ event.data.branch }}"},
                                            retries=3)]}})
    run_id = h.launch("WS").run_id  # by hand: no event data
    assert h.drain() == [("a", "failed")]
    run = h.run(run_id)
    assert run.status == "failed" and run.steps["a"]["attempt"] == 1
    assert "has no attribute 'branch'" in (run.error or "")


def test_launch_refusals_are_clear(harness_for: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from pitstop.workstreams import catalog

    monkeypatch.setattr(catalog, "PLANNED_STEP_KINDS", ("teleport",))
    h = harness_for({"WS": {"params": {"sha": None, "branch": "main"}, "steps": [_emit("a")]},
                     "LATER": {"steps": [{"id": "t", "kind": "teleport"}]}})
    with pytest.raises(ValidationError, match=r"has no param brnch \(declared: branch, sha\)"):
        h.launch("WS", params={"sha": "1", "brnch": "x"})
    with pytest.raises(ValidationError, match="needs param sha"):
        h.launch("WS")
    with pytest.raises(WorkstreamUnavailable, match="cannot run yet: step 't' needs step kind "
                                                    "'teleport'"):
        h.launch("LATER")
    with pytest.raises(ConfigError, match="unknown workstream 'NOPE'"):
        h.launch("NOPE")
    assert h.launch("WS", params={"sha": "abc"}).status == "launched"


def test_secret_env_travels_sealed_and_reaches_the_script(harness_for: Any) -> None:
    step = _script("s", "env_dump.py", env={"DEPLOY_TOKEN": "hunter2-secret", "GIT_SHA": "abc"})
    h = harness_for({"WS": {"steps": [step]}})
    run_id = h.launch("WS").run_id
    raw = h.client.get(f"pitstop:run:{run_id}")
    assert raw is not None and b"hunter2-secret" not in raw
    assert h.drain() == [("s", "succeeded")]
    run = h.run(run_id)
    assert "hunter2-secret" not in json.dumps(run.model_dump(mode="json"))
    seen = json.loads(run.steps["s"]["outputs"]["stdout_tail"])
    assert seen["GIT_SHA"] == "abc" and seen["DEPLOY_TOKEN"] == "***"  # there, and redacted
    without_key = harness_for({"WS": {"steps": [step]}}, secret_key=False)
    with pytest.raises(ConfigError, match="DEPLOY_TOKEN"):
        without_key.launch("WS")


def test_a_sub_workstream_ends_its_parent_step_and_is_cancelled_with_its_parent(
        harness_for: Any) -> None:
    h = harness_for({
        "P": {"params": {"code": "ok"}, "steps": [
            {"id": "sub", "kind": "workstream",
             "params": {"workstream": "C", "params": {"kind": "{{ params.code }}"}}},
            _emit("after")],
            "on_failure": [_emit("tell", "p.failed")]},
        "C": {"params": {"kind": "ok"}, "steps": [_emit("a", "{{ params.kind }}.x"), _emit("b")]}})
    failing = h.launch("P", params={"code": "bad..type"}).run_id
    h.drain()
    assert h.steps(failing) == {"sub": "failed", "after": "skipped", "tell": "succeeded"}
    child = h.run(h.run(failing).steps["sub"]["child_run_id"])
    assert (child.status, child.parent_run_id) == ("failed", failing)
    assert "empty segment" in (child.error or "")

    parent = h.launch("P").run_id
    h.drain(1)  # the sub step launches its run and waits for it
    assert h.steps(parent)["sub"] == "waiting"
    child_id = h.run(parent).steps["sub"]["child_run_id"]
    assert h.orchestrator.launch_child(parent, "sub", 1, "C", {}) == child_id  # redelivered
    h.orchestrator.cancel_run(parent, reason="stop")
    assert h.run(child_id).status == "cancelled"
    assert "its parent run" in (h.run(child_id).error or "")
    assert h.drain() == [("a", "skipped")]
    assert h.steps(parent) == {"sub": "cancelled", "after": "skipped", "tell": "skipped"}


def test_a_launching_process_keeps_a_bounded_number_of_run_definitions(
        harness_for: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # The router launches for ever in a worker's main process: each launch used to keep its
    # parsed definition there for good (the soak's workers grew ~1 MB per 2,000 runs).
    from pitstop.workstreams import driver
    monkeypatch.setattr(driver, "SPECS_KEPT", 5)
    h = harness_for({"WS": {"steps": [_emit("one")]}})
    launched = [h.launch("WS").run_id for _ in range(12)]
    kept = h.orchestrator._specs
    assert list(kept) == launched[-5:]
    h.drain()  # the forgotten ones still run: their definition is read from the record
    assert {h.run(run_id).status for run_id in launched if run_id} == {"succeeded"}
