"""Beat as a singleton: only the holder of a Redis lock fires schedules.

A second Beat process waits as a hot standby and takes over within the lock's TTL
(``celery.beat_lock_ttl``) of the holder dying: it sleeps until the lock runs out rather than
polling (:mod:`pitstop.fleet.beatlock` has the figures). Every leader tick also refreshes a
heartbeat key that ``pitstop doctor`` reads, with the same TTL as its verdict.

The schedule state is kept in memory, not in Celery's shelve file: two Beat processes on one
machine would share (and corrupt) that file, and with a standby taking over, "when did this entry
last run" is only meaningful fleet-wide. Interval entries restart their count on take-over.
"""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from typing import Any

import redis
from celery.beat import Scheduler

from pitstop.bus.streamcodec import text_of
from pitstop.connection.connect import client_for_url
from pitstop.connection.tokenlock import TokenLock
from pitstop.fleet.beatlock import lock_lifetime, renew_interval, standby_delay
from pitstop.kernel.constants import BEAT_HEARTBEAT_KEY, BEAT_LOCK_KEY

DEFAULT_LOCK_TTL = 30


class LockedScheduler(Scheduler):  # type: ignore[misc]
    """A Scheduler that fires only while it holds ``BEAT_LOCK_KEY``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._token = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"
        self._lock_client: redis.Redis | None = None
        self._lock: TokenLock | None = None
        self._is_leader = False
        self._announced_standby = False
        self._redis_down = False
        self._lock_remaining_ms = -1
        super().__init__(*args, **kwargs)
        settings = getattr(self.app, "pitstop_settings", None)
        self._ttl = settings.celery.beat_lock_ttl if settings is not None else DEFAULT_LOCK_TTL

    def _client(self) -> redis.Redis:
        if self._lock_client is None:
            url = getattr(self.app, "pitstop_redis_url", None) or self.app.conf.broker_url
            self._lock_client = client_for_url(url, socket_connect_timeout=5)
        return self._lock_client

    def _token_lock(self) -> TokenLock:
        if self._lock is None:
            self._lock = TokenLock(self._client(), BEAT_LOCK_KEY)
        return self._lock

    def _hold_lock(self) -> bool:
        client = self._client()
        lifetime_ms = int(lock_lifetime(self._ttl) * 1000)
        try:
            held = self._token_lock().hold(self._token, lifetime_ms)
            if not held:
                self._lock_remaining_ms = int(client.pttl(BEAT_LOCK_KEY))
        except redis.RedisError as exc:
            if not self._redis_down:
                self.logger.warning("beat: cannot reach Redis (%s); firing nothing until it "
                                    "answers", exc)
            self._redis_down = True
            return False
        if self._redis_down:
            self._redis_down = False
            self.logger.info("beat: Redis answers again")
        return held

    def tick(self, *args: Any, **kwargs: Any) -> float:
        leader = self._hold_lock()
        if leader != self._is_leader:
            self._is_leader = leader
            state = "acquired" if leader else "lost"
            self.logger.info("beat: %s the singleton lock %s (%s)", state, BEAT_LOCK_KEY,
                             self._token)
        if not leader:
            if self._redis_down:
                return renew_interval(self._ttl)
            if not self._announced_standby:
                self._announced_standby = True
                self.logger.info("beat: standing by; %s holds the singleton lock",
                                 self._lock_holder())
            # Wake up when the lock runs out, not up to TTL/3 later.
            return standby_delay(self._lock_remaining_ms, self._ttl)
        with contextlib.suppress(redis.RedisError):
            # Stamped with Redis's clock, which doctor reads too: host clocks may disagree. The
            # TTL goes with it: doctor judges the heartbeat by the leader's own figure.
            seconds, micros = self._client().time()
            self._client().set(BEAT_HEARTBEAT_KEY,
                               f"{seconds}.{micros:06d} {self._token} {self._ttl}",
                               ex=self._ttl * 2)
        delay = float(super().tick(*args, **kwargs))
        # Wake up in time to renew the lock even when nothing is due for a while.
        return min(delay, renew_interval(self._ttl))

    def _lock_holder(self) -> str:
        try:
            holder = self._client().get(BEAT_LOCK_KEY)
        except redis.RedisError:
            return "(unknown)"
        return text_of(holder)

    def close(self) -> None:
        try:
            if self._is_leader:
                # Compare-and-delete: a lock that expired and went to a standby is not ours.
                self._token_lock().release(self._token)
        except redis.RedisError:
            pass
        super().close()
