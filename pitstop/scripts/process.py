"""The script's process, from spawn to reaping: its own session, the deadline, cancellation, and
killing its whole process group.

:func:`run_process` starts an argv list with no stdin in a new session (so the script leads a
process group of its own), drains its pipes (:mod:`pitstop.scripts.outputreader`), and waits for
exit, cancellation or the deadline; it reports a :class:`ProcessOutcome`. What to run, with which
environment, is decided before (:mod:`pitstop.scripts.policy`); the run's bookkeeping is the
wrapper's (:mod:`pitstop.scripts.cliwrapper`).

Decisions worth knowing:

* Killing sends SIGTERM to the process group and SIGKILL to what is left after ``kill_grace``.
  With ``kill_leftovers`` it is also done after a normal exit, for what the script left behind.
* Waiting costs no polling: a thread blocks in ``waitpid`` and the caller sleeps on an event
  until exit, cancellation or the deadline. ``cancel_check`` and ``heartbeat`` run on a helper
  thread of their own, so a call stuck on a stalled Redis never delays the timeout; their
  exceptions are logged and the script keeps running.
* An exception raised into the wait (Celery's soft time limit) kills the process group before it
  propagates.
* Exit codes are the shell's (see :mod:`pitstop.scripts.result`).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import subprocess  # nosec B404 # argv lists only, never a shell
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pitstop.kernel.proc import group_alive, terminate_group, with_parent_death_signal
from pitstop.kernel.redaction import Redactor
from pitstop.scripts.outputreader import PipeReader
from pitstop.scripts.result import (
    EXIT_CANCELLED,
    EXIT_CANNOT_EXECUTE,
    EXIT_NOT_FOUND,
    EXIT_TIMEOUT,
)

__all__ = ["ProcessOutcome", "run_process"]

log = logging.getLogger(__name__)

_POSIX = os.name == "posix"


_CANCEL_POLL = 0.2
_CREATION_FLAGS: int = 0 if _POSIX else getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)
_REAP_TIMEOUT = 10.0
_CALLBACKS_JOIN_TIMEOUT = 10.0  # for a cancel_check or heartbeat stuck when the script ended
_DRAIN_TIMEOUT = 1.0  # for pipes still held open by a process outside the killed group


@dataclass(frozen=True)
class ProcessOutcome:
    """How the process ended, and the redacted tails of its output."""

    exit_code: int
    timed_out: bool
    cancelled: bool
    duration: float
    stdout_tail: str
    stderr_tail: str
    pid: int | None
    stdout_truncated: bool = False
    stderr_truncated: bool = False


def run_process(
    argv: list[str],
    *,
    env: dict[str, str],
    cwd: Path | None,
    limit: float,
    redactor: Redactor,
    output_sink: Callable[[str, str], None] | None,
    output_cap_bytes: int,
    tail_bytes: int,
    cancel_check: Callable[[], bool] | None,
    heartbeat: Callable[[], None] | None,
    heartbeat_interval: float,
    kill_grace: float,
    kill_leftovers: bool,
) -> ProcessOutcome:
    """Run ``argv`` to exit, ``limit`` seconds or a positive ``cancel_check()``.

    ``output_sink(stream, line)`` receives every redacted line live, from reader threads, one
    call at a time; past ``output_cap_bytes`` a stream is only drained. ``cancel_check()`` is
    polled about every 0.2 s and ``heartbeat()`` called every ``heartbeat_interval`` seconds on
    a helper thread; the outcome waits (up to 10 s) for a call still in flight.
    """
    start = time.monotonic()
    try:
        proc = subprocess.Popen(  # nosec B603 # resolved script, argv list
            with_parent_death_signal(argv), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, cwd=cwd, close_fds=True, start_new_session=_POSIX,
            creationflags=_CREATION_FLAGS,
        )
    except OSError as exc:
        code = EXIT_NOT_FOUND if exc.errno == errno.ENOENT else EXIT_CANNOT_EXECUTE
        message = redactor.redact_text(f"cannot execute {argv[0]}: {exc.strerror or exc}")
        return ProcessOutcome(exit_code=code, timed_out=False, cancelled=False,
                              duration=time.monotonic() - start, stdout_tail="",
                              stderr_tail=message + "\n", pid=None)

    assert proc.stdout is not None and proc.stderr is not None  # noqa: S101 - PIPE given  # nosec B101 # narrowing
    sink_lock = threading.Lock()
    readers = [PipeReader(name, pipe, redactor=redactor, sink=output_sink,
                          sink_lock=sink_lock, cap_bytes=output_cap_bytes,
                          tail_bytes=tail_bytes)
               for name, pipe in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    exited = threading.Event()
    wake = threading.Event()  # the script exited, or cancellation was asked for
    ended: list[float] = []

    def reap() -> None:
        proc.wait()  # blocking waitpid: no polling, wakes the instant the child exits
        ended.append(time.monotonic())
        exited.set()
        wake.set()

    for reader in readers:
        reader.thread.start()
    threading.Thread(target=reap, name="cliwrapper-wait", daemon=True).start()
    callbacks = _Callbacks(cancel_check, heartbeat, heartbeat_interval, wake)

    try:
        timed_out, cancelled = _supervise(proc.pid, exited, callbacks, start + limit)
    except BaseException:
        # e.g. Celery's soft time limit, raised inside our wait: never orphan the script
        callbacks.stop()
        _kill_group(proc, exited, kill_grace)
        raise
    callbacks.stop()
    if timed_out or cancelled or kill_leftovers:
        _kill_group(proc, exited, kill_grace)
    if not exited.wait(_REAP_TIMEOUT):
        log.error("process %d did not die after SIGKILL (uninterruptible?)", proc.pid)
    duration = (ended[0] if ended else time.monotonic()) - start
    drained_by = time.monotonic() + _DRAIN_TIMEOUT
    stdout_tail, stdout_truncated = readers[0].finish(drained_by)
    stderr_tail, stderr_truncated = readers[1].finish(drained_by)
    # No heartbeat may land after the result: wait for a callback still in flight (a stuck
    # one only delays the bookkeeping; the script was stopped on time).
    callbacks.join(_CALLBACKS_JOIN_TIMEOUT)

    code = proc.returncode if proc.returncode is not None else -9  # never reaped
    if timed_out:
        code = EXIT_TIMEOUT
    elif cancelled:
        code = EXIT_CANCELLED
    elif code < 0:
        code = 128 - code
    return ProcessOutcome(exit_code=code, timed_out=timed_out, cancelled=cancelled,
                          duration=duration, stdout_tail=stdout_tail, stderr_tail=stderr_tail,
                          pid=proc.pid, stdout_truncated=stdout_truncated,
                          stderr_truncated=stderr_truncated)


def _supervise(pid: int, exited: threading.Event, callbacks: _Callbacks,
               deadline: float) -> tuple[bool, bool]:
    """Wait for the child; returns (timed_out, cancelled). Sleeps only on the wake event
    (set on exit and on cancellation): the callbacks, which may block on Redis, run on
    their own thread and cannot hold up the deadline."""
    callbacks.start()
    while True:
        woken = callbacks.wake.wait(max(0.0, deadline - time.monotonic()))
        if exited.is_set():
            return False, False
        if callbacks.cancelled.is_set():
            log.info("script pid %d cancelled", pid)
            return False, True
        if not woken and time.monotonic() >= deadline:
            log.info("script pid %d timed out", pid)
            return True, False


def _safe_call(func: Callable[[], Any], what: str) -> bool:
    try:
        return bool(func())
    except Exception:
        log.exception("%s raised; the script keeps running", what)
        return False


def _kill_group(proc: subprocess.Popen[bytes], exited: threading.Event, grace: float) -> None:
    """SIGTERM the script's process group, SIGKILL what is left after ``grace`` seconds."""
    if not _POSIX:
        if not exited.is_set():
            subprocess.run(["taskkill", "/F", "/T", "/PID", str(proc.pid)],  # nosec B603 B607 # Windows' own taskkill
                           capture_output=True, check=False)
        return
    pgid = proc.pid  # start_new_session: the child leads its own group
    if exited.is_set() and group_alive(pgid):
        log.info("killing processes left behind by script pid %d", pgid)
    terminate_group(pgid, grace)


