"""The web view through Starlette's test client on a real Redis: login (token, users, limits),
session cookies, CSRF, security headers, escaping of attacker-controlled values, the pages'
contents, the actions (enable/disable a rule, ack, silence), who may act (a token login is
read-only unless ``token_can_act``) and the live feed's batching."""

from __future__ import annotations

import html
import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.testclient import TestClient

from pitstop import components
from pitstop.alerts.engine import Silence
from pitstop.alerts.store import AlertStore
from pitstop.bus.streamcodec import EVENT_FIELD
from pitstop.kernel.constants import EVENT_STREAM, LOG_TRIGGER_EXECUTIONS, WEB_SESSION_PREFIX
from pitstop.kernel.errors import InvalidEventType
from pitstop.kernel.ids import new_id
from pitstop.kernel.settings import Settings
from pitstop.kernel.statelog import StateLog, read_log
from pitstop.runs.output import RunOutput
from pitstop.runs.store import RunStore
from pitstop.triggers.state import TriggerState
from pitstop.web.guard import CSP
from tests.web_support import (
    PASSWORD,
    TOKEN,
    XSS,
    as_alice,
    form_token,
    logged_in,
    login,
    make_alert,
    make_app,
    project_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PAGES = ["/ui/events", "/ui/runs", "/ui/triggers", "/ui/alerts", "/ui/triage", "/ui/fleet"]


@pytest.fixture
def settings(tmp_path: Path, redis_server: Any) -> Settings:
    return project_settings(tmp_path, redis_server.url)


@pytest.fixture
def app(settings: Settings, redis_client: redis.Redis) -> Any:
    return make_app(settings, redis_client, probe=lambda: {"w1@host": ["default", "linux"]})


def _hrefs(text: str) -> list[str]:
    return [html.unescape(h) for h in re.findall(r'\s(?:href|src|action)="([^"]*)"', text)]


# --- login -------------------------------------------------------------------------------------

def test_every_page_and_stream_needs_a_login(app: Any) -> None:
    client = TestClient(app)
    for path in PAGES:
        reply = client.get(path, follow_redirects=False)
        assert reply.status_code == 303, path
        assert reply.headers["location"].startswith("/ui/login?next=")
    for path in ["/ui/events/live", "/ui/runs/x/live", "/ui/runs/x/output"]:
        assert client.get(path).status_code == 401, path
    for path in ["/ui/alerts/a/ack", "/ui/triggers/build_on_push/disable", "/ui/logout"]:
        assert client.post(path, data={"csrf": "x"}).status_code == 401, path


def test_the_token_logs_in_with_a_strict_http_only_cookie(app: Any) -> None:
    client = TestClient(app)
    reply = login(client)
    assert reply.status_code == 303 and reply.headers["location"] == "/ui/events"
    cookie = next(c for c in reply.headers.get_list("set-cookie")
                  if c.startswith("pitstop_session="))
    flags = cookie.lower()
    assert "httponly" in flags and "samesite=strict" in flags and "path=/" in flags
    assert "secure" not in flags  # plain http: a Secure cookie would never come back
    assert client.get("/ui/events").status_code == 200


def test_over_tls_the_session_cookie_is_secure_and_host_only(app: Any) -> None:
    client = TestClient(app, base_url="https://testserver")
    reply = login(client)
    cookie = next(c for c in reply.headers.get_list("set-cookie")
                  if c.startswith("__Host-pitstop_session="))
    assert "secure" in cookie.lower() and "domain" not in cookie.lower()
    assert client.get("/ui/runs").status_code == 200


def test_users_log_in_with_their_password_and_wrong_ones_are_refused(app: Any) -> None:
    assert login(TestClient(app), PASSWORD, "alice").status_code == 303
    for user, password in [("alice", "wrong password"), ("mallory", PASSWORD), ("", "nope"),
                           ("alice", TOKEN)]:
        reply = login(TestClient(app), password, user)
        assert reply.status_code == 401, (user, password)
        assert "pitstop_session" not in reply.headers.get("set-cookie", "")


def test_the_token_login_can_be_turned_off(settings: Settings,
                                          redis_client: redis.Redis) -> None:
    app = make_app(settings, redis_client, token_login=False)
    assert login(TestClient(app)).status_code == 401
    assert login(TestClient(app), PASSWORD, "alice").status_code == 303


def test_failed_logins_are_limited_per_address(app: Any) -> None:
    client = TestClient(app)
    for _ in range(5):  # max_login_failures in the test's web.yaml
        assert login(client, "bad guess").status_code == 401
    reply = login(client)  # even the right token now waits for the window to pass
    assert reply.status_code == 429
    assert "pitstop_session" not in reply.headers.get("set-cookie", "")


def test_the_login_form_needs_its_own_token_and_cookie(app: Any) -> None:
    client = TestClient(app)
    page = client.get("/ui/login")
    token = form_token(page.text)
    other = TestClient(app)  # no login cookie: a form posted from elsewhere
    assert other.post("/ui/login", data={"csrf": token, "password": TOKEN},
                      follow_redirects=False).status_code == 403
    assert client.post("/ui/login", data={"csrf": "forged", "password": TOKEN},
                       follow_redirects=False).status_code == 403


def test_after_login_only_paths_of_the_web_view_are_followed(app: Any) -> None:
    client = TestClient(app)
    page = client.get("/ui/login?next=https://evil.example/x")
    assert "evil.example" not in page.text
    for target in ["https://evil.example/", "//evil.example/", "/\\evil.example",
                   "javascript:alert(1)", "/ui/runs?status=failed"]:
        client = TestClient(app)
        token = form_token(client.get("/ui/login").text)
        reply = client.post("/ui/login", data={"csrf": token, "password": TOKEN, "next": target},
                            follow_redirects=False)
        expected = target if target == "/ui/runs?status=failed" else "/ui/events"
        assert reply.headers["location"] == expected, target


def test_forged_or_altered_session_cookies_are_refused(app: Any) -> None:
    client = logged_in(app)
    value = client.cookies["pitstop_session"]
    session_id, mac = value.rsplit(".", 1)
    for forged in [session_id + "." + "0" * len(mac), "x" + value, "anything", ""]:
        stranger = TestClient(app)
        stranger.cookies.set("pitstop_session", forged)
        assert stranger.get("/ui/events", follow_redirects=False).status_code == 303


def test_logout_ends_the_session_everywhere(app: Any) -> None:
    client = logged_in(app)
    cookie = client.cookies["pitstop_session"]
    token = form_token(client.get("/ui/events").text)
    assert client.post("/ui/logout", data={"csrf": token},
                       follow_redirects=False).status_code == 303
    replay = TestClient(app)
    replay.cookies.set("pitstop_session", cookie)  # the old cookie, kept by an attacker
    assert replay.get("/ui/events", follow_redirects=False).status_code == 303


# --- headers and CSRF ----------------------------------------------------------------------------

def test_every_response_carries_the_security_headers(app: Any) -> None:
    client = logged_in(app)
    anonymous = TestClient(app)
    replies = [client.get(path) for path in PAGES]
    replies += [anonymous.get("/ui/login"), anonymous.get("/ui/static/pitstop.js"),
                client.get("/ui/runs/no-such-run"), client.get("/ui/nope")]
    for reply in replies:
        assert reply.headers["content-security-policy"] == CSP, reply.url
        assert "script-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
        assert "unsafe-inline" not in CSP and "unsafe-eval" not in CSP
        assert reply.headers["x-content-type-options"] == "nosniff"
        assert reply.headers["x-frame-options"] == "DENY"
    assert client.get("/ui/events").headers["cache-control"] == "no-store"


def test_actions_without_the_csrf_token_or_from_another_site_are_refused(
        app: Any, redis_client: redis.Redis) -> None:
    alert = make_alert(redis_client)
    client = as_alice(app)
    token = form_token(client.get("/ui/alerts").text)
    url = f"/ui/alerts/{alert.id}/ack"
    assert client.post(url, data={}).status_code == 403
    assert client.post(url, data={"csrf": "wrong"}).status_code == 403
    assert client.post(url, data={"csrf": token},
                       headers={"Origin": "https://evil.example"}).status_code == 403
    assert client.post(url, data={"csrf": token},
                       headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    assert client.post(url, json={"csrf": token}).status_code == 403
    assert AlertStore(redis_client).acks([alert.id]) == {}
    reply = client.post(url, data={"csrf": token}, follow_redirects=False)
    assert reply.status_code == 303
    ack = AlertStore(redis_client).acks([alert.id])[alert.id]
    assert ack[1] == "web:alice"


def test_the_templates_hold_no_inline_script_style_or_handlers() -> None:
    from pitstop.web.render import environment

    assert environment().autoescape is True
    folder = Path(__file__).resolve().parents[2] / "pitstop" / "web" / "templates"
    for path in folder.glob("*.html"):
        text = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path.name
        assert not re.search(r"\son[a-z]+\s*=", text), path.name
        assert " style=" not in text and "<style" not in text, path.name
        assert "|safe" not in text.replace(" ", "") and "Markup" not in text, path.name


# --- escaping ------------------------------------------------------------------------------------

def test_attacker_controlled_values_render_as_text(
        app: Any, settings: Settings, redis_client: redis.Redis) -> None:
    bus = components.event_bus(redis_client, settings)
    for payload in XSS[:5]:  # a type cannot carry markup: the bus refuses it...
        with pytest.raises(InvalidEventType):
            bus.publish(payload, {})
    for payload in XSS:  # ...and an entry written past the bus is skipped, never shown
        redis_client.xadd(EVENT_STREAM, {EVENT_FIELD: json.dumps(
            {"id": new_id(), "type": payload, "source": "x", "time": "2026-01-01T00:00:00Z"})})
    published = []
    for index, payload in enumerate(XSS):
        data = {"payload": payload, payload[:40]: "key", "url": payload, "run_url": payload}
        published.append(bus.publish(f"xss.case-{index}.failed", data, source=payload[:200]))
    runs = RunStore(redis_client)
    output = RunOutput(redis_client)
    run = runs.create_run(kind="script", params={"script": XSS[2], "args": XSS[:3]}, queue="linux")
    output.append_many(run.run_id, [("stdout", p) for p in XSS])
    output.close(run.run_id, status="failed", exit_code=1)
    make_alert(redis_client, subject=XSS[0], examples=[
        {"id": "e1", "type": "x.failed", "summary": XSS[2], "link": XSS[10]}])
    StateLog(LOG_TRIGGER_EXECUTIONS, settings.state_dir).append(
        {"decision": "failed", "rule": "build_on_push", "workstream": "WS-WEB",
         "config_version": "x", "event_id": published[0].id, "event_type": XSS[3],
         "reason": XSS[1], "run_id": XSS[4]})
    client = logged_in(app)
    pages = [f"/ui/events?limit=500&pattern={p}" for p in ("**", "xss.**")]
    pages += [f"/ui/events/{e.id}" for e in published[:5]]
    pages += [f"/ui/runs/{run.run_id}", "/ui/runs", "/ui/alerts", "/ui/triggers"]
    pages += ["/ui/events?pattern=%3Cscript%3Ealert(1)%3C/script%3E",
              "/ui/events?since=%22%3E%3Cscript%3Ealert(1)%3C/script%3E"]
    for path in pages:
        reply = client.get(path)
        assert reply.status_code == 200, path
        body = reply.text
        for payload in XSS:
            raw = payload.lower()
            if "<" in raw or '"' in raw:
                assert raw not in body.lower(), (path, payload)
        for href in _hrefs(body):
            assert not re.match(r"\s*(javascript|data|vbscript):", href, re.I), (path, href)
            assert href.startswith(("/ui/", "http://127.0.0.1:5555")), (path, href)
        assert len(re.findall(r"<script\b", body)) == 1, path  # only pitstop.js
    listing = client.get("/ui/events?limit=500").text
    assert html.escape(XSS[0]) in listing
    assert f"{len(XSS)} entries that are not events skipped" in listing


def test_secret_values_are_redacted_as_in_the_cli(
        app: Any, settings: Settings, redis_client: redis.Redis) -> None:
    bus = components.event_bus(redis_client, settings)
    event = bus.publish("deploy.note", {"password": "hunter2-secret", "db_token": "tok-123456",
                                        "note": "Authorization: Bearer abcdef0123456789xyz"})
    client = logged_in(app)
    for path in ["/ui/events", f"/ui/events/{event.id}"]:
        body = client.get(path).text
        assert "hunter2-secret" not in body and "tok-123456" not in body
        assert "abcdef0123456789xyz" not in body
        assert "REDACTED" in body or "***" in body


# --- pages and actions ---------------------------------------------------------------------------

def test_the_pages_show_what_pitstop_holds(
        app: Any, settings: Settings, redis_client: redis.Redis) -> None:
    bus = components.event_bus(redis_client, settings)
    event = bus.publish("git.push", {"branch": "main"}, source="ci")
    StateLog(LOG_TRIGGER_EXECUTIONS, settings.state_dir).append(
        {"decision": "launched", "rule": "build_on_push", "workstream": "WS-WEB",
         "config_version": "v", "event_id": event.id, "event_type": event.type,
         "trace_id": event.trace_id, "run_id": "run-launched-1"})
    RunStore(redis_client).create_run(kind="script", params={"script": "build.sh"},
                                      queue="linux")
    client = logged_in(app)
    assert "git.push" in client.get("/ui/events?pattern=git.*").text
    assert "git.push" not in client.get("/ui/events?pattern=phase.**").text
    detail = client.get(f"/ui/events/{event.id}").text
    assert "build_on_push" in detail and "launched" in detail
    assert "nightly_web" in detail and "fires on a schedule" in detail
    assert "build.sh" in client.get("/ui/runs").text
    triggers = client.get("/ui/triggers").text
    assert "build_on_push" in triggers and "throttle 3 per 3600s" in triggers
    assert "w1@host" in client.get("/ui/fleet").text
    assert client.get("/ui/events/not-an-event").status_code == 404
    assert client.get("/ui/events?pattern=a..b").status_code == 200  # the error, on the page


def test_a_rule_is_disabled_and_enabled_from_the_page(
        app: Any, settings: Settings, redis_client: redis.Redis) -> None:
    client = as_alice(app)
    token = form_token(client.get("/ui/triggers").text)
    reply = client.post("/ui/triggers/build_on_push/disable",
                        data={"csrf": token, "reason": "flaky runner"}, follow_redirects=False)
    assert reply.status_code == 303
    off = TriggerState(redis_client).disabled()["build_on_push"]
    assert off["by"] == "web:alice" and off["reason"] == "flaky runner"
    assert "flaky runner" in client.get("/ui/triggers").text
    client.post("/ui/triggers/build_on_push/enable", data={"csrf": token})
    assert "build_on_push" not in TriggerState(redis_client).disabled()
    assert client.post("/ui/triggers/no_such_rule/disable",
                       data={"csrf": token}).status_code == 400
    actions = [r["action"] for r in read_log("web_actions", settings.state_dir)]
    assert "disable_trigger" in actions and "enable_trigger" in actions


def test_silences_are_added_and_ended_from_the_page(
        app: Any, redis_client: redis.Redis) -> None:
    client = as_alice(app)
    token = form_token(client.get("/ui/alerts").text)
    client.post("/ui/alerts/silences", data={"csrf": token, "pattern": "build.**",
                                             "duration": "1h", "reason": "maintenance"})
    store = AlertStore(redis_client)
    made = [s for s in store.silences(now=float(redis_client.time()[0]))
            if s.pattern == "build.**"]
    assert made and made[0].created_by == "web:alice"
    assert "maintenance" in client.get("/ui/alerts").text
    client.post(f"/ui/alerts/silences/{made[0].id}/end", data={"csrf": token})
    assert not [s for s in store.silences(now=float(redis_client.time()[0]) + 1)
                if s.id == made[0].id]
    assert client.post("/ui/alerts/silences", data={"csrf": token, "pattern": "a..b",
                                                    "duration": "1h",
                                                    "reason": "x"}).status_code == 400


# --- who may act ---------------------------------------------------------------------------------

ACTION_PAGES = ["/ui/triggers", "/ui/alerts"]


def _redis_state(client: redis.Redis) -> dict[bytes, bytes | None]:
    """Every key and its serialized value (DUMP): equal before and after means nothing changed."""
    return {key: client.dump(key) for key in client.scan_iter(count=1000)}


def _open_silence(client: redis.Redis) -> Silence:
    now = float(client.time()[0])
    made = Silence(id="s-cafe0001", pattern="deploy.**", starts_at=now, ends_at=now + 3600,
                   reason="maintenance", created_by="web:alice")
    AlertStore(client).add_silence(made)
    return made


def _actions(alert_id: str, silence_id: str) -> list[tuple[str, dict[str, str]]]:
    """Every action of the web view (logging out aside), with a form it would accept."""
    return [("/ui/triggers/build_on_push/disable", {"reason": "quiet please"}),
            ("/ui/triggers/build_on_push/enable", {}),
            (f"/ui/alerts/{alert_id}/ack", {}),
            ("/ui/alerts/silences", {"pattern": "**", "duration": "2h", "reason": "shh"}),
            (f"/ui/alerts/silences/{silence_id}/end", {})]


def _post_actions(client: TestClient, alert_id: str, silence_id: str) -> list[Any]:
    token = form_token(client.get("/ui/alerts").text)
    return [client.post(url, data={"csrf": token, **form}, follow_redirects=False)
            for url, form in _actions(alert_id, silence_id)]


def _acts_as(client: TestClient, user: str, alert_id: str, silence_id: str) -> None:
    """The action pages show ``user`` (not read-only) their forms, and every action succeeds."""
    for path in ACTION_PAGES:
        body = client.get(path).text
        assert 'data-action="' in body and "data-read-only" not in body, path
        assert f"{user} (read-only)" not in body and f">{user}<" in body, path
    replies = _post_actions(client, alert_id, silence_id)
    assert [r.status_code for r in replies] == [303] * len(replies)


def test_a_token_login_only_looks(
        app: Any, settings: Settings, redis_client: redis.Redis) -> None:
    alert = make_alert(redis_client)
    silence = _open_silence(redis_client)
    client = logged_in(app)
    for path in PAGES:
        reply = client.get(path)
        assert reply.status_code == 200, path
        assert "token (read-only)" in reply.text, path
    for path in ACTION_PAGES:  # no action form: only logging out posts
        body = client.get(path).text
        assert re.findall(r'<form method="post" action="([^"]*)"', body) == [], path
        assert 'data-action="' not in body and "data-read-only" in body, path
        assert "log in as a user of <code>config/web.yaml</code> to act" in body, path
    before = _redis_state(redis_client)
    replies = _post_actions(client, alert.id, silence.id)
    for (url, _), reply in zip(_actions(alert.id, silence.id), replies, strict=True):
        assert reply.status_code == 403, url
        assert reply.text.startswith("read-only session") and "config/web.yaml" in reply.text
    assert _redis_state(redis_client) == before
    assert TriggerState(redis_client).disabled() == {}
    assert AlertStore(redis_client).acks([alert.id]) == {}
    now = float(redis_client.time()[0])
    assert [s.id for s in AlertStore(redis_client).silences(now=now)] == [silence.id]
    records = list(read_log("web_actions", settings.state_dir))
    assert [r["action"] for r in records] == ["login"] + ["refused_read_only"] * len(replies)
    assert records[0]["can_act"] is False
    token = form_token(client.get("/ui/events").text)  # a read-only session still logs out
    assert client.post("/ui/logout", data={"csrf": token},
                       follow_redirects=False).status_code == 303
    assert client.get("/ui/events", follow_redirects=False).status_code == 303


def test_with_token_can_act_the_token_login_acts(
        settings: Settings, redis_client: redis.Redis) -> None:
    app = make_app(settings, redis_client, token_can_act=True)
    alert = make_alert(redis_client)
    silence = _open_silence(redis_client)
    client = logged_in(app)
    _acts_as(client, "token", alert.id, silence.id)
    assert "(read-only)" not in client.get("/ui/alerts").text
    assert AlertStore(redis_client).acks([alert.id])[alert.id][1] == "web:token"
    now = float(redis_client.time()[0]) + 1
    silences = AlertStore(redis_client).silences(now=now)
    assert [(s.pattern, s.created_by) for s in silences] == [("**", "web:token")]
    actions = [r["action"] for r in read_log("web_actions", settings.state_dir)]
    assert actions == ["login", "disable_trigger", "enable_trigger", "ack_alert", "silence",
                       "unsilence"]


def test_a_user_of_web_yaml_acts(app: Any, settings: Settings, redis_client: redis.Redis) -> None:
    alert = make_alert(redis_client)
    silence = _open_silence(redis_client)
    client = as_alice(app)
    _acts_as(client, "alice", alert.id, silence.id)
    assert AlertStore(redis_client).acks([alert.id])[alert.id][1] == "web:alice"
    now = float(redis_client.time()[0]) + 1
    assert [s.pattern for s in AlertStore(redis_client).silences(now=now)] == ["**"]
    assert next(read_log("web_actions", settings.state_dir))["can_act"] is True


def test_a_session_stored_without_its_right_to_act_is_read_only(
        app: Any, redis_client: redis.Redis) -> None:
    client = as_alice(app)
    keys = list(redis_client.scan_iter(match=WEB_SESSION_PREFIX + "*"))
    assert len(keys) == 1
    doc = json.loads(redis_client.get(keys[0]) or b"{}")
    del doc["can_act"]  # as sessions made before they said whether they may act
    redis_client.set(keys[0], json.dumps(doc), keepttl=True)
    token = form_token(client.get("/ui/triggers").text)
    reply = client.post("/ui/triggers/build_on_push/disable", data={"csrf": token})
    assert reply.status_code == 403
    assert TriggerState(redis_client).disabled() == {}


# --- the live feed ---------------------------------------------------------------------------------

def _messages(lines: Any, want: int, timeout: float = 15) -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []
    kind = None
    deadline = time.monotonic() + timeout
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: ") and kind:
            found.append((kind, json.loads(line[6:])))
            if sum(len(d) for k, d in found if k == "events") >= want:
                return found
        if time.monotonic() > deadline:
            break
    return found


def test_the_live_feed_batches_a_burst_into_few_messages(
        app: Any, settings: Settings, redis_client: redis.Redis) -> None:
    bus = components.event_bus(redis_client, settings)
    client = logged_in(app)
    after = bus.last_stream_id()
    burst = 1000

    def publish() -> None:
        for index in range(burst):
            bus.publish("load.tick", {"n": index})
        bus.publish("other.thing", {})  # not matching: never sent

    thread = threading.Thread(target=publish)
    with client.stream("GET", f"/ui/events/live?pattern=load.*&after={after}") as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        thread.start()
        messages = _messages(reply.iter_lines(), burst)
    thread.join()
    batches = [data for kind, data in messages if kind == "events"]
    numbers = [event["data"] for batch in batches for event in batch]
    assert numbers == [json.dumps({"n": n}, separators=(",", ":")) for n in range(burst)]
    assert len(batches) < burst / 10, f"{len(batches)} messages for {burst} events"


def test_a_script_runs_output_streams_until_its_end(
        app: Any, redis_client: redis.Redis) -> None:
    run = RunStore(redis_client).create_run(kind="script", params={"script": "x.sh"})
    output = RunOutput(redis_client)
    output.append_many(run.run_id, [("stdout", "one"), ("stderr", "two <b>")])
    output.close(run.run_id, status="succeeded", exit_code=0)
    client = logged_in(app)
    with client.stream("GET", f"/ui/runs/{run.run_id}/output") as reply:
        kinds: list[tuple[str, Any]] = []
        kind = None
        for line in reply.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                kinds.append((str(kind), json.loads(line[6:])))
                if kind == "end":
                    break
    assert kinds[0] == ("lines", [["stdout", "one"], ["stderr", "two <b>"]])
    assert kinds[-1] == ("end", {"status": "succeeded", "exit_code": 0})


def test_a_quiet_feed_still_moves_the_browsers_resume_point(
        app: Any, settings: Settings, redis_client: redis.Redis) -> None:
    bus = components.event_bus(redis_client, settings)
    client = logged_in(app)
    after = bus.last_stream_id()
    others = [bus.publish("noise.tick", {"n": n}) for n in range(5)]
    last = bus.last_stream_id()
    with client.stream("GET", f"/ui/events/live?pattern=wanted.*&after={after}") as reply:
        deadline = time.monotonic() + 10
        for line in reply.iter_lines():
            assert not line.startswith("event: events"), "a non-matching event was sent"
            if line == f"id: {last}" or time.monotonic() > deadline:
                break
    assert line == f"id: {last}", f"no id-only message after {len(others)} skipped entries"


def test_without_redis_pages_say_so_instead_of_failing(settings: Settings) -> None:
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from pitstop.connection.server import free_port

    gone = redis.Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5,
                       retry=Retry(NoBackoff(), 0))
    client = TestClient(make_app(settings, gone))
    for path in ["/ui/login", "/ui/events", "/ui/fleet"]:
        reply = client.get(path)
        assert reply.status_code == 503, path
        assert "Redis is unavailable" in reply.text
        assert reply.headers["content-security-policy"] == CSP


def test_taking_the_right_to_act_away_holds_for_live_sessions(
        settings: Settings, redis_client: redis.Redis) -> None:
    # Logged in while the config let the token act (and alice was a user); then served again
    # without token_can_act and without alice: both sessions, still valid, only look.
    token_client = logged_in(make_app(settings, redis_client, token_can_act=True))
    alice_client = as_alice(make_app(settings, redis_client))
    stricter = make_app(settings, redis_client, token_can_act=False, users=[])
    for before in (token_client, alice_client):
        client = TestClient(stricter)
        client.cookies = before.cookies
        page = client.get("/ui/triggers")
        assert page.status_code == 200 and "data-read-only" in page.text
        reply = client.post("/ui/triggers/build_on_push/disable",
                            data={"csrf": form_token(page.text)})
        assert reply.status_code == 403 and reply.text.startswith("read-only session")
    assert TriggerState(redis_client).disabled() == {}
