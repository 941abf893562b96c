"""A run's end and its finalization: a run with nothing to hand on is finalized by the
compare-and-set that ends it (its event published and the reaper's set left in that one script);
one holding a concurrency slot is finalized after it, as before. Either way once."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import redis

from pitstop.kernel.constants import WS_ACTIVE_RUNS
from pitstop.kernel.serverinfo import ServerInfo
from pitstop.workstreams import AttemptResult, repair_runs
from tests.support import OrchestratorRig

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

ONE_STEP = {"steps": [{"id": "only", "kind": "emit", "params": {"type": "fin.step"}}]}
WORKSTREAMS = {
    "WS-FREE": ONE_STEP,
    "WS-SLOT": {**ONE_STEP, "concurrency": {"key": "{{ params.branch }}", "policy": "skip"},
                "params": {"branch": "main"}},
}


class Rig(OrchestratorRig):
    def run_through(self, workstream: str) -> str:
        run_id = self.orchestrator.launch_workstream(workstream).run_id
        assert run_id is not None
        [message] = self.sent
        self.sent.clear()
        assert self.deliver(message) == "succeeded"
        return run_id

    def completions(self, run_id: str) -> list[dict[str, Any]]:
        return [event.data for event in self.bus.replay()
                if event.type.startswith("workstream.") and event.data.get("run_id") == run_id]

    def finish_notes(self, run_id: str) -> int:
        path = self.settings.state_dir / "runs.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return sum(1 for line in lines if line["op"] == "finish" and line["run"]["run_id"] == run_id)

    def commands(self, name: str) -> int:
        stats = self.client.info("commandstats")
        return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


@pytest.fixture
def rig(redis_client: redis.Redis, redis_server: ServerInfo, tmp_path: Path) -> Rig:
    (tmp_path / "config").mkdir()
    return Rig.build(redis_client, {
        "PITSTOP_REDIS_URL": redis_server.url, "PITSTOP_STATE_DIR": str(tmp_path / "st"),
        "PITSTOP_CONFIG_DIR": str(tmp_path / "config")}, WORKSTREAMS)


def test_a_run_with_nothing_to_hand_on_is_finalized_by_the_commit_that_ends_it(
        rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    srem_before = rig.commands("srem")
    publish_before = rig.commands("publish")
    outside: list[str] = []  # round trips of their own after the commit: none expected
    monkeypatch.setattr(rig.bus, "publish_event", lambda *a, **k: outside.append("publish"))
    monkeypatch.setattr(rig.client, "srem", lambda *a, **k: outside.append("srem"))
    with rig.bus.subscribe("workstream.ws-free.completed") as live:
        run_id = rig.run_through("WS-FREE")
        heard = live.get(timeout=5)
    monkeypatch.undo()
    assert outside == []
    assert heard is not None and heard.data["run_id"] == run_id
    assert not rig.client.sismember(WS_ACTIVE_RUNS, run_id)
    [data] = rig.completions(run_id)
    assert data["status"] == "succeeded"
    # Inside the script (commandstats counts a command Lua ran too, once each): one SREM, and
    # two PUBLISHes (the step's own event and the completion), none from a second round.
    assert rig.commands("srem") - srem_before == 1
    assert rig.commands("publish") - publish_before == 2
    assert rig.finish_notes(run_id) == 1
    # A second report of the same attempt (a redelivered message) changes nothing.
    rig.orchestrator.finish_step(run_id, "only", 1, AttemptResult("succeeded"))
    assert len(rig.completions(run_id)) == 1
    assert rig.finish_notes(run_id) == 1
    assert repair_runs(rig.orchestrator).actions == []


def test_a_run_holding_a_slot_is_finalized_after_its_commit_and_frees_the_slot(
        rig: Rig) -> None:
    first = rig.run_through("WS-SLOT")
    assert rig.orchestrator.runs.get_run(first).orchestration["slot"]  # it held one
    assert not rig.client.sismember(WS_ACTIVE_RUNS, first)
    assert len(rig.completions(first)) == 1
    assert rig.finish_notes(first) == 1
    # The slot was handed back: the next launch for the same key is not skipped.
    second = rig.orchestrator.launch_workstream("WS-SLOT")
    assert second.status == "launched", second.reason
