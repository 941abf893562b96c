"""A run's output lines as a Redis stream, so ``pitstop run --wait`` can print them live.

The worker's :class:`OutputWriter` packs the lines into entries (many lines each, at most
``RUN_OUTPUT_ENTRY_MAX_BYTES`` of them), numbered with a running line counter, and ends the
stream with one ``end`` entry; readers follow from any id. The stream keeps its last
``RUN_OUTPUT_MAXLEN`` entries: a reader that finds numbers missing (trimmed, or lines the worker
could not send) says how many, instead of skipping them silently.

Entry fields: ``n`` the number of the entry's first line (from 1), ``s`` one character per line
(``o`` stdout, ``e`` stderr), ``l`` the lines joined by ``\n``. The end entry has ``end`` (the
status), ``exit_code`` and, from a writer, ``n`` (the number the next line would have had).
Entries without ``n`` (:meth:`RunOutput.append`) hold one line in ``s``/``l``, unnumbered.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import redis

from pitstop.bus.streamcodec import text_of
from pitstop.connection.outage import RedisOutage
from pitstop.kernel.constants import (
    RUN_CANCEL_PREFIX,
    RUN_OUTPUT_END_PREFIX,
    RUN_OUTPUT_ENTRY_MAX_BYTES,
    RUN_OUTPUT_MAXLEN,
    RUN_OUTPUT_PREFIX,
    RUN_TTL_SECONDS,
)
from pitstop.kernel.errors import RedisUnavailable
from pitstop.runs.store import Run, RunStore


@dataclass(frozen=True)
class OutputLine:
    entry_id: str
    stream: str  # "stdout" | "stderr"
    line: str
    number: int | None = None
    """The line's number in the run's output (from 1); None for unnumbered lines and notes."""
    dropped: int = 0
    """Non-zero on a note :meth:`RunOutput.follow` makes up (on stderr): this many lines are
    missing before the next one (trimmed from the stream, or never sent)."""


@dataclass(frozen=True)
class OutputEnd:
    entry_id: str
    status: str
    exit_code: int | None


log = logging.getLogger(__name__)

_STREAM_CODES = {"stdout": "o", "stderr": "e"}
_STREAM_NAMES = {"o": "stdout", "e": "stderr"}


def _key(run_id: str) -> str:
    return f"{RUN_OUTPUT_PREFIX}{run_id}"


def _size(line: str) -> int:
    return len(line) if line.isascii() else len(line.encode("utf-8", "replace"))


def dropped_note(count: int) -> str:
    """What a follower shows where ``count`` lines are missing."""
    if count == 1:
        return "[pitstop] 1 line of output was dropped"
    return f"[pitstop] {count} lines of output were dropped"


def pack_lines(lines: Iterable[tuple[str, str]], *, first_line: int = 1,
               max_entry_bytes: int = RUN_OUTPUT_ENTRY_MAX_BYTES) -> list[dict[str, str]]:
    """The stream entries holding ``lines`` (``(stream, line)``), numbered from ``first_line``:
    as few as fit ``max_entry_bytes`` each (a longer line goes alone). A line holding ``\n``
    counts as several lines."""
    entries: list[dict[str, str]] = []
    codes: list[str] = []
    texts: list[str] = []
    size = 0
    number = first_line

    def flush() -> None:
        nonlocal number, size
        entries.append({"n": str(number), "s": "".join(codes), "l": "\n".join(texts)})
        number += len(texts)
        codes.clear()
        texts.clear()
        size = 0

    for stream, line in lines:
        code = _STREAM_CODES.get(stream, "o")
        for part in line.split("\n") if "\n" in line else (line,):
            cost = _size(part) + 2  # the separator and the stream code
            if texts and size + cost > max_entry_bytes:
                flush()
            codes.append(code)
            texts.append(part)
            size += cost
    if texts:
        flush()
    return entries


class RunOutput:
    """Write and follow the output stream of runs."""

    def __init__(self, client: redis.Redis, *, maxlen: int = RUN_OUTPUT_MAXLEN,
                 ttl_seconds: int = RUN_TTL_SECONDS,
                 max_entry_bytes: int = RUN_OUTPUT_ENTRY_MAX_BYTES) -> None:
        self._client = client
        self._maxlen = maxlen
        self._ttl = ttl_seconds
        self._max_entry_bytes = max_entry_bytes

    @property
    def maxlen(self) -> int:
        """Entries a stream keeps (older ones are trimmed)."""
        return self._maxlen

    @property
    def max_entry_bytes(self) -> int:
        """Most bytes of lines packed into one entry."""
        return self._max_entry_bytes

    def append(self, run_id: str, stream: str, line: str) -> None:
        """One unnumbered line in an entry of its own (no gap detection: prefer a writer)."""
        fields: dict[Any, Any] = {"s": stream, "l": line}
        self._client.xadd(_key(run_id), fields, maxlen=self._maxlen,
                          approximate=True)

    def append_many(self, run_id: str, lines: Sequence[tuple[str, str]], *,
                    first_line: int = 1) -> int:
        """Lines numbered from ``first_line``, packed into entries, in one round trip; returns
        the number of entries written."""
        key = _key(run_id)
        entries = pack_lines(lines, first_line=first_line, max_entry_bytes=self._max_entry_bytes)
        pipe = self._client.pipeline(transaction=False)
        for fields in entries:
            pipe.xadd(key, cast("dict[Any, Any]", fields), maxlen=self._maxlen, approximate=True)
        pipe.execute()
        return len(entries)

    def next_line(self, run_id: str) -> int:
        """The number the stream's next line gets: 1 for a new stream, or one past the last
        numbered line (a rerun of the script goes on numbering where the first attempt ended)."""
        last: Any = self._client.xrevrange(_key(run_id), count=1)
        if not last:
            return 1
        fields = {(k.decode() if isinstance(k, bytes) else k):
                  (v.decode("utf-8", "replace") if isinstance(v, bytes) else v)
                  for k, v in last[0][1].items()}
        number = _int_or_none(fields.get("n"))
        if number is None:
            return 1
        return number if "end" in fields else number + max(1, len(fields.get("s", "")))

    def close(self, run_id: str, *, status: str, exit_code: int | None,
              next_line: int | None = None) -> bool:
        """End the stream with its ``end`` entry, unless it already has one: the first closer
        wins (the worker with the result, the reaper with ``lost`` …) and a retried close after
        a lost reply writes nothing twice. Returns whether this call wrote it."""
        key = _key(run_id)
        flag = f"{RUN_OUTPUT_END_PREFIX}{run_id}"
        fields: dict[Any, Any] = {"end": status,
                                  "exit_code": "" if exit_code is None else str(exit_code)}
        if next_line is not None:
            fields["n"] = str(next_line)
        with self._client.pipeline(transaction=True) as pipe:
            while True:
                try:
                    cast("Any", pipe).watch(flag)  # redis-py leaves Pipeline.watch untyped
                    if pipe.exists(flag):
                        pipe.unwatch()
                        return False
                    pipe.multi()
                    pipe.set(flag, status, ex=self._ttl)
                    pipe.xadd(key, fields, maxlen=self._maxlen, approximate=True)
                    pipe.expire(key, self._ttl)
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def follow(self, run_id: str, *, after: str = "0-0", block_ms: int = 500,
               outage: RedisOutage | None = None) -> Iterator[OutputLine | OutputEnd | None]:
        """Yield lines as they arrive, ``None`` each time ``block_ms`` passes with nothing new,
        and finally the :class:`OutputEnd`.

        Lines missing from the stream are announced by one made-up stderr line (its
        ``dropped`` says how many); lines sent twice (a write retried after a lost reply) are
        yielded once. That needs the numbers of the lines before: from the start (``after``
        ``0-0``) they are known, after a given id they are learnt from the first entry.

        With ``outage``, a lost connection is retried (from the last entry read) for as long
        as it allows; without, the first failure raises :class:`RedisUnavailable`.
        """
        key = _key(run_id)
        last = after
        expected: int | None = 1 if after in ("0", "0-0") else None
        if outage is None:
            outage = RedisOutage(0, what=f"lost Redis while following run {run_id}")
        while True:
            read = functools.partial(self._client.xread, {key: last}, count=100, block=block_ms)
            try:
                reply: Any = outage.call(read)
            except redis.RedisError as exc:
                raise RedisUnavailable(f"lost Redis while following run {run_id}: {exc}") from exc
            if not reply:
                yield None
                continue
            for raw_id, fields in reply[0][1]:
                last = text_of(raw_id)
                decoded = {text_of(k): text_of(v) for k, v in fields.items()}
                number = _int_or_none(decoded.get("n"))
                if number is not None and expected is not None and number > expected:
                    gap = number - expected
                    yield OutputLine(last, "stderr", dropped_note(gap), dropped=gap)
                if "end" in decoded:
                    code = decoded.get("exit_code") or ""
                    yield OutputEnd(last, decoded["end"], int(code) if code else None)
                    return
                if number is None:  # one unnumbered line
                    yield OutputLine(last, decoded.get("s", "stdout"), decoded.get("l", ""))
                    continue
                codes = decoded.get("s", "")
                for offset, line in enumerate(decoded.get("l", "").split("\n")):
                    if expected is not None and number + offset < expected:
                        continue  # seen already
                    stream = _STREAM_NAMES.get(codes[offset:offset + 1], "stdout")
                    yield OutputLine(last, stream, line, number=number + offset)
                    expected = number + offset + 1

    def request_cancel(self, run_id: str) -> None:
        self._client.set(f"{RUN_CANCEL_PREFIX}{run_id}", "1", ex=self._ttl)

    def cancel_requested(self, run_id: str) -> bool:
        return bool(self._client.exists(f"{RUN_CANCEL_PREFIX}{run_id}"))


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


_WriterItem = tuple[str, str] | None


class OutputWriter:
    """Sends one run's lines from a background thread, batching whatever piles up while a write
    is in flight: a quiet script's lines go out at once, a chatty one's in pipelines, packed
    into few stream entries, and the script's pipes are never drained at the pace of Redis
    round trips.

    The stream keeps ``output.maxlen`` entries. Once half of them are used, a batch smaller
    than a full entry waits up to ``linger`` seconds for more lines (10 times that past 90 %),
    so even a script trickling one line at a time for hours fits; what still does not is
    reported to followers as dropped, never skipped silently.

    When Redis is unreachable, a batch (and the end entry) is retried for ``patience`` seconds
    (never past ``give_up_by``, a :func:`time.monotonic` time); lines that could not be sent
    are counted all the same, so followers learn how many they missed.
    """

    _END = None

    def __init__(self, output: RunOutput, run_id: str, *, max_batch: int = 2000,
                 linger: float = 1.0, patience: float = 0.0,
                 give_up_by: float | None = None) -> None:
        self._output = output
        self._run_id = run_id
        self._max_batch = max_batch
        self._linger = linger
        self._patience = patience
        self._give_up_by = give_up_by
        self._budget = max(1, output.maxlen - 1)  # one entry is kept for the end
        self._entry_bytes = output.max_entry_bytes
        self._entries = 0
        self._first_line = self._next_line = 1  # until the stream says otherwise
        self._queue: queue.SimpleQueue[_WriterItem] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._send_batches, daemon=True,
                                        name=f"output-{run_id}")
        self._thread.start()

    @property
    def lines_sent(self) -> int:
        """Lines this writer handled so far (sent, or given up on and counted as dropped)."""
        return self._next_line - self._first_line

    def write(self, stream: str, line: str) -> None:
        if "\n" in line:
            for part in line.split("\n"):
                self._queue.put((stream, part))
        else:
            self._queue.put((stream, line))

    def close(self, *, status: str, exit_code: int | None) -> bool:
        """Send what is left, then the end entry (after the last line, always), unless the
        stream already has one. Never raises for Redis: returns whether the end was written."""
        self._queue.put(self._END)
        self._thread.join()
        outage = RedisOutage(self._patience, what=f"ending the output of run {self._run_id}",
                             give_up_by=self._give_up_by)
        try:
            return outage.call(lambda: self._output.close(
                self._run_id, status=status, exit_code=exit_code, next_line=self._next_line))
        except (redis.RedisError, RedisUnavailable):
            log.error("run %s: could not end its output stream (%s, exit code %s); the reaper "
                      "ends it once Redis is back", self._run_id, status, exit_code,
                      exc_info=True)
            return False

    def _linger_now(self) -> float:
        used = self._entries / self._budget
        if used < 0.5:
            return 0.0
        return self._linger if used < 0.9 else 10 * self._linger

    def _send_batches(self) -> None:
        def on_down(exc: BaseException) -> None:
            if self._patience > 0:
                log.warning("run %s: Redis unreachable (%s); holding its output for up to %gs",
                            self._run_id, exc, self._patience)

        outage = RedisOutage(self._patience, what=f"sending the output of run {self._run_id}",
                             give_up_by=self._give_up_by, on_down=on_down)
        try:  # a rerun (an idempotent script whose worker died) numbers on after the first try
            self._first_line = self._next_line = outage.call(
                functools.partial(self._output.next_line, self._run_id))
        except (redis.RedisError, RedisUnavailable):
            log.warning("run %s: could not read where its output stream ends; numbering its "
                        "lines from 1", self._run_id, exc_info=True)
        ended = False
        while not ended:
            batch: list[tuple[str, str]] = []
            size = 0
            item = self._queue.get()
            linger = self._linger_now()
            until = time.monotonic() + linger
            while True:
                if item is self._END:
                    ended = True
                    break
                batch.append(item)
                size += _size(item[1]) + 2
                if len(batch) >= self._max_batch or size >= 16 * self._entry_bytes:
                    break
                if linger and size >= self._entry_bytes:
                    break  # a full entry is worth its place in the stream: no need to wait
                wait = until - time.monotonic()
                try:
                    item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._send(batch, outage)

    def _send(self, batch: list[tuple[str, str]], outage: RedisOutage) -> None:
        first = self._next_line
        try:
            self._entries += outage.call(
                lambda: self._output.append_many(self._run_id, batch, first_line=first))
        except (redis.RedisError, RedisUnavailable):
            log.warning("run %s: lost %d output line(s) (followers are told)", self._run_id,
                        len(batch), exc_info=True)
        finally:
            self._next_line = first + len(batch)  # counted even if lost: followers see the gap


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
