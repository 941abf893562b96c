"""Server-sent event streams: the live event feed, a workstream run's graph, a run's output.

The event feed follows the durable stream by id (:class:`~pitstop.bus.tail.StreamTail`, as
``pitstop watch`` does), so a browser that reconnects (``Last-Event-ID``) misses nothing, and
it batches: after the first new event it keeps reading for :data:`BATCH_WINDOW` seconds and
sends everything it got as one message, so 500 events a second cost ten messages, not 500.
A stream ends when the server begins to stop (:func:`server_stopping`), else after
:data:`STREAM_SECONDS` (the browser reconnects where it left off); at most
``web.max_live_streams`` run at once.

Everything sent is JSON the page's script inserts as text (``textContent``), never as HTML.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
from anyio import to_thread
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse

from pitstop.bus.events import Event
from pitstop.bus.patterns import compile_pattern
from pitstop.bus.tail import StreamTail
from pitstop.kernel.errors import PitstopError, ValidationError
from pitstop.runs.output import OutputEnd, OutputLine
from pitstop.web.context import WebContext
from pitstop.web.render import compact_json
from pitstop.web.runview import get_run, graph_state
from pitstop.web.sessions import Session

__all__ = ["LiveStreams", "sse"]

STREAM_SECONDS = 25.0
BATCH_WINDOW = 0.1
MAX_BATCH = 2000
POLL_SECONDS = 0.5
RUN_POLL_SECONDS = 0.25
PATIENCE_SECONDS = 10.0
RETRY_MS = 1000
_STREAM_ID = re.compile(r"\d{1,20}-\d{1,20}")


def server_stopping() -> bool:
    """Whether the server serving us is shutting down. uvicorn waits for every open response
    before it stops, so a live view must end itself: while uvicorn serves, its SIGTERM/SIGINT
    handler is its ``Server.handle_exit`` (a bound method), whose ``should_exit`` says a stop
    was asked. Under anything else this is False and streams end after
    :data:`STREAM_SECONDS`."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        owner = getattr(signal.getsignal(signum), "__self__", None)
        if getattr(owner, "should_exit", False) is True:
            return True
    return False


def _open_for(started: float) -> bool:
    return time.monotonic() - started < STREAM_SECONDS and not server_stopping()


def sse(event: str, data: Any, *, event_id: str | None = None) -> str:
    """One server-sent event (the JSON holds no raw newline, so one ``data:`` line)."""
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class _Slots:
    def __init__(self, size: int) -> None:
        self.free = size
        self.lock = threading.Lock()

    def take(self) -> bool:
        with self.lock:
            if self.free <= 0:
                return False
            self.free -= 1
            return True

    def give(self) -> None:
        with self.lock:
            self.free += 1


def _resume_id(request: Request) -> str | None:
    for value in (request.headers.get("last-event-id"), request.query_params.get("after")):
        if value and _STREAM_ID.fullmatch(value):
            return value
    return None


