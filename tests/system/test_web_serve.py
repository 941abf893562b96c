"""``pitstop serve`` serves the web view under /ui: behind its login, next to the webhook and
events endpoints, and a stop (SIGTERM) is not held up by a browser's open live feed."""

from __future__ import annotations

import re
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support import serving
from tests.web_support import TOKEN, web_project_env

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]


def test_serve_mounts_the_web_view_and_stops_promptly_with_a_live_feed_open(
        pitstop_env: dict[str, str], tmp_path: Path) -> None:
    env = web_project_env(pitstop_env, tmp_path)
    with serving(env, tmp_path / "serve.log") as (serve, base):
        assert "web view at /ui/ (login: the API token or 1 user(s)" in serve.output()
        assert "the token's login is read-only)" in serve.output()
        home = httpx.get(f"{base}/", follow_redirects=False)
        assert home.status_code == 303 and home.headers["location"] == "/ui/"
        page = httpx.get(f"{base}/ui/runs", follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/ui/login")
        with httpx.Client(base_url=base, timeout=10) as browser:
            form = browser.get("/ui/login").text
            token = re.search(r'name="csrf" value="([^"]+)"', form)
            assert token is not None
            reply = browser.post("/ui/login", data={"csrf": token.group(1), "password": TOKEN})
            assert reply.status_code == 303 and reply.headers["location"] == "/ui/events"
            opened = threading.Event()
            ended = threading.Event()

            def follow() -> None:
                try:
                    with browser.stream("GET", "/ui/events/live") as stream:
                        for _ in stream.iter_lines():
                            opened.set()
                except httpx.HTTPError:
                    pass
                ended.set()

            threading.Thread(target=follow, daemon=True).start()
            assert opened.wait(10), "the live feed did not open"
            stopping = time.monotonic()
            serve.popen.send_signal(signal.SIGTERM)
            serve.popen.wait(15)
            took = time.monotonic() - stopping
            assert ended.wait(5)
    assert took < 5, f"serve took {took:.1f}s to stop with a live feed open"
