"""Helpers of the web view's tests: a project (config, state dir) on the test Redis, the app
built on it, logging in through the real form, and the XSS corpus."""

from __future__ import annotations

import re
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis
from starlette.applications import Starlette
from starlette.testclient import TestClient

from pitstop import components
from pitstop.alerts.model import Alert
from pitstop.alerts.store import AlertStore
from pitstop.kernel.settings import Settings, load_settings
from pitstop.web import WebDeps, hash_password, load_web_config, web_routes

TOKEN = "web-test-token-5f2c9a"
PASSWORD = "correct horse battery staple"
PASSWORD_HASH = hash_password(PASSWORD)

TRIGGERS = """\
version: 1
triggers:
  - id: build_on_push
    event: git.push
    workstream: WS-WEB
    description: a push builds
    conditions:
      field: data.branch
      equals: main
    throttle: {max: 3, per: 1h}
  - id: nightly_web
    schedule: {every: 1d}
    workstream: WS-WEB
"""
WORKSTREAMS = """\
workstreams:
  WS-WEB:
    steps:
      - id: hello
        kind: emit
        params: {type: web.hello}
"""

# Payloads that would run script if they reached the page as HTML, an attribute or a link.
XSS = [
    "<script>alert(1)</script>",
    "<script>alert(document.cookie)</script>",
    "<img src=x onerror=alert(1)>",
    "<img src=x onerror=\"alert('xss')\">",
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    "<svg/onload=alert(1)//",
    "<body onload=alert(1)>",
    "<iframe src=\"javascript:alert(1)\"></iframe>",
    "<a href=\"javascript:alert(1)\">x</a>",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "\"><script>alert(1)</script>",
    "'><script>alert(1)</script>",
    "\" onmouseover=\"alert(1)",
    "' onfocus='alert(1)' autofocus='",
    "</title><script>alert(1)</script>",
    "</textarea><script>alert(1)</script>",
    "</pre><script>alert(1)</script><pre>",
    "<details open ontoggle=alert(1)>",
    "<input autofocus onfocus=alert(1)>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<style>@import 'javascript:alert(1)';</style>",
    "<object data=\"javascript:alert(1)\"></object>",
    "<embed src=\"javascript:alert(1)\">",
    "{{7*7}}<script>alert(1)</script>",
    "${alert(1)}<img src=x onerror=alert(1)>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "<a href=\"&#106;avascript:alert(1)\">x</a>",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">",
    "<base href=\"javascript:alert(1)//\">",
    "<form action=\"javascript:alert(1)\"><button>x</button></form>",
]


def write_project(home: Path) -> Path:
    config = home / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "triggers.yaml").write_text(TRIGGERS)
    (config / "workstreams.yaml").write_text(WORKSTREAMS)
    (config / "web.yaml").write_text(textwrap.dedent(f"""\
        users:
          - name: alice
            password_hash: "{PASSWORD_HASH}"
        max_login_failures: 5
        flower_url: http://127.0.0.1:5555
        """))
    return config


def web_project_env(pitstop_env: Mapping[str, str], home: Path) -> dict[str, str]:
    """``pitstop_env`` for the project ``write_project`` writes at ``home``, with the API token."""
    config = write_project(home)
    return {**pitstop_env, "PITSTOP_CONFIG_DIR": str(config),
            "PITSTOP_STATE_DIR": str(home / ".state"), "PITSTOP_API_TOKEN": TOKEN}


def project_settings(home: Path, redis_url: str) -> Settings:
    config = write_project(home)
    return load_settings(environ={"PITSTOP_REDIS_URL": redis_url,
                                  "PITSTOP_STATE_DIR": str(home / ".state"),
                                  "PITSTOP_CONFIG_DIR": str(config),
                                  "PITSTOP_API_TOKEN": TOKEN}, cwd=home)


def make_app(settings: Settings, client: redis.Redis, *, probe: Any = None,
             **config: Any) -> Starlette:
    web_config = load_web_config(settings.config_dir).model_copy(update=config)
    deps = WebDeps(client=client, bus=components.event_bus(client, settings),
                   settings=settings, config=web_config,
                   redactor=components.new_redactor(settings), worker_probe=probe)
    return Starlette(routes=web_routes(deps))


def form_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def login(client: TestClient, password: str = TOKEN, user: str = "") -> Any:
    page = client.get("/ui/login")
    return client.post("/ui/login", data={"csrf": form_token(page.text), "user": user,
                                          "password": password, "next": "/ui/events"},
                       follow_redirects=False)


def logged_in(app: Starlette, *, base_url: str = "http://testserver", user: str = "",
              password: str = TOKEN) -> TestClient:
    """A client logged in with the API token (read-only unless ``token_can_act``), or as
    ``user`` with ``password``."""
    client = TestClient(app, base_url=base_url)
    reply = login(client, password, user)
    assert reply.status_code == 303, reply.text
    return client


def as_alice(app: Starlette) -> TestClient:
    """A client logged in as the user of the test's ``web.yaml`` (who may act)."""
    return logged_in(app, user="alice", password=PASSWORD)


def make_alert(client: redis.Redis, subject: str = "build broke", **fields: Any) -> Alert:
    now = float(client.time()[0])
    alert = Alert(id=f"al-{time.monotonic_ns()}", group_key=f"route:{time.monotonic_ns()}",
                  route_id="failures", receiver="ops", group={"subject": subject},
                  labels={"type": "build.failed"}, severity="error", source="ci",
                  created_at=now, first_event_at=now - 30, last_event_at=now, count=2,
                  **fields)
    store = AlertStore(client)
    assert store.acquire("web-test", 30)
    store.commit("web-test", changed=[alert], closed={}, storm={}, outbox=[], seen=[], now=now,
                 requeue_after=60)
    store.release("web-test")
    return alert
