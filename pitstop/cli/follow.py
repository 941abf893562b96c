"""Following a run from the CLI: its output live, cancellation on Ctrl-C, the exit code.

``pitstop run --wait`` and ``pitstop show --follow`` both end here. The follower prints lines as
they arrive, cancels the remote run on the first Ctrl-C/SIGTERM/SIGHUP it is given, checks the
record while the output is quiet (reaping a silent worker, expiring an overdue queued run, as
Beat's reaper would), and rides out a Redis outage of up to ``scripts.lost_after_seconds``.
"""

from __future__ import annotations

import functools
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType
from typing import TypeVar

import click

from pitstop.cli.common import Context
from pitstop.connection.outage import RedisOutage
from pitstop.kernel.errors import ExitCode
from pitstop.runs.output import OutputEnd, OutputLine, RunOutput, reap_lost_runs
from pitstop.runs.store import Run, RunStore

EXIT_LOST = ExitCode.TEMPFAIL
"""Exit code when the worker running the script died (EX_TEMPFAIL: try again)."""
EXIT_EXPIRED = ExitCode.TEMPFAIL
"""Exit code when no worker took the run from its queue in time (EX_TEMPFAIL too)."""
EXIT_NOT_STARTED = ExitCode.USAGE
EXIT_CANCELLED = ExitCode.INTERRUPTED

END_GRACE_SECONDS = 3.0
"""How long a follower keeps reading for the end entry once the record says the run ended (the
worker records the result, then flushes the last lines and ends the stream)."""
WORKER_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled"})
"""The statuses a worker ends a stream with when it knows the result."""
QUEUED_WARNING_AFTER = 10.0

T = TypeVar("T")

CANCEL_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                       if hasattr(signal, name))
"""Ctrl-C, and what CI systems send when a job is cancelled (SIGHUP: not on Windows)."""


def exit_code_for(run: Run) -> int:
    """The exit code a CI step gets for a finished run: the script's own where there is one."""
    if run.status in ("succeeded", "failed", "timed_out") and run.exit_code is not None:
        return run.exit_code
    if run.status == "cancelled":
        return EXIT_CANCELLED
    if run.status == "lost":
        return EXIT_LOST
    if run.status == "expired":
        return EXIT_EXPIRED
    return EXIT_NOT_STARTED if run.exit_code is None else run.exit_code


@contextmanager
def cancel_requests() -> Iterator[list[int]]:
    """Record Ctrl-C, SIGTERM and SIGHUP (a cancelled CI job) instead of dying; a second one
    raises KeyboardInterrupt. The handler only records: Redis is talked to from the loop."""
    requests: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if requests:
            raise KeyboardInterrupt
        requests.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in CANCEL_SIGNALS}
    try:
        yield requests
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def follow_run(ctx: Context, run_id: str, requests: list[int] | None = None) -> Run:
    """Print the run's output as it arrives, until it ends; return the final run.

    A signal recorded in ``requests`` cancels the remote run (a queued one at once, a running
    one through its worker); pass an empty list that nothing fills to never cancel. The
    script's stdout and stderr lines go to this process's stdout and stderr.
    """
    if requests is None:
        with cancel_requests() as own:
            return follow_run(ctx, run_id, own)
    return _Follower(ctx, run_id, requests).follow()


