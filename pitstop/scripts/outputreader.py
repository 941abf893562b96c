"""Draining a script's stdout and stderr: live redacted lines, a byte cap, a redacted tail.

Each pipe is read on its own thread, a line (or a :data:`CHUNK` of a longer one) at a time, so
the script never blocks on a full pipe. A long line is sent in pieces split where no secret (and
no UTF-8 character) is cut (:func:`split_piece`), so per-piece redaction cannot leak halves.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO

from pitstop.kernel.redaction import Redactor

__all__ = ["CHUNK", "PipeReader", "split_piece"]

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
"""Longest piece read as one "line": bounds memory on output without newlines."""


class PipeReader:
    """Drains one pipe line by line on its own thread: live sink, byte cap, raw tail."""

    def __init__(self, name: str, pipe: IO[bytes], *, redactor: Redactor,
                 sink: Callable[[str, str], None] | None, sink_lock: threading.Lock,
                 cap_bytes: int, tail_bytes: int) -> None:
        self.name = name
        self.truncated = False
        self._pipe = pipe
        self._redactor = redactor
        self._sink = sink
        self._sink_lock = sink_lock
        self._cap = cap_bytes
        self._tail_bytes = tail_bytes
        self._seen = 0
        self._carry = b""  # the end of an unfinished long line, held back (see split_piece)
        self._tail: deque[bytes] = deque()
        self._tail_size = 0
        self._lock = threading.Lock()
        self._abandoned = False
        self.thread = threading.Thread(target=self._run, name=f"cliwrapper-{name}", daemon=True)

    def _run(self) -> None:
        keep = self._tail_bytes + CHUNK  # one spare piece so redaction sees whole lines
        sink = self._sink
        cap = self._cap
        try:
            for raw in iter(lambda: self._pipe.readline(CHUNK), b""):
                with self._lock:
                    if self._abandoned:
                        continue
                    self._tail.append(raw)
                    self._tail_size += len(raw)
                    while self._tail_size - len(self._tail[0]) >= keep:
                        self._tail_size -= len(self._tail.popleft())
                if self.truncated:
                    continue  # past the cap: drain only, so the child never blocks
                self._seen += len(raw)
                if self._seen > cap:
                    self.truncated = True
                    if sink is not None:
                        self._send(sink, f"[pitstop] {self.name} passed {cap} bytes: "
                                         "no further lines are streamed")
                    continue
                if sink is not None:
                    self._stream(sink, raw)
            if sink is not None and self._carry and not self.truncated:
                self._emit(sink, self._carry)
        except (OSError, ValueError):  # the pipe went away under us
            pass
        finally:
            with contextlib.suppress(OSError):
                self._pipe.close()

    def _stream(self, sink: Callable[[str, str], None], raw: bytes) -> None:
        """Send a whole line, or the part of a long line's piece no secret can straddle."""
        data = self._carry + raw
        if data.endswith(b"\n"):
            self._carry = b""
            self._emit(sink, data)
            return
        # A piece of a line longer than CHUNK: each piece is redacted alone, so a secret cut in
        # two by the piece boundary would pass in halves. Hold back what could start one.
        cut = split_piece(data, [s.encode() for s in self._redactor.secrets])
        self._carry = data[cut:]
        if cut:
            self._emit(sink, data[:cut])

    def _emit(self, sink: Callable[[str, str], None], data: bytes) -> None:
        line = data.decode("utf-8", "replace").rstrip("\n").rstrip("\r")
        self._send(sink, self._redactor.redact_text(line))

    def _send(self, sink: Callable[[str, str], None], line: str) -> None:
        try:
            with self._sink_lock:
                sink(self.name, line)
        except Exception:
            # a broken sink must not stop the draining, or the child blocks on a full pipe
            log.exception("output sink failed on a %s line; output continues", self.name)

    def finish(self, deadline: float) -> tuple[str, bool]:
        """Wait for EOF (until monotonic ``deadline``); return the redacted tail and truncation."""
        self.thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            if self.thread.is_alive():
                # something outside the process group still holds the pipe open
                self._abandoned = True
                log.warning("%s still open after the script ended; not waiting for it", self.name)
            raw = b"".join(self._tail)
        text = self._redactor.redact_text(raw.decode("utf-8", "replace"))
        encoded = text.encode()
        if len(encoded) > self._tail_bytes:
            text = encoded[-self._tail_bytes:].decode("utf-8", "ignore")
        return text, self.truncated


def split_piece(data: bytes, secrets: Sequence[bytes]) -> int:
    """Where to split ``data`` (a piece of an unfinished line) so that no occurrence of a
    secret is cut: everything before the point can be redacted and sent now, the rest waits for
    more. Never inside a UTF-8 character, and at most ``2 * max secret length`` is held back."""
    longest = max((len(s) for s in secrets), default=0)
    cut = len(data) - max(0, longest - 1)
    # Occurrences can chain (a secret "aaaa" in a run of "a"s): stop there, or nothing is sent.
    floor = max(0, len(data) - 2 * longest)
    moved = True
    while moved and cut > floor:
        moved = False
        for secret in secrets:
            start = data.find(secret, max(0, cut - len(secret) + 1), cut + len(secret) - 1)
            if start != -1 and start < cut < start + len(secret):
                cut, moved = max(start, floor), True
    while 0 < cut < len(data) and data[cut] & 0xC0 == 0x80:  # a UTF-8 continuation byte
        cut -= 1
    lead = cut - 1
    while lead > max(0, cut - 4) and data[lead] & 0xC0 == 0x80:
        lead -= 1
    if lead >= 0 and lead + _utf8_length(data[lead]) > cut:  # the last character is unfinished
        cut = lead
    return max(cut, 0)


def _utf8_length(lead: int) -> int:
    return 4 if lead >= 0xF0 else 3 if lead >= 0xE0 else 2 if lead >= 0xC0 else 1
