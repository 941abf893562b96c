"""Signals printed outside any test's report (pip, a segfault, a timeout dump, a compiler).

Signals close together become one failure of their own (``context == "global"``), attributed
to the test that was running when the output shows one, or whose frame a fault dump names. A
test reported with nothing but its name adopts the signals printed just before it, and banners
that only say a process died join the test that crashed or timed out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pitstop.triage.model import Category
from pitstop.triage.parsed import InputFacts, RawFailure
from pitstop.triage.signals import Hit

CLUSTER_GAP = 25
"""Signals outside tests this many lines apart are one failure (pip prints three lines)."""
MAX_GLOBAL_HITS = 20_000

GlobalHit = tuple[int, Hit, str | None, int]
"""A signal outside any report: line number, signal, test running then, pytest session."""
GlobalLocation = tuple[int, tuple[str, int], str | None]
"""A source location outside any report: line number, location, the line it was on."""

_FAULT_FRAME = re.compile(r"File \"([^\"]+)\", line \d+ in (test\w*)")
_DYING = frozenset({Category.CRASH, Category.TIMEOUT})


@dataclass
class _Cluster:
    hits: list[tuple[int, Hit]] = field(default_factory=list)
    locations: list[tuple[str, int]] = field(default_factory=list)
    test_id: str | None = None
    session: int = 0


def cluster_failures(hits: list[GlobalHit], locations: list[GlobalLocation], facts: InputFacts,
                     *, fallback: bool) -> list[RawFailure]:
    """The failures the signals outside any report make, in order. ``fallback`` (the input
    had nothing structured): any strong signal is a failure, not only one that starts one."""
    clusters: list[_Cluster] = []
    last_line = -(10**9)
    for lineno, hit, running, session in hits:
        if (not clusters or lineno - last_line > CLUSTER_GAP or clusters[-1].session != session
                or (running and clusters[-1].test_id and running != clusters[-1].test_id)):
            clusters.append(_Cluster(session=session))
        cluster = clusters[-1]
        cluster.hits.append((lineno, hit))
        cluster.test_id = cluster.test_id or running
        last_line = lineno
    remaining = iter(locations)
    pending = next(remaining, None)
    for cluster in clusters:
        first, end = cluster.hits[0][0] - CLUSTER_GAP, cluster.hits[-1][0] + CLUSTER_GAP
        while pending is not None and pending[0] < first:
            pending = next(remaining, None)
        while pending is not None and pending[0] <= end:
            cluster.locations.append(pending[1])
            frame = _FAULT_FRAME.search(pending[2] or "")
            if frame and cluster.test_id is None:
                path = facts.relative(frame.group(1))
                if path.startswith("/"):
                    path = _test_relative(path)
                cluster.test_id = f"{path}::{frame.group(2)}"
            pending = next(remaining, None)
    failures: list[RawFailure] = []
    for cluster in clusters:
        if not any(hit.starts_failure or (fallback and not hit.weak) for _, hit in cluster.hits):
            continue
        failure = RawFailure(test_id=cluster.test_id, source="log", context="global",
                             outcome="error", session=cluster.session,
                             evidence_lines=len(cluster.hits), first_line=cluster.hits[0][0])
        for _, hit in cluster.hits:
            failure.add_hit(hit)
        for where in cluster.locations:
            failure.add_location(where)
        failures.append(failure)
    return failures


def adopt_orphans(failures: list[RawFailure]) -> list[RawFailure]:
    """A test reported failed with nothing but its name (node's "test failed" for a file
    that did not load) takes the signals printed just before it outside any test."""
    orphans = [failure for failure in failures
               if failure.context == "global" and failure.test_id is None]
    if not orphans:
        return failures
    for failure in failures:
        if failure.hits or failure.context == "global" or failure.source in ("pytest", "log"):
            continue
        for orphan in orphans:
            if (orphan.session == failure.session
                    and 0 <= failure.first_line - orphan.first_line <= 4 * CLUSTER_GAP):
                failure.merge(orphan)
                orphan.context = "adopted"
                break
    return [failure for failure in failures if failure.context != "adopted"]


def fold_dying_banners(failures: list[RawFailure]) -> list[RawFailure]:
    """Lines a runner prints about a process that died ("node down", a second timeout banner)
    belong to the test that crashed or timed out, when the input names one."""
    named = [failure for failure in failures if failure.test_id
             and any(hit.category in _DYING for hit in failure.hits)]
    if not named:
        return failures
    kept = []
    for failure in failures:
        if (failure.test_id is None and failure.context == "global" and failure.hits
                and all(hit.category in _DYING or hit.weak for hit in failure.hits)):
            target = next((other for other in named if other.session == failure.session),
                          named[0])
            target.merge(failure)
            continue
        kept.append(failure)
    return kept


def _test_relative(path: str) -> str:
    """An absolute test path shortened at its ``tests``/``test`` directory (no rootdir known)."""
    parts = path.split("/")
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] in ("tests", "test", "testing"):
            return "/".join(parts[index:])
    return path
