"""Triage against a real Redis: ``--record`` history and events, ``triage flaky``, the ``triage``
task on a real worker, and the ``triage`` workstream step."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest
import redis
from celery import Celery

from pitstop.bus.eventbus import EventBus
from pitstop.kernel.constants import EVENT_TRIAGE_AUTO_FIXABLE, EVENT_TRIAGE_COMPLETED, TASK_TRIAGE
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.serverinfo import ServerInfo
from pitstop.kernel.settings import load_settings
from pitstop.triage.step import TriageParams, TriageStep
from pitstop.workstreams.steps import StepContext, get_step_kind
from tests.support import ROOT, Proc, run_cli, task_outcome, wait_for
from workers.app import create_app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CORPUS = ROOT / "tests" / "triage" / "corpus"
PASSING = ('<?xml version="1.0"?><testsuites><testsuite name="s">'
           '<testcase classname="tests.test_net" name="test_ping"/></testsuite></testsuites>')
FAILING = ('<?xml version="1.0"?><testsuites><testsuite name="s">'
           '<testcase classname="tests.test_net" name="test_ping"><failure message="assert 0 == 1">'
           "E   assert 0 == 1</failure></testcase></testsuite></testsuites>")


@pytest.fixture
def project(tmp_path: Path, redis_server: ServerInfo, redis_client: redis.Redis) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("PITSTOP_")}
    env.update(PITSTOP_HOME=str(tmp_path), PITSTOP_REDIS_URL=redis_server.url,
               PYTHONPATH=str(ROOT))
    return env


def test_record_publishes_events_and_history_finds_the_flaky_test(
        tmp_path: Path, project: dict[str, str], redis_client: redis.Redis) -> None:
    passing, failing = tmp_path / "pass.xml", tmp_path / "fail.xml"
    passing.write_text(PASSING)
    failing.write_text(FAILING)
    shutil.copy(CORPUS / "pytest_type_error.txt", tmp_path / "types.txt")
    done = run_cli(["triage", "fail.xml", "types.txt", "--record", "--commit", "abc123"], project,
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "type_error" in done.stdout and "published 3 events" in done.stdout
    events = list(EventBus(redis_client).replay(pattern="triage.**"))
    fixable = [event for event in events if event.type == EVENT_TRIAGE_AUTO_FIXABLE]
    assert {event.data["category"] for event in fixable} == {"type_error", "attribute_error"}
    ratio = next(event for event in fixable if event.data["category"] == "type_error")
    assert ratio.data["test_id"] == "tests/test_ratio.py::test_ratio"
    assert ratio.data["file"] == "tests/test_ratio.py" and ratio.data["line"] == 5
    assert ratio.data["error"].startswith("TypeError: ratio() takes 2 positional arguments")
    assert ratio.data["evidence"] and ratio.data["commit"] == "abc123"
    completed = [event for event in events if event.type == EVENT_TRIAGE_COMPLETED]
    assert len(completed) == 1 and completed[0].data["summary"]["failures"] == 3

    none = run_cli(["triage", "flaky"], project, cwd=tmp_path)
    assert none.returncode == 0 and "no flaky tests" in none.stdout
    # the same test failing on another commit is not flaky; passing on abc123 makes it flaky
    run_cli(["triage", "fail.xml", "--record", "--commit", "def456"], project, cwd=tmp_path)
    assert "no flaky tests" in run_cli(["triage", "flaky"], project, cwd=tmp_path).stdout
    again = run_cli(["triage", "pass.xml", "--record", "--commit", "abc123"], project,
                    cwd=tmp_path)
    assert "flaky on this commit: tests.test_net.test_ping" in again.stdout
    listed = run_cli(["triage", "flaky", "--json"], project, cwd=tmp_path)
    stats = json.loads(listed.stdout.splitlines()[0])
    assert stats["test_id"] == "tests.test_net.test_ping" and stats["flaky_commits"] == ["abc123"]
    assert stats["runs"] == 3 and stats["flip_rate"] == 0.5
    # from now on its failures are known flaky
    verdict = run_cli(["triage", "fail.xml", "--record", "--commit", "abc999", "--json"], project,
                      cwd=tmp_path)
    assert json.loads(verdict.stdout)["groups"][0]["category"] == "known_flaky"


def test_step_triages_a_file_inside_the_project_only(
        tmp_path: Path, redis_client: redis.Redis, project: dict[str, str]) -> None:
    settings = load_settings(environ=project, cwd=tmp_path)
    (tmp_path / "reports").mkdir()
    shutil.copy(CORPUS / "pytest_syntax_error.xml", tmp_path / "reports" / "junit.xml")
    outside = tmp_path.parent / f"outside-{uuid.uuid4().hex}.xml"
    outside.write_text(FAILING)
    (tmp_path / "reports" / "link.xml").symlink_to(outside)
    kind = get_step_kind("triage")
    assert isinstance(kind, TriageStep)
    bus = EventBus(redis_client)

    def run(file: str) -> object:
        params = TriageParams(file=file, commit="abc123")
        ctx = StepContext(run_id="r1", workstream_id="ws", step_id="triage", attempt=1,
                          params=params, event=None, trace_id=None, hops=0, timeout=None,
                          settings=settings, redis=redis_client, bus=bus, redactor=Redactor())
        return kind.execute(ctx)

    result = run("reports/junit.xml")
    assert result.status == "succeeded", result.message
    assert result.outputs["top_category"] == "syntax_error" and result.outputs["auto_fixable"] == 1
    assert [event.data["test_id"] for event in bus.replay(pattern=EVENT_TRIAGE_AUTO_FIXABLE)] == [
        "tests.test_parser"]
    for bad in ("reports/link.xml", str(outside), "../x.xml", "reports/missing.xml"):
        refused = run(bad)
        assert refused.status == "failed" and "triage:" in refused.message
    outside.unlink()


def test_triage_task_on_a_worker(session_worker: Proc, pitstop_env: dict[str, str],
                                 pitstop_home: Path) -> None:
    settings = load_settings(pitstop_home / "config", environ=pitstop_env)
    app: Celery = create_app(settings, pitstop_env["PITSTOP_REDIS_URL"])
    client = redis.Redis.from_url(pitstop_env["PITSTOP_REDIS_URL"])
    try:
        text = (CORPUS / "pytest_attribute_error.txt").read_text()
        task_id = str(uuid.uuid4())
        app.send_task(TASK_TRIAGE, task_id=task_id, queue="default",
                      kwargs={"contents": [{"name": "ci.log", "text": text}], "record": False})
        outcome = wait_for(lambda: task_outcome(client, task_id), timeout=60,
                           message="the triage task's result")
        assert outcome["status"] == "SUCCESS", outcome
        groups = outcome["result"]["groups"]
        assert groups[0]["category"] == "attribute_error"
        assert groups[0]["tests"] == ["tests/test_basket.py::test_add"]
        bad_id = str(uuid.uuid4())
        app.send_task(TASK_TRIAGE, task_id=bad_id, queue="default",
                      kwargs={"paths": ["/etc/passwd"], "record": False})
        refused = wait_for(lambda: task_outcome(client, bad_id), timeout=60,
                           message="the refused task's result")
        assert refused["status"] == "FAILURE" and "PathNotAllowed" in json.dumps(refused)
    finally:
        client.close()
        app.close()
