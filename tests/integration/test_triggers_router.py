"""The router in real workers on a real Redis: events launch workstreams through the consumer
group, whatever happens to the workers; debounce is fleet-wide; config edits reload live."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from pitstop.bus.eventbus import EventBus
from pitstop.kernel.constants import TRIGGER_CONFIG_ERROR_KEY, TRIGGER_CONFIG_KEY
from tests.support import Proc, run_cli, wait_for, worker_args
from tests.trigger_project import decisions, launches_per_event, own_project, workstream_runs

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

WORKSTREAMS = """
    workstreams:
      WS-A:
        steps:
          - {id: note, kind: emit, params: {type: test.noted}}
      WS-BUILD:
        params: {branch: main, n: 0}
        steps:
          - {id: note, kind: emit, params: {type: test.built}}
      WS-KILL:
        steps:
          - {id: note, kind: emit, params: {type: test.killed}}
"""
TRIGGERS = """
    triggers:
      - {id: on_a, event: test.a, workstream: WS-A}
      - id: build
        event: git.push
        workstream: WS-BUILD
        debounce: {window: 1s, key: "{{ event.data.branch }}"}
        params: {branch: "{{ event.data.branch }}", n: "{{ event.data.n }}"}
      - {id: on_kill, event: test.kill, workstream: WS-KILL}
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str],
                                                                        redis.Redis]]:
    with own_project(tmp_path_factory.mktemp("triggers-home"),
                     tmp_path_factory.mktemp("triggers-redis"), triggers=TRIGGERS,
                     workstreams=WORKSTREAMS) as project:
        yield project


def _worker(home: Path, env: dict[str, str], name: str) -> Proc:
    return Proc(worker_args(name), env, home / f"{name}.log")


@pytest.fixture(scope="module")
def worker(project: tuple[Path, dict[str, str], redis.Redis]) -> Iterator[Proc]:
    home, env, _ = project
    proc = _worker(home, env, "router1")
    try:
        proc.wait_for_output("ready.", 60)
        yield proc
    finally:
        proc.stop()


def test_an_event_emitted_while_no_worker_runs_launches_once_a_worker_starts(
        project: tuple[Path, dict[str, str], redis.Redis], request: pytest.FixtureRequest) -> None:
    home, env, client = project
    done = run_cli(["emit", "test.a", "n=1"], env)
    assert done.returncode == 0, done.stderr
    event_id = done.stdout.split()[0]
    assert workstream_runs(client) == []
    request.getfixturevalue("worker")  # only now does a router exist
    wait_for(lambda: decisions(home, event_id=event_id), 30, message="the launch")
    [decision] = decisions(home, event_id=event_id)
    assert decision["decision"] == "launched" and decision["rule"] == "on_a"
    assert decision["config_version"] == client.hget(TRIGGER_CONFIG_KEY, "version").decode()
    assert launches_per_event(client, "WS-A")[event_id] == 1


def test_the_same_event_delivered_twice_launches_once(
        project: tuple[Path, dict[str, str], redis.Redis], worker: Proc) -> None:
    home, _, client = project
    bus = EventBus(client)
    event = bus.publish("test.a", {"twice": True})
    bus.publish_event(event)  # the same envelope again: a redelivery
    wait_for(lambda: len(decisions(home, event_id=event.id)) == 2, 30, message="two decisions")
    assert sorted(d["decision"] for d in decisions(home, event_id=event.id)) == [
        "deduped", "launched"]
    assert launches_per_event(client, "WS-A")[event.id] == 1