class LiveStreams:
    def __init__(self, ctx: WebContext, session_of: Callable[[Request], Session | None]) -> None:
        self.ctx = ctx
        self.session_of = session_of
        self.slots = _Slots(ctx.deps.config.max_live_streams)
        self._limiter: anyio.CapacityLimiter | None = None

    async def _blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in a worker thread of the streams' own limiter: streams blocking on
        Redis (up to half a second each) never take the threads pages are served from."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.ctx.deps.config.max_live_streams)
        return await to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def _open(self, request: Request,
                    body: Callable[[], AsyncIterator[str]]) -> Response:
        session = await run_in_threadpool(self.session_of, request)
        if session is None:
            return PlainTextResponse("login required", status_code=401)
        if not self.slots.take():
            return PlainTextResponse("too many live views open: retry shortly", status_code=503,
                                     headers={"Retry-After": "2"})

        async def stream() -> AsyncIterator[str]:
            try:
                yield f"retry: {RETRY_MS}\n\n"
                async for chunk in body():
                    yield chunk
                    if await request.is_disconnected():
                        return
            finally:
                self.slots.give()

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    # --- the event feed -------------------------------------------------------------------------
    def _event(self, stream_id: str, event: Event) -> dict[str, Any]:
        redactor = self.ctx.redactor
        return {"id": event.id, "sid": stream_id, "type": event.type, "time": event.time,
                "source": redactor.redact_text(event.source), "severity": event.severity,
                "data": compact_json(redactor.redact(event.data))}

    async def events(self, request: Request) -> Response:
        pattern = request.query_params.get("pattern") or "**"
        try:
            compile_pattern(pattern)
        except ValidationError as exc:
            return PlainTextResponse(str(exc), status_code=400)
        after = _resume_id(request)

        async def body() -> AsyncIterator[str]:
            notes: list[str] = []
            tail = StreamTail(self.ctx.deps.bus, pattern, patience=PATIENCE_SECONDS,
                              notify=notes.append, after=after)

            def poll(timeout: float) -> list[tuple[str, Event]]:
                return [(tail.last_id or "", event) for event in tail.poll(timeout)]

            started = time.monotonic()
            sent = after
            while _open_for(started):
                try:
                    batch = await self._blocking(poll, POLL_SECONDS)
                    if batch:
                        deadline = time.monotonic() + BATCH_WINDOW
                        while len(batch) < MAX_BATCH and (left := deadline - time.monotonic()) > 0:
                            batch += await self._blocking(poll, left)
                except PitstopError as exc:
                    yield sse("note", str(exc))
                    return
                for note in notes:
                    yield sse("note", note)
                notes.clear()
                if batch:
                    yield sse("events", [self._event(sid, event) for sid, event in batch],
                              event_id=tail.last_id)
                    sent = tail.last_id
                elif tail.last_id and tail.last_id != sent:
                    # Entries read that did not match: an id-only message moves the browser's
                    # Last-Event-ID past them (nothing is dispatched), so a reconnect after a
                    # quiet spell does not read them again.
                    yield f"id: {tail.last_id}\n\n"
                    sent = tail.last_id
                else:
                    yield ": idle\n\n"  # lets a closed connection be noticed

        return await self._open(request, body)

    # --- a run's graph ----------------------------------------------------------------------------
    async def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]

        async def body() -> AsyncIterator[str]:
            last: Any = None
            started = time.monotonic()
            while _open_for(started):
                run = await run_in_threadpool(get_run, self.ctx.client, run_id)
                if run is None:
                    yield sse("gone", {"run_id": run_id})
                    return
                state = graph_state(run, now=self.ctx.now(), redactor=self.ctx.redactor)
                if state != last:
                    yield sse("run", state)
                    last = state
                else:
                    yield ": idle\n\n"
                if state["terminal"] and state["finalized"]:
                    yield sse("end", {"status": state["status"]})
                    return
                await asyncio.sleep(RUN_POLL_SECONDS)

        return await self._open(request, body)

    # --- a run's output ---------------------------------------------------------------------------
    async def output(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        after = _resume_id(request) or "0-0"

        async def body() -> AsyncIterator[str]:
            items: Iterator[OutputLine | OutputEnd | None] = self.ctx.output.follow(
                run_id, after=after, block_ms=int(POLL_SECONDS * 1000))
            redact = self.ctx.redactor.redact_text
            started = time.monotonic()
            while _open_for(started):
                lines: list[list[str]] = []
                last_id = None
                end: OutputEnd | None = None
                while len(lines) < MAX_BATCH:
                    try:
                        item = await self._blocking(next, items, None)
                    except PitstopError as exc:
                        yield sse("note", str(exc))
                        return
                    if item is None:
                        break
                    if isinstance(item, OutputEnd):
                        end = item
                        break
                    lines.append([item.stream, redact(item.line)])
                    last_id = item.entry_id
                if lines:
                    yield sse("lines", lines, event_id=last_id)
                if end is not None:
                    yield sse("end", {"status": end.status, "exit_code": end.exit_code},
                              event_id=end.entry_id)
                    return
                if not lines:
                    run = await run_in_threadpool(get_run, self.ctx.client, run_id)
                    if run is None or (run.terminal and run.finished_at is not None and
                                       (self.ctx.now() - run.finished_at).total_seconds() > 5):
                        # Ended without closing its output (lost, expired): say how it ended.
                        yield sse("end", {"status": run.status if run else "unknown",
                                          "exit_code": run.exit_code if run else None})
                        return
                    yield ": idle\n\n"

        return await self._open(request, body)