class _Follower:
    def __init__(self, ctx: Context, run_id: str, requests: list[int]) -> None:
        self.run_id = run_id
        self.requests = requests
        self.output = RunOutput(ctx.redis())
        self.store = ctx.run_store()
        patience = ctx.settings.scripts.lost_after_seconds
        self.stale_after = timedelta(seconds=patience)
        self.outage = RedisOutage(
            patience, what=f"lost Redis while following run {run_id}",
            on_down=lambda exc: _say(f"Redis unreachable, retrying… (for up to {patience:g}s: "
                                     f"{exc})"),
            on_up=lambda: _say(f"Redis is back; following run {run_id} on"))
        self.cancel_sent = False
        self.warned_queue = False
        self.started = time.monotonic()
        self.last_check = 0.0
        self.ended_at: float | None = None

    def follow(self) -> Run:
        end: OutputEnd | None = None
        try:
            for item in self.output.follow(self.run_id, block_ms=200, outage=self.outage):
                if isinstance(item, OutputEnd):
                    end = item
                    break
                if isinstance(item, OutputLine):
                    self._print(item)
                if self.requests and not self.cancel_sent:
                    self._cancel()
                now = time.monotonic()
                if item is not None or (now - self.last_check < 1.0 and not self.cancel_sent):
                    continue
                self.last_check = now
                if self._ended(now):
                    break
        except KeyboardInterrupt:
            if self.requests and not self.cancel_sent:
                # Two quick Ctrl-Cs: the first one's cancel must still reach the run.
                self._cancel(best_effort=True)
            _say(f"stopped waiting; run {self.run_id} goes on (pitstop show {self.run_id})"
                 if not self.cancel_sent else f"stopped waiting for run {self.run_id} to end")
            raise
        return self._final(end)

    def _print(self, item: OutputLine) -> None:
        stream = sys.stderr if item.stream == "stderr" else sys.stdout
        stream.write(item.line + "\n")
        stream.flush()

    def _cancel(self, *, best_effort: bool = False) -> None:
        self.cancel_sent = True
        call = _once if best_effort else self.outage.call
        try:
            call(lambda: self.output.request_cancel(self.run_id))
            _say(f"cancelling run {self.run_id} (again to stop waiting)")
            current = call(lambda: self.store.cancel_if_queued(
                self.run_id, reason="cancelled before it started"))
            if current.status == "cancelled":
                call(lambda: self.output.close(self.run_id, status="cancelled", exit_code=None))
        except Exception as exc:
            if not best_effort:
                raise
            _say(f"could not cancel run {self.run_id}: {exc}")

    def _ended(self, now: float) -> bool:
        """Quiet for a while: is the run still alive? True once following should stop."""
        current = self.outage.call(lambda: self.store.get_run(self.run_id))
        if current.terminal:
            if current.status not in WORKER_STATUSES:
                return True  # expired or lost: no worker has lines left to send
            # The worker records the result, then sends its last lines and the end entry.
            self.ended_at = now if self.ended_at is None else self.ended_at
            return now - self.ended_at >= END_GRACE_SECONDS
        due = self.outage.call(functools.partial(_due, self.store, current, self.stale_after))
        if due:
            # Reaped or expired here: the end entry the reaper wrote comes next.
            self.outage.call(lambda: reap_lost_runs(self.store, self.output,
                                                    stale_after=self.stale_after,
                                                    run_ids=[self.run_id]))
            return False
        if (current.status == "queued" and not self.warned_queue
                and now - self.started > QUEUED_WARNING_AFTER):
            self.warned_queue = True
            until = (f"; it expires {current.queue_timeout:g}s after it was queued"
                     if current.queue_timeout is not None else "")
            _say(f"still queued on {current.queue!r}: is a worker consuming it? "
                 f"(pitstop worker -Q {current.queue}){until}")
        return False

    def _final(self, end: OutputEnd | None) -> Run:
        run_id = self.run_id
        final = self.outage.call(lambda: self.store.get_run(run_id))
        if (end is not None and end.status in WORKER_STATUSES and end.status != final.status
                and final.status in ("running", "lost")):
            # The worker ended the output with the result it could not record (Redis was
            # unreachable when the script ended): that result is the run's, whatever the record.
            _say(f"run {run_id} is recorded {final.status}, but its worker reported it "
                 f"{end.status} (exit code {end.exit_code}) and could not record that")
            final = final.model_copy(update={"status": end.status, "exit_code": end.exit_code})
        if final.status == "timed_out":
            limit = final.params.get("timeout", "?")
            _say(f"run {run_id} timed out after {limit}s; its processes were killed")
        elif final.status == "expired":
            _say(f"no worker took run {run_id} from queue {final.queue!r} within "
                 f"{final.queue_timeout or 0:g}s (is a worker consuming it? "
                 f"pitstop worker -Q {final.queue})")
        elif final.status in ("lost", "cancelled") and final.error:
            _say(f"run {run_id} {final.status}: {final.error}")
        return final


def _due(store: RunStore, run: Run, stale_after: timedelta) -> bool:
    """Whether the run is due to be reaped: running but silent, or queued past its deadline."""
    return ((run.status == "running" and store.is_stale(run, stale_after=stale_after))
            or (run.status == "queued" and store.is_overdue(run)))


def _once(call: Callable[[], T]) -> T:
    return call()


def _say(message: str) -> None:
    click.echo(f"pitstop: {message}", err=True)
