"""Stand-ins for the alert tests: a local HTTP server in place of Slack (scripted answers), a
real SMTP server (aiosmtpd) on 127.0.0.1, and a project with its own Redis and worker."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from pitstop.connection.server import RedisServer, free_port
from pitstop.kernel.serverinfo import ServerInfo
from tests.support import ROOT, Proc

SMTP_PASSWORD = "smtp-Pa55word-xyzzy"
SMTP_USER = "pitstop"


@dataclass
class Post:
    path: str
    body: dict[str, Any]
    status: int
    at: float


@dataclass
class Script:
    """Answers for one path, in order; the last one repeats. ``hold``: keep the request open
    until released (the post counts as received, as it would at Slack)."""

    answers: list[tuple[int, dict[str, str]]] = field(default_factory=lambda: [(200, {})])
    hold: threading.Event | None = None
    served: int = 0


class SlackStandIn:
    def __init__(self) -> None:
        self.posts: list[Post] = []
        self.scripts: dict[str, Script] = {}
        self.lock = threading.Lock()
        self.received = threading.Condition(self.lock)
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length)
                with stand_in.lock:
                    script = stand_in.scripts.setdefault(self.path, Script())
                    status, headers = script.answers[min(script.served, len(script.answers) - 1)]
                    script.served += 1
                    stand_in.posts.append(Post(self.path, json.loads(raw or b"{}"), status,
                                               time.time()))
                    stand_in.received.notify_all()
                if script.hold is not None and script.served == 1:
                    script.hold.wait(30)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                body = b"ok" if status == 200 else b"error"
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, answers: list[tuple[int, dict[str, str]]],
               hold: threading.Event | None = None) -> None:
        with self.lock:
            self.scripts[path] = Script(answers=answers, hold=hold)

    def to(self, path: str, *, ok_only: bool = False) -> list[Post]:
        with self.lock:
            return [p for p in self.posts if p.path == path and (p.status == 200 or not ok_only)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos),
                              "data": envelope.content.decode("utf-8", "replace")})
        return "250 OK"


def _authenticate(server: Any, session: Any, envelope: Any, mechanism: str,
                  auth_data: Any) -> AuthResult:
    ok = (isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USER.encode()
          and auth_data.password == SMTP_PASSWORD.encode())
    return AuthResult(success=ok)


@contextmanager
def smtp_server() -> Iterator[tuple[int, _Mailbox]]:
    mailbox = _Mailbox()
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, authenticator=_authenticate,
                            auth_require_tls=False, auth_required=True)
    controller.start()
    try:
        yield port, mailbox
    finally:
        controller.stop()


@dataclass
class AlertsProject:
    home: Path
    env: dict[str, str]
    redis: ServerInfo
    slack: SlackStandIn
    mailbox: _Mailbox
    worker: Proc | None = None

    @property
    def state(self) -> Path:
        return self.home / ".state"

    def log_lines(self, name: str = "alerts") -> list[dict[str, Any]]:
        path = self.state / f"{name}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def start_worker(self, name: str = "alerts") -> Proc:
        self.worker = Proc(["worker", "-Q", "default", "-c", "2", "-n", f"{name}@%h"], self.env,
                           self.home / f"{name}-worker.log")
        self.worker.wait_for_output("ready.", 60)
        return self.worker


@contextmanager
def alerts_project(tmp: Path, alerts_yaml: str, extra_env: dict[str, str] | None = None
                   ) -> Iterator[AlertsProject]:
    """A project (config, .state), its own redis-server, Slack and SMTP stand-ins; the worker
    is started by the caller (``start_worker``) and stopped here."""
    from pitstop.kernel.sealing import generate_key

    server = RedisServer(tmp / "redis", appendonly=False)
    info = server.start()
    slack = SlackStandIn()
    home = tmp / "home"
    (home / "config").mkdir(parents=True)
    (home / "config" / "pitstop.yaml").write_text("bus:\n  claim_idle_ms: 1500\n")
    (home / "config" / "alerts.yaml").write_text(alerts_yaml)
    try:
        with smtp_server() as (smtp_port, mailbox):
            env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
            env.update({
                "PITSTOP_REDIS_URL": info.url, "PITSTOP_HOME": str(home),
                "PITSTOP_SECRET_KEY": generate_key(), "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1", "TEST_SLACK_BASE": slack.url(),
                "TEST_SMTP_PORT": str(smtp_port), "TEST_SMTP_PASSWORD": SMTP_PASSWORD,
                **(extra_env or {}),
            })
            project = AlertsProject(home, env, info, slack, mailbox)
            try:
                yield project
            finally:
                if project.worker is not None:
                    project.worker.stop()
    finally:
        slack.close()
        server.stop()
