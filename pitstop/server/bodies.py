"""Reading request bodies within bounds: a size cap, a few bodies at a time, a deadline.

Bodies cost memory before anything is verified. At most ``max_concurrent`` bodies are read at
once (others wait for a slot), and a request has ``timeout`` seconds to get a slot and deliver
its whole body, so the worst case is about ``max_concurrent * max_bytes`` in memory however
many slow clients connect.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from starlette.requests import Request

__all__ = ["BodyRefused", "BoundedBodies"]


@dataclass
class BodyRefused(Exception):
    """The body was not read: the HTTP status, a message and the result worth logging."""

    status: int
    message: str
    result: str = "rejected"
    headers: dict[str, str] = field(default_factory=dict)


class _BodyTooLarge(Exception):
    pass


class _Slots:
    """At most ``size`` request bodies being read at once, across event loops (the test client
    runs one per request) and threads."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._lock = threading.Lock()

    def _try_take(self) -> bool:
        with self._lock:
            if self._free <= 0:
                return False
            self._free -= 1
            return True

    async def take(self, deadline: float) -> bool:
        """Take a slot, waiting until ``deadline`` (``time.monotonic``); False if none freed."""
        while not self._try_take():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)  # a waiting request holds no body yet: polling is cheap
        return True

    def give(self) -> None:
        with self._lock:
            self._free += 1


async def _read(request: Request, limit: int) -> bytearray:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _BodyTooLarge
    return body


class BoundedBodies:
    def __init__(self, *, max_bytes: int, max_concurrent: int, timeout: float) -> None:
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._slots = _Slots(max_concurrent)

    async def read(self, request: Request) -> bytearray:
        """The request's body; raises :class:`BodyRefused` with 413 (too large), 503 (no body
        slot freed in time: retry) or 408 (the body did not arrive in time)."""
        deadline = time.monotonic() + self.timeout
        if not await self._slots.take(deadline):
            raise BodyRefused(503, "too many requests are sending their bodies: retry shortly",
                              "busy", {"Retry-After": "1"})
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                return await _read(request, self.max_bytes)
        except _BodyTooLarge:
            raise BodyRefused(413, f"body is larger than {self.max_bytes} bytes") from None
        except TimeoutError:
            raise BodyRefused(408, f"the body did not arrive within {self.timeout:g}s",
                              "timeout", {"Connection": "close"}) from None
        finally:
            self._slots.give()