class _Callbacks:
    """Polls ``cancel_check`` about every 0.2 s and calls ``heartbeat`` every
    ``interval`` seconds, on a thread of its own, until stopped. A positive cancel
    check sets ``cancelled`` and ``wake``."""

    def __init__(self, cancel_check: Callable[[], bool] | None,
                 heartbeat: Callable[[], None] | None, interval: float,
                 wake: threading.Event) -> None:
        self.wake = wake
        self.cancelled = threading.Event()
        self._stopped = threading.Event()
        self._cancel_check = cancel_check
        self._interval = interval
        self._beat = heartbeat
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._cancel_check is None and self._beat is None:
            return
        self._thread = threading.Thread(target=self._run, name="cliwrapper-callbacks",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def join(self, timeout: float) -> None:
        if self._thread is None:
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("a cancel_check or heartbeat call is still running %gs after the script "
                        "ended; not waiting for it", timeout)

    def _run(self) -> None:
        now = time.monotonic()
        next_cancel = now + _CANCEL_POLL
        next_beat = now + self._interval
        while True:
            wake_at = min(next_cancel if self._cancel_check is not None else math.inf,
                          next_beat if self._beat is not None else math.inf)
            if self._stopped.wait(max(0.0, wake_at - time.monotonic())):
                return
            if self._cancel_check is not None and time.monotonic() >= next_cancel:
                if _safe_call(self._cancel_check, "cancel_check"):
                    self.cancelled.set()
                    self.wake.set()
                    return
                next_cancel = time.monotonic() + _CANCEL_POLL
            if self._stopped.is_set():
                return
            if self._beat is not None and time.monotonic() >= next_beat:
                next_beat = time.monotonic() + self._interval
                _safe_call(self._beat, "heartbeat")
