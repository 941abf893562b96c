"""Confidence in a patch, its hard gates, and the decision they lead to.

The score is the weighted mean of the checks' scores (0..1 each: pass 1, fail/missing/timeout 0,
coverage the share of changed lines run), in percent, minus ``three_way_penalty`` points when the
patch only applied with ``--3way``. Hard gates, any one of which sends the patch to manual
review whatever the score: the tests passed, the patch applied without conflicts, it touches no
protected path, no high-severity security finding.

Decision: ``auto_merge`` at ``auto_merge_at`` (95) or above, ``pr`` at ``pr_at`` (80) or above,
else ``review``; ``rejected`` when the patch was unsafe or does not apply.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pitstop.patches.checks import CheckResult

__all__ = ["Assessment", "Decision", "assess"]

Decision = Literal["auto_merge", "pr", "review", "rejected"]
TESTS_CHECK = "tests"


@dataclass
class Assessment:
    score: float
    gates: dict[str, bool]
    decision: Decision
    reasons: list[str] = field(default_factory=list)

    @property
    def gates_passed(self) -> bool:
        return all(self.gates.values())


def assess(checks: Sequence[CheckResult], *, method: str, protected: Mapping[str, str],
           auto_merge_at: float, pr_at: float, three_way_penalty: float) -> Assessment:
    """Score and decide for a patch that applied (``method``: ``apply`` or ``3way``)."""
    weights = sum(check.weight for check in checks)
    score = (100.0 * sum(check.weight * check.score for check in checks) / weights
             if weights else 0.0)
    reasons: list[str] = []
    if method == "3way":
        score -= three_way_penalty
        reasons.append(f"applied only with --3way (-{three_way_penalty:g} points)")
    score = max(0.0, min(100.0, score))
    by_name = {check.name: check for check in checks}
    tests = by_name.get(TESTS_CHECK)
    gates = {
        "tests_pass": tests is not None and tests.passed,
        "applies_cleanly": method in ("apply", "3way"),
        "no_protected_paths": not protected,
        "no_high_severity": not any(check.high_severity for check in checks),
    }
    if tests is None:
        reasons.append("no tests check is configured")
    elif not tests.passed:
        reasons.append(f"tests {tests.status}: {tests.summary}")
    if protected:
        shown = ", ".join(f"{path} ({pattern})" for path, pattern in list(protected.items())[:5])
        reasons.append(f"touches protected paths: {shown}")
    for check in checks:
        if check.high_severity:
            reasons.append(f"{check.name}: {check.high_severity} high-severity finding(s)")
        if check.name != TESTS_CHECK and not check.passed:
            reasons.append(f"{check.name} {check.status}: {check.summary}")
    decision: Decision
    if not all(gates.values()):
        decision = "review"
        reasons.insert(0, "a hard gate failed: manual review")
    elif score >= auto_merge_at:
        decision = "auto_merge"
        reasons.insert(0, f"score {score:.1f}% >= {auto_merge_at:g}%: auto-merge")
    elif score >= pr_at:
        decision = "pr"
        reasons.insert(0, f"score {score:.1f}% >= {pr_at:g}%: pull request with auto-merge")
    else:
        decision = "review"
        reasons.insert(0, f"score {score:.1f}% < {pr_at:g}%: manual review")
    return Assessment(round(score, 2), gates, decision, reasons)
