"""What the triage page reads: failure groups over the recent batches of
``.state/test_triage.jsonl`` (by fingerprint), flaky tests with their flip rate (the history in
Redis), and the auto-fixable share of each batch over time."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from pitstop.kernel.constants import LOG_TEST_TRIAGE
from pitstop.triage.flaky import FlakyHistory, FlakyStats
from pitstop.web.jsonltail import tail_records

__all__ = ["FailureGroup", "TriagePage", "triage_page"]

RECORDS_READ = 20_000
GROUPS_SHOWN = 50
FLAKY_SHOWN = 50
BATCHES_CHARTED = 40


@dataclass
class FailureGroup:
    fingerprint: str
    category: str
    action: str
    auto_fixable: bool
    error: str
    count: int = 0
    batches: set[str] = field(default_factory=set)
    tests: list[str] = field(default_factory=list)
    file: str | None = None
    line: int | None = None
    last_seen: str = ""


@dataclass
class TriagePage:
    groups: list[FailureGroup]
    flaky: list[FlakyStats]
    batches: list[dict[str, Any]]
    """Oldest first: ts, batch_id, failures, groups, auto_fixable_share, commit."""
    results_read: int
    flaky_error: str | None = None


def _groups(results: list[dict[str, Any]]) -> list[FailureGroup]:
    groups: dict[str, FailureGroup] = {}
    for record in results:
        fingerprint = str(record.get("fingerprint") or "")
        if not fingerprint:
            continue
        group = groups.get(fingerprint)
        if group is None:
            group = groups[fingerprint] = FailureGroup(
                fingerprint=fingerprint, category=str(record.get("category", "")),
                action=str(record.get("action", "")),
                auto_fixable=bool(record.get("auto_fixable")), error=str(record.get("error", "")))
        group.count += 1
        group.batches.add(str(record.get("batch_id", "")))
        test_id = record.get("test_id")
        if isinstance(test_id, str) and test_id not in group.tests and len(group.tests) < 5:
            group.tests.append(test_id)
        if group.file is None and isinstance(record.get("file"), str):
            group.file = record["file"]
            group.line = record.get("line") if isinstance(record.get("line"), int) else None
        group.last_seen = max(group.last_seen, str(record.get("ts", "")))
    return sorted(groups.values(), key=lambda g: (-g.count, g.fingerprint))[:GROUPS_SHOWN]


def triage_page(client: redis.Redis, state_dir: Path) -> TriagePage:
    records = tail_records(LOG_TEST_TRIAGE, state_dir, limit=RECORDS_READ)
    results = [r for r in records if r.get("kind") == "result"]
    batches = []
    for record in records:
        if record.get("kind") != "batch":
            continue
        raw = record.get("summary")
        summary: dict[str, Any] = raw if isinstance(raw, dict) else {}
        batches.append({"ts": str(record.get("ts", "")), "batch_id": str(record.get("batch_id", "")),
                        "commit": record.get("commit"),
                        "failures": int(summary.get("failures") or 0),
                        "groups": int(summary.get("groups") or 0),
                        "share": float(summary.get("auto_fixable_share") or 0.0)})
    flaky: list[FlakyStats] = []
    error = None
    try:
        flaky = sorted(FlakyHistory(client).flaky_tests(limit=FLAKY_SHOWN),
                       key=lambda s: (-s.flip_rate, s.test_id))
    except Exception as exc:  # a bad history entry must not take the whole page down
        error = f"{type(exc).__name__}: {exc}"
    return TriagePage(groups=_groups(results), flaky=flaky,
                      batches=batches[-BATCHES_CHARTED:], results_read=len(results),
                      flaky_error=error)
