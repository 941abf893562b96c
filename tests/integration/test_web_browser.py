"""The web view in a real browser (Debian's headless Chromium, driven by Playwright) against a
real ``pitstop serve``, a real Redis and a real worker: the live feed shows an emitted event
within a second, a launched workstream's graph turns green step by step, an ack from the page
is recorded, and attacker-controlled text never runs as script.

Skipped, saying why, where Chromium or Playwright is missing (``.ci/run`` installs both).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from pitstop import components
from pitstop.alerts.store import AlertStore
from pitstop.kernel.constants import LOG_TRIGGER_EXECUTIONS
from pitstop.kernel.settings import load_settings
from pitstop.kernel.statelog import StateLog
from pitstop.runs.output import RunOutput
from pitstop.runs.store import RunStore
from pitstop.workstreams import WorkstreamCatalog, orchestrator_from
from tests.support import Proc, gate, serving
from tests.web_support import PASSWORD, XSS, make_alert, web_project_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

CHROMIUM = os.environ.get("PITSTOP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright is not installed (pip install -e '.[test]')")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium; "
                    ".ci/run installs it)")
    with sync_api.sync_playwright() as playwright:
        try:
            launched = playwright.chromium.launch(executable_path=CHROMIUM,
                                                  args=["--no-sandbox", "--disable-gpu"])
        except Exception as exc:  # a broken install: say so rather than fail every test
            pytest.skip(f"Chromium at {CHROMIUM} does not start: {exc}")
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def web_env(pitstop_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return web_project_env(pitstop_env, tmp_path_factory.mktemp("web-home"))


@pytest.fixture(scope="module")
def server(web_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serving(web_env, tmp_path_factory.mktemp("web-serve") / "serve.log") as (_, base):
        yield base


@pytest.fixture(scope="module")
def client(web_env: dict[str, str]) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(web_env["PITSTOP_REDIS_URL"])
    yield connection
    connection.close()


@pytest.fixture(scope="module")
def session(browser: Any, server: str) -> Iterator[Any]:
    """A browser context logged in through the login form, as the user of the test's web.yaml
    (a login with the API token would be read-only: no Acknowledge button)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(f"{server}/ui/events")
    assert "/ui/login" in page.url  # no session: sent to the login page
    page.fill("input[name=user]", "alice")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{server}/ui/events")
    page.close()
    yield context
    context.close()


