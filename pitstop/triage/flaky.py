"""Flaky-test history in Redis: results per test id and commit, flakiness and flip rate.

Each test (by :func:`~pitstop.triage.config.canonical_test_id`, so pytest's and JUnit's names
for it agree) has a list ``pitstop:triage:history:<id>`` of its latest results, newest first,
trimmed to the window and expiring after ``ttl_days`` without a run. A test that both passed
and failed on one commit within the window is flaky (the code did not change, the outcome
did); failing on two different commits is not. Flaky tests are indexed in the sorted set
``pitstop:triage:flaky`` (score: when last seen flaky), so listing them needs no scan.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from pitstop.kernel.constants import TRIAGE_FLAKY_INDEX, TRIAGE_HISTORY_PREFIX
from pitstop.kernel.errors import RedisUnavailable, ValidationError
from pitstop.triage.config import canonical_test_id

MAX_COMMIT_CHARS = 100
PASSED = "p"
FAILED = "f"


@dataclass(frozen=True)
class FlakyStats:
    test_id: str
    runs: int
    passed: int
    failed: int
    flips: int
    flaky_commits: list[str]
    last_seen: datetime | None

    @property
    def flaky(self) -> bool:
        return bool(self.flaky_commits)

    @property
    def flip_rate(self) -> float:
        """Outcome changes between consecutive runs, over the runs in the window."""
        return self.flips / (self.runs - 1) if self.runs > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"test_id": self.test_id, "runs": self.runs, "passed": self.passed,
                "failed": self.failed, "flips": self.flips,
                "flip_rate": round(self.flip_rate, 3), "flaky_commits": self.flaky_commits,
                "last_seen": self.last_seen.isoformat() if self.last_seen else None}


def _stats(test_id: str, raw_entries: list[Any]) -> FlakyStats:
    entries = []
    for raw in raw_entries:
        try:
            entry = json.loads(raw)
        except (TypeError, ValueError):
            continue
        if isinstance(entry, dict) and entry.get("o") in (PASSED, FAILED):
            entries.append(entry)
    entries.reverse()  # oldest first
    outcomes_by_commit: dict[str, set[str]] = {}
    for entry in entries:
        outcomes_by_commit.setdefault(str(entry.get("c")), set()).add(entry["o"])
    flips = sum(1 for before, after in itertools.pairwise(entries)
                if before["o"] != after["o"])
    last = entries[-1].get("t") if entries else None
    shown = str(entries[-1].get("id") or test_id) if entries else test_id
    return FlakyStats(
        test_id=shown, runs=len(entries),
        passed=sum(1 for entry in entries if entry["o"] == PASSED),
        failed=sum(1 for entry in entries if entry["o"] == FAILED), flips=flips,
        flaky_commits=sorted(commit for commit, seen in outcomes_by_commit.items()
                             if len(seen) == 2),
        last_seen=datetime.fromtimestamp(float(last), UTC) if isinstance(last, int | float) else None)


class FlakyHistory:
    """Results per test and commit in Redis (see the module)."""

    def __init__(self, client: redis.Redis, *, window: int = 20, ttl_days: float = 30) -> None:
        self.client = client
        self.window = window
        self.ttl_seconds = int(ttl_days * 86400)

    @staticmethod
    def key(test_id: str) -> str:
        return TRIAGE_HISTORY_PREFIX + canonical_test_id(test_id)

    def record(self, commit: str, outcomes: Iterable[tuple[str, str]], *,
               now: datetime) -> list[FlakyStats]:
        """Add ``(test_id, "p"|"f")`` results for ``commit``; return the tests now flaky."""
        commit = commit.strip()
        if not commit or len(commit) > MAX_COMMIT_CHARS or any(c.isspace() for c in commit):
            raise ValidationError(f"commit {commit[:40]!r} must be one word of at most "
                                  f"{MAX_COMMIT_CHARS} characters (a SHA, a tag)")
        stamp = now.timestamp()
        tests: dict[str, str] = {}
        try:
            pipe = self.client.pipeline(transaction=False)
            for test_id, outcome in outcomes:
                key = self.key(test_id)
                tests.setdefault(key, test_id)
                entry = json.dumps({"c": commit, "o": outcome, "t": stamp, "id": test_id},
                                   separators=(",", ":"))
                pipe.lpush(key, entry)
                pipe.ltrim(key, 0, self.window - 1)
                pipe.expire(key, self.ttl_seconds)
            pipe.execute()
            keys = list(tests)
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.lrange(key, 0, -1)
            histories = pipe.execute()
            flaky: list[FlakyStats] = []
            pipe = self.client.pipeline(transaction=False)
            for key, raw in zip(keys, histories, strict=True):
                member = key.removeprefix(TRIAGE_HISTORY_PREFIX)
                stats = _stats(tests[key], raw)
                if stats.flaky:
                    flaky.append(stats)
                    pipe.zadd(TRIAGE_FLAKY_INDEX, {member: stamp})
                else:
                    pipe.zrem(TRIAGE_FLAKY_INDEX, member)
            pipe.execute()
        except redis.RedisError as exc:
            raise RedisUnavailable(f"recording test history failed: {exc}") from exc
        return flaky

    def flaky_ids(self) -> set[str]:
        """Canonical ids of every test flaky within its window."""
        try:
            members = self.client.zrange(TRIAGE_FLAKY_INDEX, 0, -1)
        except redis.RedisError as exc:
            raise RedisUnavailable(f"reading flaky tests failed: {exc}") from exc
        return {member.decode() if isinstance(member, bytes) else str(member)
                for member in members}

    def is_flaky(self, test_id: str) -> bool:
        return canonical_test_id(test_id) in self.flaky_ids()

    def stats(self, test_id: str) -> FlakyStats:
        try:
            raw = self.client.lrange(self.key(test_id), 0, -1)
        except redis.RedisError as exc:
            raise RedisUnavailable(f"reading test history failed: {exc}") from exc
        return _stats(test_id, list(raw))

    def flaky_tests(self, limit: int = 100) -> list[FlakyStats]:
        """Flaky tests, most recently seen first, with their evidence."""
        try:
            members = self.client.zrevrange(TRIAGE_FLAKY_INDEX, 0, max(0, limit - 1))
            pipe = self.client.pipeline(transaction=False)
            names = [member.decode() if isinstance(member, bytes) else str(member)
                     for member in members]
            for name in names:
                pipe.lrange(TRIAGE_HISTORY_PREFIX + name, 0, -1)
            histories = pipe.execute()
        except redis.RedisError as exc:
            raise RedisUnavailable(f"reading flaky tests failed: {exc}") from exc
        found = [_stats(name, raw) for name, raw in zip(names, histories, strict=True)]
        return [stats for stats in found if stats.flaky]
