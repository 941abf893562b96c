"""``pitstop serve`` under slow, unauthenticated webhook bodies: memory stays bounded.

60 connections each send a webhook with a made-up signature and all but the last byte of a
5 MiB body, then stall: the worst case for a server that reads bodies before verifying them.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import httpx
import pytest

from pitstop.connection.server import free_port
from tests.support import running, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

CONNECTIONS = 60
BODY_BYTES = 5 * 1024 * 1024  # serve's cap: the largest body it would read
BODY_TIMEOUT = 2.0
CLIENT_TIMEOUT = 20.0


def memory_kib(pid: int, field: str) -> int:
    """``VmRSS`` (now) or ``VmHWM`` (the high-water mark) of ``pid``, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


def slow_deliveries(port: int, *, connections: int = CONNECTIONS, body_bytes: int = BODY_BYTES,
                    client_timeout: float = CLIENT_TIMEOUT) -> list[float | None]:
    """Send ``connections`` forged deliveries, each stalling before its last body byte; returns,
    per connection, the seconds until the server answered or hung up (None: it never did)."""
    body = memoryview(b"x" * body_bytes)
    ended: list[float | None] = [None] * connections
    started = time.monotonic()

    def deliver(index: int) -> None:
        head = ("POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/json\r\nX-GitHub-Event: push\r\n"
                f"X-GitHub-Delivery: {uuid.uuid4()}\r\n"
                f"X-Hub-Signature-256: sha256={'0' * 64}\r\n"
                f"Content-Length: {body_bytes}\r\n\r\n").encode()
        with socket.create_connection(("127.0.0.1", port), timeout=client_timeout) as sock:
            try:
                sock.sendall(head)
                sock.sendall(body[:-1])  # and never the last byte
                sock.recv(4096)  # an answer, or b"" when the server hangs up
            except TimeoutError:
                return  # the server kept us waiting as long as we were willing to
            except OSError:
                pass  # reset while we were still sending: the server hung up on us
            ended[index] = time.monotonic() - started

    threads = [threading.Thread(target=deliver, args=(i,), daemon=True)
               for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(client_timeout + 10)
    return ended


def serve_env(pitstop_env: Mapping[str, str], tmp_path: Path) -> dict[str, str]:
    """``pitstop serve`` on the test Redis, webhooks on, with its own (small) body timeout."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "pitstop.yaml").write_text(f"server:\n  body_timeout_seconds: {BODY_TIMEOUT}\n")
    return {**pitstop_env, "PITSTOP_CONFIG_DIR": str(config),
            "PITSTOP_STATE_DIR": str(tmp_path / ".state"),
            "PITSTOP_WEBHOOK_SECRET": "whsec-memory-test"}


def answers(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).is_success
    except httpx.TransportError:
        return False


def test_slow_webhook_bodies_cannot_exhaust_memory(
        pitstop_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    with running(["serve", "--port", str(port)], serve_env(pitstop_env, tmp_path),
                 tmp_path / "serve.log") as serve:
        wait_for(lambda: answers(port), 30, interval=0.1, message="pitstop serve to answer")
        before = memory_kib(serve.pid, "VmRSS")
        ended = slow_deliveries(port)
        peak = memory_kib(serve.pid, "VmHWM")
        still_up = answers(port)
    grew_mib = (peak - before) / 1024
    print(f"serve: {before / 1024:.0f} MiB before, high-water mark {peak / 1024:.0f} MiB "
          f"(+{grew_mib:.0f} MiB) under {CONNECTIONS} slow 5 MiB webhook bodies")
    # 4 bodies being read at once (max_concurrent_bodies), about twice their size each at most;
    # reading all 60 took ~450 MiB.
    assert grew_mib < 80, f"serve grew by {grew_mib:.0f} MiB"
    # Every stalled request was answered (503: no slot, 408: body too slow) or hung up on,
    # within the body timeout, instead of being held open.
    assert None not in ended, f"{ended.count(None)} connections were held open"
    assert max(t for t in ended if t is not None) < BODY_TIMEOUT + 8
    assert still_up


def test_a_delivery_without_a_signature_is_refused_before_its_body_is_sent(
        pitstop_env: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    with running(["serve", "--port", str(port)], serve_env(pitstop_env, tmp_path),
                 tmp_path / "serve.log"):
        wait_for(lambda: answers(port), 30, interval=0.1, message="pitstop serve to answer")
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            # Headers only: the 401 comes without the server waiting for the promised body.
            sock.sendall(b"POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"X-GitHub-Event: push\r\nX-GitHub-Delivery: d-1\r\n"
                         b"Content-Length: 5000000\r\n\r\n")
            reply = b""
            while chunk := sock.recv(4096):  # until the server hangs up
                reply += chunk
    assert reply.startswith(b"HTTP/1.1 401"), reply[:200]
    assert b"X-Hub-Signature-256" in reply