def test_a_hundred_pushes_for_one_branch_launch_once_with_the_last(
        project: tuple[Path, dict[str, str], redis.Redis], worker: Proc) -> None:
    home, _, client = project
    bus = EventBus(client)
    events = [bus.publish("git.push", {"branch": "feature-x", "n": n}) for n in range(100)]
    later = bus.publish("git.push", {"branch": "other", "n": -1})
    wait_for(lambda: decisions(home, rule="build", decision="launched",
                               event_id=events[-1].id), 30, message="the debounced launch")
    # The other branch's burst came due after this one's: once it launched, this one is done.
    wait_for(lambda: decisions(home, rule="build", decision="launched", event_id=later.id), 30,
             message="the other branch's launch")
    runs = [run for run in workstream_runs(client, "WS-BUILD")
            if run.params.get("branch") == "feature-x"]
    assert len(runs) == 1
    assert runs[0].params == {"branch": "feature-x", "n": 99}
    assert runs[0].event is not None and runs[0].event["id"] == events[-1].id
    assert len(decisions(home, rule="build", decision="debounced")) >= 100


def test_a_config_edit_reloads_live_and_a_bad_one_is_refused(
        project: tuple[Path, dict[str, str], redis.Redis], worker: Proc) -> None:
    home, env, client = project
    triggers = home / "config" / "triggers.yaml"
    before = client.hget(TRIGGER_CONFIG_KEY, "version")
    triggers.write_text(triggers.read_text() + "  - {id: on_b, event: test.b, workstream: WS-A}\n")
    wait_for(lambda: client.hget(TRIGGER_CONFIG_KEY, "version") != before, 15,
             message="the file watch to reload")
    event = EventBus(client).publish("test.b")
    wait_for(lambda: decisions(home, event_id=event.id, decision="launched"), 30,
             message="the new rule to launch")
    good = client.hget(TRIGGER_CONFIG_KEY, "version")
    triggers.write_text(triggers.read_text() + "  - {id: bad, event: test.c, workstream: NOPE}\n")
    wait_for(lambda: client.exists(TRIGGER_CONFIG_ERROR_KEY), 15, message="the refusal")
    assert client.hget(TRIGGER_CONFIG_KEY, "version") == good
    done = run_cli(["triggers", "reload"], env)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert "triggers.yaml:" in line and "at triggers[4].workstream: unknown workstream 'NOPE'" in line
    doctor = run_cli(["doctor", "--json"], env)
    [check] = [c for c in json.loads(doctor.stdout) if c["name"] == "triggers"]
    assert not check["ok"] and "unknown workstream 'NOPE'" in check["detail"]
    event = EventBus(client).publish("test.b")  # the last good config stays in force
    wait_for(lambda: decisions(home, event_id=event.id, decision="launched"), 30,
             message="the old config to launch")
    triggers.write_text(TRIGGERS_TEXT)
    wait_for(lambda: not client.exists(TRIGGER_CONFIG_ERROR_KEY), 15, message="a good reload")


TRIGGERS_TEXT = __import__("textwrap").dedent(TRIGGERS)


def test_a_router_killed_mid_batch_loses_no_launch_and_doubles_none(
        project: tuple[Path, dict[str, str], redis.Redis], worker: Proc) -> None:
    home, env, client = project
    worker.kill()  # the module's worker: this test brings its own
    bus = EventBus(client)
    events = [bus.publish("test.kill", {"n": n}) for n in range(150)]
    first = _worker(home, env, "router-k1")
    try:
        wait_for(lambda: len(decisions(home, rule="on_kill")) >= 20, 60, interval=0.05,
                 message="the router to be mid-batch")
        first.kill()  # SIGKILL, mid-batch
    finally:
        first.stop()
    routed = len(decisions(home, rule="on_kill"))
    assert routed < len(events), "the batch finished before the kill: raise the event count"
    second = _worker(home, env, "router-k2")  # another name: it must reclaim, not resume
    try:
        wait_for(lambda: len(launches_per_event(client, "WS-KILL")) == len(events), 60,
                 interval=0.3, message="every event to launch")
        per_event = launches_per_event(client, "WS-KILL")
        assert set(per_event) == {event.id for event in events}
        assert set(per_event.values()) == {1}
    finally:
        second.stop()