class Dialogs:
    """Every JavaScript dialog a page opens (an XSS payload that ran would open one)."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    def watch(self, page: Any) -> Any:
        def record(dialog: Any) -> None:
            self.opened.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", record)
        return page


def test_an_emitted_event_appears_in_the_live_feed_within_a_second(
        session: Any, server: str, web_env: dict[str, str], client: redis.Redis) -> None:
    bus = components.event_bus(client, load_settings(environ=web_env))
    page = session.new_page()
    page.goto(f"{server}/ui/events?pattern=webtest.**")
    page.wait_for_selector("[data-live-events] [data-live-state]:text-is('live')", timeout=10_000)
    published = time.monotonic()
    event = bus.publish("webtest.feed.completed", {"who": "browser"})
    row = page.wait_for_selector(f"[data-live-rows] tr[data-event-id='{event.id}']",
                                 timeout=5_000)
    took = time.monotonic() - published
    assert took < 1.0, f"the event showed after {took:.2f}s"
    assert "webtest.feed.completed" in row.inner_text()
    bus.publish("other.feed.completed", {})  # not matching the pattern: never shown
    later = bus.publish("webtest.feed.again", {})
    page.wait_for_selector(f"[data-live-rows] tr[data-event-id='{later.id}']", timeout=5_000)
    assert "other.feed" not in page.inner_text("[data-live-rows]")
    page.close()


RECORD_STEPS = """() => {
  window.__steps = [];
  const snapshot = () => Object.fromEntries(Array.from(document.querySelectorAll('[data-step]'))
      .map(el => [el.getAttribute('data-step'), el.getAttribute('data-status')]));
  window.__steps.push(snapshot());
  new MutationObserver(() => window.__steps.push(snapshot())).observe(
      document.querySelector('.graph'), {attributes: true, subtree: true,
                                         attributeFilter: ['data-status']});
}"""


def test_a_launched_workstreams_graph_turns_green_step_by_step(
        session: Any, server: str, web_env: dict[str, str], client: redis.Redis,
        session_worker: Proc) -> None:
    settings = load_settings(environ=web_env)
    redactor = components.new_redactor(settings)
    from workers.app import create_app

    with tempfile.TemporaryDirectory(dir="/tmp") as short:  # a unix socket path is short
        sock = Path(short) / "gate"
        catalog = WorkstreamCatalog.from_mapping({"workstreams": {"WS-GRAPH": {"steps": [
            {"id": "gate", "kind": "run", "params": {"script": "wait_for_gate.py",
                                                     "args": [str(sock)]}},
            {"parallel": [{"id": "left", "kind": "run",
                           "params": {"script": "sleep.py", "args": ["0.5"]}},
                          {"id": "right", "kind": "run",
                           "params": {"script": "sleep.py", "args": ["0.8"]}}]},
            {"id": "last", "kind": "run", "params": {"script": "sleep.py", "args": ["0.3"]}}]}}})
        orchestrator = orchestrator_from(
            settings, client, components.event_bus(client, settings),
            components.run_store(client, settings, redactor),
            create_app(settings, web_env["PITSTOP_REDIS_URL"]).send_task, catalog=catalog,
            redactor=redactor)
        with gate(sock) as open_gate:
            run_id = orchestrator.launch_workstream("WS-GRAPH").run_id
            assert run_id is not None
            page = session.new_page()
            page.goto(f"{server}/ui/runs/{run_id}")
            assert page.locator(".stage.parallel [data-step]").count() == 2  # side by side
            page.evaluate(RECORD_STEPS)
            page.wait_for_selector("[data-step='gate'][data-status='running']", timeout=30_000)
            open_gate()
            page.wait_for_selector("[data-f='run-status'][data-status='succeeded']",
                                   timeout=30_000)
    snapshots: list[dict[str, str]] = page.evaluate("window.__steps")
    page.close()
    green = [{step for step, status in snap.items() if status == "succeeded"}
             for snap in snapshots]
    order = ["gate", "left", "right", "last"]
    assert green[-1] == set(order)
    assert not green[0], "the page opened on a run already under way"
    first_green = {step: next(i for i, g in enumerate(green) if step in g) for step in order}
    # Live, stage after stage, with the page open all along: each stage turned green in a later
    # update than the stage before it, and the parallel group ran side by side meanwhile.
    assert first_green["gate"] < min(first_green["left"], first_green["right"])
    assert max(first_green["left"], first_green["right"]) < first_green["last"]
    assert any(s["gate"] == "succeeded" and s["left"] == "running" and s["right"] == "running"
               for s in snapshots), snapshots


def test_ack_on_an_alert_records_it(session: Any, server: str, client: redis.Redis) -> None:
    alert = make_alert(client, subject="browser ack test")
    page = session.new_page()
    page.goto(f"{server}/ui/alerts")
    page.click(f"tr[data-alert='{alert.id}'] button[data-action='ack']")
    page.wait_for_selector(f"tr[data-alert='{alert.id}'] [data-ack]:has-text('web:alice')")
    acks = AlertStore(client).acks([alert.id])
    assert acks[alert.id][1] == "web:alice"
    page.close()


def test_xss_payloads_render_as_text_and_never_run(
        session: Any, server: str, web_env: dict[str, str], client: redis.Redis) -> None:
    assert len(XSS) >= 30
    settings = load_settings(environ=web_env)
    bus = components.event_bus(client, settings)
    events = [bus.publish(f"webxss.case-{i}.failed",
                          {"payload": p, p[:60]: "as a key", "url": p, "run_url": p},
                          source=p[:200]) for i, p in enumerate(XSS)]
    run = RunStore(client).create_run(kind="script", params={"script": XSS[2], "args": XSS[:4]},
                                      queue="linux")
    output = RunOutput(client)
    output.append_many(run.run_id, [("stdout" if i % 2 else "stderr", p)
                                    for i, p in enumerate(XSS)])
    output.close(run.run_id, status="failed", exit_code=1)
    make_alert(client, subject=XSS[0], examples=[
        {"id": events[0].id, "type": "webxss.failed", "summary": XSS[2], "link": XSS[10]}])
    StateLog(LOG_TRIGGER_EXECUTIONS, settings.state_dir).append(
        {"decision": "condition_false", "rule": "build_on_push", "workstream": "WS-WEB",
         "config_version": "x", "event_id": events[1].id, "event_type": XSS[3],
         "reason": XSS[5], "run_id": XSS[6]})
    dialogs = Dialogs()
    page = dialogs.watch(session.new_page())
    page.goto(f"{server}/ui/events?pattern=webxss.**&limit=500")
    page.wait_for_selector("[data-live-events] [data-live-state]:text-is('live')", timeout=10_000)
    live = [bus.publish("webxss.live.failed", {"payload": p}, source=p[:200]) for p in XSS]
    page.wait_for_selector(f"[data-live-rows] tr[data-event-id='{live[-1].id}']", timeout=5_000)
    shown = page.inner_text("main")
    for payload in XSS:
        assert payload.strip() in shown  # the text itself, as text
    for path in [f"/ui/events/{events[0].id}", f"/ui/events/{events[1].id}", "/ui/runs",
                 "/ui/alerts", "/ui/triggers",
                 "/ui/events?pattern=%3Csvg%20onload%3Dalert(1)%3E",
                 "/ui/events?since=%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E"]:
        page.goto(f"{server}{path}")
        page.wait_for_load_state("load")
    page.goto(f"{server}/ui/runs/{run.run_id}")
    page.wait_for_selector("[data-output-end][data-ended='failed']", timeout=10_000)
    out = page.inner_text("pre.output")
    assert all(p in out for p in XSS)
    assert XSS[2] in page.inner_text("main")  # the script's name
    links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))")
    assert not [h for h in links if not h.startswith(("/ui/", "http://127.0.0.1:5555"))]
    page.wait_for_timeout(300)  # let any deferred handler (onload, onerror, ontoggle) fire
    assert dialogs.opened == [], f"a payload ran: {dialogs.opened}"
    page.close()
