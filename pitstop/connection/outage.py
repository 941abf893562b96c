"""Riding out a short Redis outage: retry with backoff for a bounded time, then give up.

A Redis that is paused, restarting or failing over is usually back within seconds. Whoever is
following a run, or recording the result of a script that has just ended, should wait for it
instead of failing at the first timeout, but not forever: callers bound the wait, normally with
``scripts.lost_after_seconds`` (past it a silent worker counts as lost anyway).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import redis

from pitstop.kernel.errors import RedisUnavailable

__all__ = ["RedisOutage", "is_transient"]

T = TypeVar("T")

FIRST_DELAY = 0.1
MAX_DELAY = 2.0


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` says Redis cannot be reached for now (connection refused or reset, a read
    timing out, a server still loading its data), rather than that it refused the request."""
    if isinstance(exc, RedisUnavailable):
        # the run store's wrapping of the client's error (or a giving-up RedisOutage's)
        return exc.__cause__ is None or is_transient(exc.__cause__)
    if isinstance(exc, redis.AuthenticationError):
        return False  # a wrong password does not get better by waiting
    return isinstance(exc, redis.ConnectionError | redis.TimeoutError)


class RedisOutage:
    """One caller's view of whether Redis is reachable.

    :meth:`call` runs a Redis operation; while it fails with a transient error (see
    :func:`is_transient`) it is tried again after an exponential backoff (0.1 s doubling up to
    2 s). Once Redis has been unreachable for ``patience`` seconds in a row, counted from the
    start of the first failed attempt, or at ``give_up_by`` (a :func:`time.monotonic` time, e.g.
    a task's hard time limit), the last error is raised as :class:`RedisUnavailable`. With
    ``patience=0`` the first failure is raised at once. Any other error propagates untouched.

    ``on_down(exc)`` is told once when an outage starts, ``on_up()`` when a call succeeds again.
    After giving up, the outage is still under way: further calls get one attempt each (no
    waiting) until one succeeds. Not thread-safe: one instance per thread.
    """

    def __init__(self, patience: float, *, what: str = "Redis is unreachable",
                 give_up_by: float | None = None,
                 on_down: Callable[[BaseException], None] | None = None,
                 on_up: Callable[[], None] | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if not patience >= 0:
            raise ValueError(f"patience must be a number of seconds >= 0, got {patience!r}")
        self.patience = float(patience)
        self.what = what
        self.give_up_by = give_up_by
        self._on_down = on_down
        self._on_up = on_up
        self._monotonic = monotonic
        self._sleep = sleep
        self._down_since: float | None = None
        self._delay = FIRST_DELAY

    @property
    def down(self) -> bool:
        """True from a transient failure until the next successful call."""
        return self._down_since is not None

    def call(self, operation: Callable[[], T]) -> T:
        """``operation()``, retried while Redis is unreachable and patience lasts."""
        while True:
            started = self._monotonic()
            try:
                value = operation()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                self._failed(exc, started)
                continue
            self._recovered()
            return value

    def _failed(self, exc: BaseException, started: float) -> None:
        now = self._monotonic()
        if self._down_since is None:
            self._down_since = started
            self._delay = FIRST_DELAY
            if self._on_down is not None:
                self._on_down(exc)
        give_up_at = self._down_since + self.patience
        if self.give_up_by is not None:
            give_up_at = min(give_up_at, self.give_up_by)
        if now >= give_up_at:
            detail = str(exc) or type(exc).__name__
            if self.patience > 0:
                detail = f"unreachable for {now - self._down_since:.0f}s ({detail})"
            raise RedisUnavailable(f"{self.what}: {detail}") from exc
        # The last pause ends at the bound, so there is always one attempt right there.
        self._sleep(min(self._delay, give_up_at - now))
        self._delay = min(self._delay * 2, MAX_DELAY)

    def _recovered(self) -> None:
        if self._down_since is None:
            return
        self._down_since = None
        if self._on_up is not None:
            self._on_up()
