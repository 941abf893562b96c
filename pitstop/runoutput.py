"""A run's output lines as a Redis stream, so ``pitstop run --wait`` can print them live.

The worker appends one entry per line and a final ``end`` entry; readers follow from any id.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import redis

from pitstop.constants import (
    RUN_CANCEL_PREFIX,
    RUN_OUTPUT_MAXLEN,
    RUN_OUTPUT_PREFIX,
    RUN_TTL_SECONDS,
)
from pitstop.errors import RedisUnavailable
from pitstop.runs import Run, RunStore


@dataclass(frozen=True)
class OutputLine:
    entry_id: str
    stream: str  # "stdout" | "stderr"
    line: str


@dataclass(frozen=True)
class OutputEnd:
    entry_id: str
    status: str
    exit_code: int | None


log = logging.getLogger(__name__)


def _key(run_id: str) -> str:
    return f"{RUN_OUTPUT_PREFIX}{run_id}"


class RunOutput:
    """Write and follow the output stream of runs."""

    def __init__(self, client: redis.Redis, *, maxlen: int = RUN_OUTPUT_MAXLEN,
                 ttl_seconds: int = RUN_TTL_SECONDS) -> None:
        self._client = client
        self._maxlen = maxlen
        self._ttl = ttl_seconds

    def append(self, run_id: str, stream: str, line: str) -> None:
        fields: dict[Any, Any] = {"s": stream, "l": line}
        self._client.xadd(_key(run_id), fields, maxlen=self._maxlen,
                          approximate=True)

    def append_many(self, run_id: str, lines: Sequence[tuple[str, str]]) -> None:
        """Several lines in one round trip."""
        key = _key(run_id)
        pipe = self._client.pipeline(transaction=False)
        for stream, line in lines:
            fields: dict[Any, Any] = {"s": stream, "l": line}
            pipe.xadd(key, fields, maxlen=self._maxlen, approximate=True)
        pipe.execute()

    def close(self, run_id: str, *, status: str, exit_code: int | None) -> None:
        key = _key(run_id)
        fields: dict[Any, Any] = {"end": status,
                                  "exit_code": "" if exit_code is None else str(exit_code)}
        pipe = self._client.pipeline(transaction=False)
        pipe.xadd(key, fields, maxlen=self._maxlen, approximate=True)
        pipe.expire(key, self._ttl)
        pipe.execute()

    def follow(self, run_id: str, *, after: str = "0-0",
               block_ms: int = 500) -> Iterator[OutputLine | OutputEnd | None]:
        """Yield lines as they arrive, ``None`` each time ``block_ms`` passes with nothing new,
        and finally the :class:`OutputEnd`."""
        key = _key(run_id)
        last = after
        while True:
            try:
                reply: Any = self._client.xread({key: last}, count=500, block=block_ms)
            except redis.RedisError as exc:
                raise RedisUnavailable(f"lost Redis while following run {run_id}: {exc}") from exc
            if not reply:
                yield None
                continue
            for raw_id, fields in reply[0][1]:
                last = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
                decoded = {(k.decode() if isinstance(k, bytes) else k):
                           (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
                           for k, v in fields.items()}
                if "end" in decoded:
                    code = decoded.get("exit_code") or ""
                    yield OutputEnd(last, decoded["end"], int(code) if code else None)
                    return
                yield OutputLine(last, decoded.get("s", "stdout"), decoded.get("l", ""))

    def request_cancel(self, run_id: str) -> None:
        self._client.set(f"{RUN_CANCEL_PREFIX}{run_id}", "1", ex=self._ttl)

    def cancel_requested(self, run_id: str) -> bool:
        return bool(self._client.exists(f"{RUN_CANCEL_PREFIX}{run_id}"))


class OutputWriter:
    """Sends one run's lines from a background thread, batching whatever piles up while a write
    is in flight: a quiet script's lines go out at once, a chatty one's in pipelines, and the
    script's pipes are never drained at the pace of Redis round trips."""

    _END = None

    def __init__(self, output: RunOutput, run_id: str, *, max_batch: int = 500) -> None:
        self._output = output
        self._run_id = run_id
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[tuple[str, str] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._send_batches, daemon=True,
                                        name=f"output-{run_id}")
        self._thread.start()

    def write(self, stream: str, line: str) -> None:
        self._queue.put((stream, line))

    def close(self, *, status: str, exit_code: int | None) -> None:
        """Send what is left, then the end entry (after the last line, always)."""
        self._queue.put(self._END)
        self._thread.join()
        self._output.close(self._run_id, status=status, exit_code=exit_code)

    def _send_batches(self) -> None:
        ended = False
        while not ended:
            batch: list[tuple[str, str]] = []
            item = self._queue.get()
            while True:
                if item is self._END:
                    ended = True
                    break
                batch.append(item)
                if len(batch) >= self._max_batch or self._queue.empty():
                    break
                item = self._queue.get()
            if batch:
                try:
                    self._output.append_many(self._run_id, batch)
                except redis.RedisError:
                    # Live output is best effort; the run record keeps the tails.
                    log.warning("run %s: lost %d output lines", self._run_id, len(batch),
                                exc_info=True)


def reap_lost_runs(store: RunStore, output: RunOutput, *, stale_after: timedelta,
                   run_ids: Iterable[str] | None = None) -> list[Run]:
    """Mark runs whose worker went silent ``lost``, and queued runs no worker took before their
    deadline ``expired``; end their output streams, so whoever waits on them stops. A worker
    that is in fact alive (a long partition) is asked to cancel, so its script does not run on.
    Returns the runs this call ended, lost ones first."""
    ids = None if run_ids is None else list(run_ids)
    lost = store.reap_lost(stale_after=stale_after, run_ids=ids)
    for run in lost:
        output.request_cancel(run.run_id)
        output.close(run.run_id, status="lost", exit_code=None)
    expired = store.expire_queued(run_ids=ids)
    for run in expired:
        output.close(run.run_id, status="expired", exit_code=None)
    return lost + expired
