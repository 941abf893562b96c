"""The figures of Beat's singleton lock, shared by Beat (``workers.beat``) and ``pitstop doctor``.

The documented figure is ``celery.beat_lock_ttl`` (TTL): a standby Beat takes over at most TTL
seconds after the leader dies, and ``pitstop doctor`` reports Beat down once the leader's last
heartbeat is older than TTL. How Beat keeps to it:

- the leader holds the lock for ``TTL - slack`` (:func:`lock_lifetime`) and renews it, and its
  heartbeat, every ``TTL / 3`` at most (:func:`renew_interval`);
- a standby sleeps until the lock runs out (its remaining time, ``PTTL``: :func:`standby_delay`)
  instead of polling every ``TTL / 3``, so it takes the lock at most ``TTL - slack`` plus a few
  milliseconds after the leader's last renewal, before its death, so within TTL of that death.
  (Polling every ``TTL / 3`` took up to ``TTL + TTL / 3``.)
"""

from __future__ import annotations

__all__ = ["STANDBY_MARGIN", "beat_alive", "lock_lifetime", "renew_interval", "standby_delay",
           "takeover_slack"]

STANDBY_MARGIN = 0.005
"""Seconds a standby sleeps past the lock's expiry, so that it finds the lock gone."""
_RACE_RETRY = 0.05
"""Seconds before a standby tries again when the lock vanished under it (another standby may be
taking it): a lock released by a leader that stopped cleanly is taken at once."""


def takeover_slack(ttl: float) -> float:
    """How much shorter than TTL the lock lives: room for the standby to wake up and take it."""
    return min(1.0, ttl / 10)


def lock_lifetime(ttl: float) -> float:
    """Seconds the leader's lock lives after each renewal."""
    return ttl - takeover_slack(ttl)


def renew_interval(ttl: float) -> float:
    """The longest a Beat sleeps between ticks: the leader renews its lock (and heartbeat) this
    often, a standby looks at the lock at least this often."""
    return ttl / 3


def standby_delay(remaining_ms: int, ttl: float) -> float:
    """How long a standby sleeps, given the lock's remaining lifetime (Redis ``PTTL``: -2 when
    the lock is gone, -1 when it has no expiry)."""
    if remaining_ms == -2:
        return _RACE_RETRY
    if remaining_ms < 0:
        return renew_interval(ttl)
    return min(renew_interval(ttl), remaining_ms / 1000 + STANDBY_MARGIN)


def beat_alive(heartbeat_age: float, ttl: float) -> bool:
    """Whether a leader whose last heartbeat is ``heartbeat_age`` seconds old counts as alive:
    past TTL, a standby would have taken over, so the leader is reported down."""
    return heartbeat_age <= ttl
