"""Make the web view's screenshots for the README (docs/img/web-*.png).

    .venv/bin/python docs/img/make_screenshots.py [--chromium /usr/bin/chromium]

A private redis-server gets a small, plausible fleet's worth of data (events of a few traces,
script and workstream runs, trigger decisions against the shipped config, alerts, triage
batches and flaky tests, consumer groups and a Beat heartbeat); the web view is served on
127.0.0.1 and Debian's headless Chromium, driven by Playwright, logs in and shoots each page.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from starlette.applications import Starlette

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench._harness import serve, web_project  # noqa: E402
from pitstop import components  # noqa: E402
from pitstop.alerts.engine import Silence  # noqa: E402
from pitstop.alerts.model import Alert  # noqa: E402
from pitstop.alerts.store import AlertStore  # noqa: E402
from pitstop.kernel.constants import (  # noqa: E402
    ALERT_DELIVERED_PREFIX,
    ALERTS_GROUP,
    BEAT_HEARTBEAT_KEY,
    BEAT_LOCK_KEY,
    EVENT_STREAM,
    LOG_TEST_TRIAGE,
    LOG_TRIGGER_EXECUTIONS,
    ROUTER_GROUP,
)
from pitstop.kernel.ids import new_id  # noqa: E402
from pitstop.kernel.statelog import StateLog  # noqa: E402
from pitstop.runs.output import RunOutput  # noqa: E402
from pitstop.runs.store import RunStore  # noqa: E402
from pitstop.triage.flaky import FlakyHistory  # noqa: E402
from pitstop.web import WebConfig, WebDeps, web_routes  # noqa: E402

TOKEN = "screenshot-token-1234"  # noqa: S105 - a throw-away token of this run
OUT = Path(__file__).resolve().parent


def seed(client: redis.Redis, settings: Any) -> dict[str, str]:
    bus = components.event_bus(client, settings, source="ci-runner-3")
    runs = RunStore(client)
    output = RunOutput(client)
    now = datetime.now(UTC)
    push = bus.publish("github.push", {"branch": "main", "after": "9f3c2a1e", "changed_files":
                                       ["schema/orders.sql", "src/api.py"]}, source="github")
    phase = bus.publish("phase.1.completed", {"branch": "main", "sha": "9f3c2a1e"})
    spec = {"id": "WS-PHASE-2", "stages": [
        [{"id": "checkout", "kind": "run"}],
        [{"id": "unit", "kind": "run"}, {"id": "lint", "kind": "run"},
         {"id": "types", "kind": "run"}],
        [{"id": "package", "kind": "run", "retries": 1}],
        [{"id": "announce", "kind": "emit"}]],
        "on_failure": [[{"id": "alert", "kind": "emit"}]]}

    def step(status: str, start: float | None, took: float | None, **extra: Any) -> dict[str, Any]:
        state: dict[str, Any] = {"status": status, "attempt": 1 if start is not None else 0,
                                 "queue": "linux", **extra}
        if start is not None:
            state["started_at"] = (now - timedelta(seconds=start)).isoformat()
            state["host"] = "build-7"
        if took is not None and start is not None:
            state["finished_at"] = (now - timedelta(seconds=start - took)).isoformat()
        return state

    workstream = runs.create_run(kind="workstream", workstream_id="WS-PHASE-2",
                                 trace_id=phase.trace_id, params={"branch": "main"})
    runs.update_run(workstream.run_id, status="running", started_at=now - timedelta(seconds=95),
                    event=phase.to_dict(),
                    orchestration={"spec": spec, "trigger_id": "phase1_to_phase2"},
                    steps={"checkout": step("succeeded", 95, 12.4),
                           "unit": step("succeeded", 82, 41.0),
                           "lint": step("succeeded", 82, 9.7),
                           "types": step("running", 82, None),
                           "package": step("pending", None, None),
                           "announce": step("pending", None, None),
                           "alert": step("pending", None, None)})
    script = runs.create_run(kind="script", queue="linux", trace_id=phase.trace_id,
                             params={"script": "scripts/build.sh", "args": ["--release"]},
                             parent_run_id=workstream.run_id)
    runs.update_run(script.run_id, status="succeeded", started_at=now - timedelta(seconds=40),
                    finished_at=now - timedelta(seconds=3), exit_code=0, host="build-7",
                    attempts=1)
    output.append_many(script.run_id, [
        ("stdout", "==> configuring release build (sha 9f3c2a1e)"),
        ("stdout", "[1/4] compiling 212 sources"), ("stdout", "[2/4] linking pitstop-api"),
        ("stderr", "warning: unused variable 'retries' in src/queue.c:88"),
        ("stdout", "[3/4] running smoke tests: 48 passed"),
        ("stdout", "[4/4] packaging dist/pitstop-api-1.8.0.tar.gz (12.4 MB)"),
        ("stdout", "token used: ***"), ("stdout", "done in 37.2s")])
    output.close(script.run_id, status="succeeded", exit_code=0)
    for index, status in enumerate(["succeeded", "failed", "succeeded", "succeeded", "lost",
                                    "succeeded", "timed_out", "succeeded"]):
        run = runs.create_run(kind="script", queue="linux" if index % 3 else "pwsh",
                              params={"script": f"scripts/{['test', 'lint', 'deploy'][index % 3]}"
                                                f".{'ps1' if index % 3 == 0 else 'sh'}"})
        runs.update_run(run.run_id, status=status,
                        started_at=now - timedelta(minutes=index * 7 + 3),
                        finished_at=now - timedelta(minutes=index * 7 + 1),
                        exit_code=0 if status == "succeeded" else 1, host=f"build-{index % 4}")
    for kind, data in [("tool.invoked", {"run_id": script.run_id, "script": "scripts/build.sh"}),
                       ("tool.succeeded", {"run_id": script.run_id, "exit_code": 0}),
                       ("git.push", {"branch": "release/1.8", "sha": "41bd07c"}),
                       ("deploy.staging.succeeded", {"version": "1.8.0", "took": 42.1}),
                       ("tests.integration.failed", {"suite": "orders", "failed": 3,
                                                     "severity": "error"}),
                       ("tool.failed", {"script": "scripts/lint.sh", "exit_code": 1})]:
        bus.publish(kind, data, parent=phase if kind.startswith("tool.") else None,
                    trace_id=phase.trace_id if kind.startswith("tool.") else None)
    decisions = StateLog(LOG_TRIGGER_EXECUTIONS, settings.state_dir)
    decisions.append({"decision": "launched", "rule": "phase1_to_phase2",
                      "workstream": "WS-PHASE-2", "config_version": "4be0c1d2a9f3",
                      "event_id": phase.id, "event_type": phase.type, "trace_id": phase.trace_id,
                      "hops": 0, "run_id": workstream.run_id, "status": "launched"})
    decisions.append({"decision": "condition_false", "rule": "schema_changed",
                      "workstream": "WS-SCHEMA-CHECK", "config_version": "4be0c1d2a9f3",
                      "event_id": push.id, "event_type": push.type, "trace_id": push.trace_id,
                      "reason": "data.changed_files: no path matches schema/** (1 of 2 checked)"})
    decisions.append({"decision": "debounced", "rule": "push_build", "workstream": "WS-BUILD",
                      "config_version": "4be0c1d2a9f3", "event_id": push.id,
                      "event_type": push.type, "reason": "burst on main: launches in 5s"})
    store = AlertStore(client)
    stamp = float(client.time()[0])
    alerts = [Alert(id=new_id(), group_key=f"failures:{i}", route_id=route, receiver=receiver,
                    group={"subject": subject}, labels={"type": kind}, severity=severity,
                    source="ci-runner-3", created_at=stamp - age, first_event_at=stamp - age - 20,
                    last_event_at=stamp - age // 3, count=count)
              for i, (subject, kind, severity, route, receiver, age, count) in enumerate([
                  ("deploy to prod failed: smoke check /healthz 503", "deploy.prod.failed",
                   "critical", "critical", "oncall", 420, 2),
                  ("integration tests failing on main (orders)", "tests.integration.failed",
                   "error", "failures", "team-ci", 1800, 5),
                  ("runner build-3 disk 91% full", "fleet.disk.warning", "warning", "warnings",
                   "team-ci", 5400, 12)])]
    if not store.acquire("screenshots", 30):
        raise SystemExit("could not take the alert manager's lock")
    store.commit("screenshots", changed=alerts, closed={}, storm={}, outbox=[], seen=[],
                 now=stamp, requeue_after=60)
    for alert in alerts:  # as the delivery task records a first delivery
        client.set(ALERT_DELIVERED_PREFIX + alert.id, f'{{"at": {stamp - 300}, "channel": "slack"}}')
    store.ack(alerts[2].id, by="web:alice", now=stamp - 1200)
    store.add_silence(Silence(id="s-3f9c2a1e", pattern="fleet.disk.**", starts_at=stamp - 60,
                              ends_at=stamp + 7200, reason="disk swap on build-3",
                              created_by="web:alice"))
    triage = StateLog(LOG_TEST_TRIAGE, settings.state_dir)
    groups = [("dependency", "fix_dependency", False, "ModuleNotFoundError: No module named "
               "'orjson'", "tests/test_api.py", 7), ("lint", "auto_fix", True,
               "ruff E501 line too long (121 > 110)", "src/orders.py", 5),
              ("assertion", "investigate", False, "AssertionError: assert 402 == 200",
               "tests/test_orders.py", 3), ("timeout", "retry", False,
               "Timeout: test exceeded 60s", "tests/test_sync.py", 2)]
    for batch in range(12):
        fixable = total = 0
        for category, action, auto, error, file, count in groups:
            for n in range((count + batch) % 6 + 1):
                triage.append({"kind": "result", "batch_id": f"b{batch}", "category": category,
                               "action": action, "auto_fixable": auto, "error": error,
                               "fingerprint": f"{category}-{file}", "file": file, "line": 40 + n,
                               "test_id": f"{file}::test_case_{n}"})
                total += 1
                fixable += auto
        triage.append({"kind": "batch", "batch_id": f"b{batch}", "commit": f"c{batch:02d}",
                       "summary": {"failures": total, "groups": 4,
                                   "auto_fixable_share": round(fixable / total, 3)}})
    history = FlakyHistory(client)
    for commit, outcome in [("a1", "p"), ("a1", "f"), ("a2", "p"), ("a3", "f"), ("a3", "p")]:
        history.record(commit, [("tests/test_sync.py::test_reconnect", outcome),
                                ("tests/test_api.py::test_rate_limit", "f" if commit == "a1"
                                 and outcome == "p" else "p")], now=now)
    for group in (ROUTER_GROUP, ALERTS_GROUP):
        client.xgroup_create(EVENT_STREAM, group, id="0")
    client.set(BEAT_LOCK_KEY, "build-1/4411")
    client.set(BEAT_HEARTBEAT_KEY, f"{stamp - 4} build-1/4411 30")
    client.rpush("linux", *["{}"] * 3)
    return {"workstream": workstream.run_id, "script": script.run_id, "event": phase.id}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with web_project(TOKEN) as (settings, client):
        ids = seed(client, settings)
        # The token's login may act here, so the pages show their buttons.
        deps = WebDeps(client=client, bus=components.event_bus(client, settings),
                       settings=settings, config=WebConfig(token_can_act=True),
                       redactor=components.new_redactor(settings),
                       worker_probe=lambda: {"celery@build-1": ["default", "linux"],
                                             "celery@build-2": ["default", "linux"],
                                             "celery@win-1": ["default", "pwsh"]})
        web, base = serve(Starlette(routes=web_routes(deps)))
        bus = components.event_bus(client, settings, source="ci-runner-5")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium,
                                                 args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 820})
            page.goto(f"{base}/ui/login")
            page.fill("input[name=password]", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_url(f"{base}/ui/events")
            page.wait_for_selector("[data-live-state]:text-is('live')")
            for n in range(3):
                bus.publish("phase.1.completed" if n == 2 else "tool.succeeded",
                            {"branch": "main", "step": n})
            page.wait_for_selector("[data-live-rows] tr:nth-child(3)")
            page.screenshot(path=str(OUT / "web-events.png"))
            shots = {"web-trace.png": f"/ui/events/{ids['event']}",
                     "web-runs.png": "/ui/runs",
                     "web-workstream.png": f"/ui/runs/{ids['workstream']}",
                     "web-output.png": f"/ui/runs/{ids['script']}",
                     "web-triggers.png": "/ui/triggers", "web-alerts.png": "/ui/alerts",
                     "web-triage.png": "/ui/triage", "web-fleet.png": "/ui/fleet"}
            for name, path in shots.items():
                page.goto(f"{base}{path}")
                page.wait_for_load_state("networkidle") if "runs/" not in path else \
                    page.wait_for_timeout(800)  # let the live stream paint
                page.screenshot(path=str(OUT / name))
                print("wrote", OUT / name)
            browser.close()
        web.should_exit = True


if __name__ == "__main__":
    main()
