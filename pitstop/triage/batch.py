"""Batch triage: many failures grouped by fingerprint, most significant group first, with a summary.

Significance: the category's place in :data:`~pitstop.triage.model.PRECEDENCE` (a blocking
cause such as a missing dependency before the assertion failures it may explain; known-flaky
tests last), then the number of failures, then the fingerprint, so the order is the same on
every run over the same input.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from pitstop.triage.model import RANK, Action, Category, Location, TriageResult

MAX_GROUP_TESTS = 10_000
TOP_GROUPS = 5


@dataclass
class Group:
    fingerprint: str
    category: Category
    action: Action
    auto_fixable: bool
    error: str
    evidence: list[str]
    environment: bool
    location: Location | None
    results: list[TriageResult] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.results)

    @property
    def tests(self) -> list[str]:
        seen: dict[str, None] = {}
        for result in self.results:
            if result.test_id and len(seen) < MAX_GROUP_TESTS:
                seen.setdefault(result.test_id, None)
        return list(seen)

    @property
    def confidence(self) -> float:
        return max(result.confidence for result in self.results)

    def sort_key(self) -> tuple[int, int, str]:
        return RANK[self.category], -self.count, self.fingerprint

    def to_dict(self) -> dict[str, Any]:
        first = self.results[0]
        return {
            "category": str(self.category),
            "action": str(self.action),
            "auto_fixable": self.auto_fixable,
            "count": self.count,
            "fingerprint": self.fingerprint,
            "tests": self.tests,
            "evidence": list(self.evidence),
            "error": self.error,
            "file": self.location.file if self.location else None,
            "line": self.location.line if self.location else None,
            "environment": self.environment,
            "confidence": round(self.confidence, 2),
            "detected": str(first.detected) if first.detected else None,
            "inputs": sorted({result.file_name for result in self.results if result.file_name}),
        }


@dataclass
class InputSummary:
    name: str
    format: str
    failures: int
    passed: int
    bytes: int
    truncated: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "format": self.format, "failures": self.failures,
                "passed": self.passed, "bytes": self.bytes, "truncated": self.truncated}


@dataclass
class BatchReport:
    groups: list[Group]
    inputs: list[InputSummary] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(group.count for group in self.groups)

    def results(self) -> list[TriageResult]:
        return [result for group in self.groups for result in group.results]

    def summary(self) -> dict[str, Any]:
        total = self.failures
        by_category: Counter[str] = Counter()
        by_action: Counter[str] = Counter()
        fixable = 0
        for group in self.groups:
            by_category[str(group.category)] += group.count
            by_action[str(group.action)] += group.count
            fixable += group.count if group.auto_fixable else 0
        return {
            "failures": total,
            "groups": len(self.groups),
            "by_category": dict(sorted(by_category.items(), key=lambda kv: (-kv[1], kv[0]))),
            "by_action": dict(sorted(by_action.items(), key=lambda kv: (-kv[1], kv[0]))),
            "auto_fixable_share": round(fixable / total, 3) if total else 0.0,
            "top_groups": [{"fingerprint": group.fingerprint, "category": str(group.category),
                            "count": group.count, "error": group.error}
                           for group in self.groups[:TOP_GROUPS]],
            "passed": sum(item.passed for item in self.inputs),
        }

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary(), "groups": [group.to_dict() for group in self.groups],
                "inputs": [item.to_dict() for item in self.inputs]}


def group_results(results: list[TriageResult],
                  inputs: list[InputSummary] | None = None) -> BatchReport:
    """Group ``results`` by fingerprint, most significant group first."""
    groups: dict[str, Group] = {}
    for result in results:
        group = groups.get(result.fingerprint)
        if group is None:
            group = groups[result.fingerprint] = Group(
                fingerprint=result.fingerprint, category=result.category, action=result.action,
                auto_fixable=result.auto_fixable, error=result.error,
                evidence=list(result.evidence), environment=result.environment,
                location=result.location)
        elif group.location is None and result.location is not None:
            group.location = result.location
        group.results.append(result)
    ordered = sorted(groups.values(), key=Group.sort_key)
    return BatchReport(groups=ordered, inputs=list(inputs or []))
