"""TriggerEngine against a real Redis (no worker): the seed's API, every decision logged, dedupe,
throttle, debounce and schedule fences fleet-wide, and config hot reload."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import redis

from pitstop.bus.eventbus import EventBus
from pitstop.bus.events import make_event
from pitstop.kernel.errors import ConfigError, ValidationError
from pitstop.kernel.statelog import StateLog, read_log
from pitstop.triggers.config import parse_triggers
from pitstop.triggers.engine import TriggerEngine
from pitstop.triggers.source import ConfigSource
from pitstop.triggers.state import TriggerState
from tests.trigger_fakes import FakeCatalog, FakeOrchestrator

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

CATALOG = FakeCatalog(["WS-A", "WS-B", "WS-PHASE-2"])


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def engine_for(client: redis.Redis, tmp_path: Path, text: str = "triggers: []",
               clock: Clock | None = None) -> tuple[TriggerEngine, FakeOrchestrator]:
    orchestrator = FakeOrchestrator()
    config = parse_triggers(textwrap.dedent(text), file="triggers.yaml", catalog=CATALOG)
    engine = TriggerEngine(EventBus(client), orchestrator, config=config,
                           state_log=StateLog("trigger_executions", tmp_path), clock=clock)
    return engine, orchestrator


def test_the_seed_api_works_as_written(redis_client: redis.Redis, tmp_path: Path) -> None:
    engine, orchestrator = engine_for(redis_client, tmp_path)
    engine.register_trigger(rule_id="phase1_to_phase2", event_pattern="phase.1.completed",
                            workstream_id="WS-PHASE-2",
                            conditions={"field": "data.ok", "equals": True})
    [decision] = engine.handle(make_event("phase.1.completed", {"ok": True}))
    assert decision.decision == "launched"
    assert orchestrator.launches[0]["workstream"] == "WS-PHASE-2"
    assert orchestrator.launches[0]["launch_key"].endswith(":phase1_to_phase2")
    [stopped] = engine.handle(make_event("phase.1.completed", {"ok": False}))
    assert (stopped.decision, stopped.reason) == ("condition_false", "data.ok equals true: got false")

    engine.disable("phase1_to_phase2", reason="maintenance")
    assert engine.list()[0]["enabled"] is False
    assert engine.handle(make_event("phase.1.completed", {"ok": True}))[0].decision == "disabled"
    # Another engine (another worker) agrees at once: the flag lives in Redis.
    other, _ = engine_for(redis_client, tmp_path)
    other.register_trigger(rule_id="phase1_to_phase2", event_pattern="phase.1.completed",
                           workstream_id="WS-PHASE-2")
    assert other.list()[0]["enabled"] is False
    engine.enable("phase1_to_phase2")
    assert other.list()[0]["enabled"] is True
    with pytest.raises(ConfigError, match="unknown operator"):
        engine.register_trigger(rule_id="x", event_pattern="a.b", workstream_id="WS-A",
                                conditions={"field": "data.x", "equal": 1})
    with pytest.raises(ValidationError, match="unknown workstream"):
        engine.register_trigger(rule_id="y", event_pattern="a.b", workstream_id="WS-NOPE")


def test_every_decision_is_logged_with_event_rule_run_and_version(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    engine, _ = engine_for(redis_client, tmp_path, """
        triggers:
          - {id: go, event: "build.*", workstream: WS-A}
          - {id: cond, event: build.done, workstream: WS-B,
             conditions: [{field: data.n, gt: 5}]}
          - {id: idle, event: "build.**", workstream: WS-B, enabled: false}
    """)
    event = make_event("build.done", {"n": 1})
    decisions = engine.handle(event)
    assert [(d.rule, d.decision) for d in decisions] == [
        ("go", "launched"), ("cond", "condition_false"), ("idle", "disabled")]
    records = list(read_log("trigger_executions", tmp_path))
    assert [r["decision"] for r in records] == ["launched", "condition_false", "disabled"]
    assert all(r["event_id"] == event.id and r["config_version"] == engine.config.version
               for r in records)
    assert records[0]["run_id"] == "run-1" and records[0]["workstream"] == "WS-A"
    assert records[1]["reason"] == "data.n gt 5: got 1"
    assert engine.handle(make_event("other.thing")) == []  # no candidate: nothing at all


def test_a_redelivered_event_launches_once(redis_client: redis.Redis, tmp_path: Path) -> None:
    engine, orchestrator = engine_for(redis_client, tmp_path, """
        triggers: [{id: go, event: x.y, workstream: WS-A, throttle: {max: 1, per: 1h}}]
    """)
    event = make_event("x.y")
    assert engine.handle(event)[0].decision == "launched"
    again = engine.handle(event)[0]  # the throttle place is its own: the launch key decides
    assert again.decision == "deduped"
    assert len(orchestrator.launches) == 1


def test_hop_limit_stops_a_loop_at_run_time(redis_client: redis.Redis, tmp_path: Path) -> None:
    engine, orchestrator = engine_for(redis_client, tmp_path, """
        triggers: [{id: go, event: x.y, workstream: WS-A}]
    """)
    deep = make_event("x.y").__class__(**{**make_event("x.y").__dict__, "hops": 16})
    [decision] = engine.handle(deep)
    assert decision.decision == "hop_limit" and "limit is 16" in decision.reason
    assert not orchestrator.launches


def test_dedupe_key_and_throttle(redis_client: redis.Redis, tmp_path: Path) -> None:
    engine, orchestrator = engine_for(redis_client, tmp_path, """
        triggers:
          - {id: d, event: push, workstream: WS-A, dedupe: "{{ event.data.sha }}"}
          - {id: t, event: tick, workstream: WS-B,
             throttle: {max: 2, per: 1m, key: "{{ event.data.branch }}"}}
    """, clock=Clock(1000.0))
    kinds = [engine.handle(make_event("push", {"sha": sha}))[0].decision
             for sha in ("a", "a", "b")]
    assert kinds == ["launched", "deduped", "launched"]
    kinds = [engine.handle(make_event("tick", {"branch": b}))[0].decision
             for b in ("main", "main", "main", "dev")]
    assert kinds == ["launched", "launched", "throttled", "launched"]
    assert len(orchestrator.launches) == 5


def test_a_burst_launches_once_with_its_last_event(redis_client: redis.Redis,
                                                   tmp_path: Path) -> None:
    clock = Clock(1000.0)
    engine, orchestrator = engine_for(redis_client, tmp_path, """
        triggers:
          - id: build
            event: git.push
            workstream: WS-A
            debounce: {window: 5s, key: "{{ event.data.branch }}"}
            params: {n: "{{ event.data.n }}"}
    """, clock=clock)
    events = [make_event("git.push", {"branch": "main", "n": n}) for n in range(100)]
    for event in events:
        clock.now += 0.01
        assert engine.handle(event)[0].decision == "debounced"
    engine.handle(make_event("git.push", {"branch": "dev", "n": -1}))
    assert engine.fire_due() == []  # quiet period not over
    clock.now += 5.0
    # Two routers race for the due bursts: each burst launches once.
    other, _ = engine_for(redis_client, tmp_path, clock=clock)
    other.orchestrator = orchestrator
    other.load(engine.config)
    fired = engine.fire_due() + other.fire_due()
    assert sorted(d.decision for d in fired) == ["launched", "launched"]
    main = next(launch for launch in orchestrator.launches if launch["params"]["n"] != -1)
    assert main["params"] == {"n": 99}
    assert main["event"].id == events[-1].id
    assert engine.fire_due() == [] and engine.next_due_ms() is None


def test_a_claimed_burst_whose_router_died_is_launched_once_by_another(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    clock = Clock(1000.0)
    text = "triggers: [{id: b, event: e, workstream: WS-A, debounce: 1s}]"
    engine, orchestrator = engine_for(redis_client, tmp_path, text, clock=clock)
    engine.handle(make_event("e"))
    clock.now += 2
    [burst] = engine.limits.claim_due(int(clock.now * 1000))  # claimed, then the router died
    assert engine.fire_due() == []  # leased
    clock.now += 31
    assert [d.decision for d in engine.fire_due()] == ["launched"]
    assert engine.fire_due() == []
    assert len(orchestrator.launches) == 1 and orchestrator.launches[0]["event"].id == burst.event.id


def test_each_schedule_slot_fires_once_across_racing_ticks(redis_client: redis.Redis,
                                                           tmp_path: Path) -> None:
    clock = Clock(1_700_000_000.0)
    text = "triggers: [{id: s, schedule: {every: 1s}, workstream: WS-A, params: {at: '{{ schedule.slot }}'}}]"
    engine, orchestrator = engine_for(redis_client, tmp_path, text, clock=clock)
    other, _ = engine_for(redis_client, tmp_path, text, clock=clock)
    other.orchestrator = orchestrator
    for step in range(10):
        clock.now += 0.5
        engine.fire_schedules(token=f"a{step}")
        other.fire_schedules(token=f"b{step}")
    slots = [launch["params"]["at"] for launch in orchestrator.launches]
    # The first look fires the last 10 s of slots, then each slot of the 5 s that follow: once.
    assert len(slots) == len(set(slots)) == 15
    # A retried task (same token) may finish the launch of a slot it fenced.
    assert redis_client.get(f"pitstop:triggers:slot:s:{int(clock.now)}") is not None


def test_a_schedule_missed_while_beat_was_down_follows_its_catch_up(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    clock = Clock(1_700_000_000.0)
    text = """
        triggers:
          - {id: skip, schedule: {every: 10s, grace: 5s}, workstream: WS-A}
          - {id: once, schedule: {every: 10s, grace: 5s, catch_up: once}, workstream: WS-B}
    """
    engine, orchestrator = engine_for(redis_client, tmp_path, text, clock=clock)
    engine.fire_schedules(token="t0")
    orchestrator.launches.clear()
    clock.now += 305  # Beat down for five minutes
    decisions = engine.fire_schedules(token="t1")
    kinds = sorted((d.rule, d.decision) for d in decisions)
    assert kinds == [("once", "launched"), ("once", "missed"), ("skip", "missed")]
    assert [launch["workstream"] for launch in orchestrator.launches] == ["WS-B"]


def test_reload_refuses_a_bad_edit_and_keeps_the_last_good_config(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    (tmp_path / "triggers.yaml").write_text("triggers: [{id: a, event: x, workstream: WS-A}]\n")
    source = ConfigSource(tmp_path, TriggerState(redis_client),
                          catalog_loader=lambda text, file, path: CATALOG)
    good = source.reload()
    (tmp_path / "triggers.yaml").write_text("triggers:\n  - {id: a, event: x, workstream: NOPE}\n")
    assert source.files_changed()
    with pytest.raises(ConfigError, match="unknown workstream"):
        source.reload()
    state = TriggerState(redis_client)
    assert state.active_version() == good.config.version
    error = state.last_error()
    assert error is not None and "triggers.yaml:2 at triggers[0].workstream" in error["error"]
    active = state.active_config()
    assert active is not None and "WS-A" in active.triggers_text
    json.dumps(active.to_fields())


def test_dry_run_changes_nothing(redis_client: redis.Redis, tmp_path: Path) -> None:
    engine, orchestrator = engine_for(redis_client, tmp_path, """
        triggers:
          - {id: d, event: e, workstream: WS-A, dedupe: "{{ event.data.k }}", debounce: 1s}
          - {id: t, event: e, workstream: WS-B, throttle: {max: 1, per: 1h}}
    """)
    event = make_event("e", {"k": "1"})
    decisions: list[Any] = engine.evaluate(event)
    assert [d.decision for d in decisions] == ["debounced", "would_launch"]
    assert list(redis_client.scan_iter("pitstop:*")) == []
    assert not orchestrator.launches
    assert not (tmp_path / "trigger_executions.jsonl").exists()


def test_dry_run_tells_which_limit_would_stop_a_launch(redis_client: redis.Redis,
                                                       tmp_path: Path) -> None:
    engine, _ = engine_for(redis_client, tmp_path, """
        triggers:
          - {id: d, event: e, workstream: WS-A, dedupe: "{{ event.data.k }}"}
          - {id: t, event: e, workstream: WS-B, throttle: {max: 1, per: 1h}}
          - {id: bad, event: e, workstream: WS-B, throttle: {max: 1, per: 1h, key: "{{ event.data.nope }}"}}
    """)
    assert [d.decision for d in engine.handle(make_event("e", {"k": "1"}))] == [
        "launched", "launched", "failed"]
    decisions = engine.evaluate(make_event("e", {"k": "1"}))
    assert [(d.decision, d.reason.split(" was")[0]) for d in decisions[:2]] == [
        ("deduped", "dedupe key '1'"), ("throttled", "1 launches per 3600s already")]
    assert "event.data.nope is not set" in decisions[2].reason


def test_the_config_in_force_names_the_version_it_was_loaded_as(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    """`pitstop triggers list`/`test` and the web view compile the config stored in Redis; they
    named another version (a16faf…) than reload, doctor, the routers and their decisions
    (dc2a9a…) for the shipped files, because the workstream catalog hashed its text otherwise."""
    root = Path(__file__).resolve().parents[2] / "config"
    for name in ("triggers.yaml", "workstreams.yaml"):
        (tmp_path / name).write_text((root / name).read_text(encoding="utf-8"), encoding="utf-8")
    source = ConfigSource(tmp_path, TriggerState(redis_client))
    loaded = source.reload()
    active = source.active()
    assert active is not None
    assert active.config.version == loaded.config.version == source.state.active_version()
    assert active.catalog is not None and loaded.catalog is not None
    assert active.catalog.version == loaded.catalog.version
