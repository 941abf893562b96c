"""One pytest session's failure reports paired with its short summary and progress lines.

A report whose header gives only a name (``test_x``, ``TestA.test_x``) or nothing at all
(``--tb=line``) gets the node id the summary or progress lines give it; a test those lines name
without any report becomes a failure of its own.
"""

from __future__ import annotations

import re

from pitstop.triage.parsed import InputFacts, RawFailure
from pitstop.triage.signals import Hit

SummaryLine = tuple[str, str, Hit | None]
"""A short test summary line: outcome (FAILED or ERROR), node id, the signal its message had."""

_TEST_FILE = re.compile(r"(?:^|/)(?:test_[^/]*|[^/]*_test)\.py$")


def pair_session(blocks: list[RawFailure], summary: list[SummaryLine],
                 progress: dict[str, str], facts: InputFacts, session: int) -> list[RawFailure]:
    """The session's failures: its reports (``blocks``, in order), then what only its summary
    and then only its progress lines (node id to outcome) name."""
    failures: list[RawFailure] = []
    used: set[int] = set()
    known_ids = [node_id for _, node_id, _ in summary]
    known_ids += [node_id for node_id in progress if node_id not in known_ids]
    taken: set[str] = set()
    for block in blocks:
        if block.test_id is None:
            block.test_id = _pytest_id(block, summary, known_ids, used, taken, facts)
        taken.add(block.test_id or "")
        for index, (_, node_id, hit) in enumerate(summary):
            if node_id == block.test_id and index not in used:
                used.add(index)
                block.summary = block.summary or hit
        failures.append(block)
    for index, (outcome, node_id, hit) in enumerate(summary):
        if index in used or node_id in taken:
            continue
        taken.add(node_id)
        failure = RawFailure(test_id=node_id, source="pytest", session=session,
                             outcome="error" if outcome == "ERROR" else "failed",
                             context="collection" if "::" not in node_id else "test")
        if hit is not None:
            failure.add_hit(hit)
            failure.evidence_lines = 1
        failure.summary = hit
        failures.append(failure)
    for node_id, outcome in progress.items():
        if node_id not in taken:
            taken.add(node_id)
            failures.append(RawFailure(test_id=node_id, source="pytest", session=session,
                                       outcome="error" if outcome == "ERROR" else "failed"))
    return failures


def _pytest_id(block: RawFailure, summary: list[SummaryLine], known: list[str], used: set[int],
               taken: set[str], facts: InputFacts) -> str | None:
    name = block.name
    files = [facts.relative(file) for file, _ in block.locations]
    if name is None:  # --tb=line: one line per failure, in summary order
        for index, (outcome, node_id, _) in enumerate(summary):
            if index not in used and outcome == "FAILED" and node_id not in taken:
                return node_id
        return files[-1] if files else None
    suffix = "::" + name.replace(".", "::") if "/" not in name and "::" not in name else None
    candidates = [node_id for node_id in known if node_id not in taken
                  and (node_id == name or (suffix is not None and node_id.endswith(suffix)))]
    for node_id in candidates:
        if node_id.split("::", 1)[0] in files:
            return node_id
    if candidates:
        return candidates[0]
    if "/" in name or "::" in name:
        return name
    tests = [file for file in files if _TEST_FILE.search(file)]
    if tests:
        return f"{tests[0]}::{name.replace('.', '::')}"
    return name
