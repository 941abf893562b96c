"""One triage of a batch of inputs, as the CLI, the ``triage`` task and the step all run it:
parse, record history, classify, group, log every result, publish the events."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitstop.kernel.constants import (
    EVENT_TRIAGE_AUTO_FIXABLE,
    EVENT_TRIAGE_COMPLETED,
    TRIAGE_MAX_EVENT_TESTS,
)
from pitstop.kernel.errors import PathNotAllowed
from pitstop.kernel.ids import new_id
from pitstop.triage.batch import BatchReport, InputSummary, group_results
from pitstop.triage.classifier import TestTriage
from pitstop.triage.config import TriageConfig, canonical_test_id
from pitstop.triage.flaky import FAILED, PASSED, FlakyHistory
from pitstop.triage.inputs import parse_bytes, parse_file
from pitstop.triage.parsed import ParsedInput

if TYPE_CHECKING:
    import redis

    from pitstop.bus.eventbus import EventBus
    from pitstop.kernel.redaction import Redactor
    from pitstop.kernel.settings import Settings
    from pitstop.kernel.statelog import StateLog


def outcomes(parsed: Iterable[ParsedInput]) -> list[tuple[str, str]]:
    """``(test_id, "p"|"f")`` for every test an input names (failures outside tests excluded)."""
    found: list[tuple[str, str]] = []
    for item in parsed:
        found.extend((test_id, PASSED) for test_id in item.passed)
        found.extend((failure.test_id, FAILED) for failure in item.failures
                     if failure.test_id and failure.context != "global")
    return found


def resolve_input(path: str, *, project_dir: Path, roots: Iterable[Path],
                  refused: Iterable[Path] = ()) -> Path:
    """``path`` (relative ones are the project's), symlinks resolved, inside one of ``roots``
    or the project directory but under none of ``refused`` (the step passes the state
    directory: its secret key and Redis passwords are never test output); else
    :class:`PathNotAllowed`."""
    candidate = Path(path)
    if not candidate.is_absolute():
        candidate = project_dir / candidate
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        raise PathNotAllowed(f"{path}: no such file") from None
    for place in refused:
        try:
            base = (place if place.is_absolute() else project_dir / place).resolve()
        except (OSError, RuntimeError):
            continue
        if resolved == base or base in resolved.parents:
            raise PathNotAllowed(f"{path} is inside {base}, which holds pitstop's state and "
                                 "secrets, never test output")
    allowed = [project_dir, *roots]
    for root in allowed:
        try:
            base = (root if root.is_absolute() else project_dir / root).resolve()
        except (OSError, RuntimeError):
            continue
        if resolved == base or base in resolved.parents:
            return resolved
    raise PathNotAllowed(f"{path} resolves outside the project and the allowed roots "
                         f"({', '.join(str(root) for root in allowed)})")


@dataclass
class BatchOutcome:
    report: BatchReport
    batch_id: str
    commit: str | None
    newly_flaky: list[str]
    events: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "commit": self.commit, **self.report.to_dict(),
                "flaky": self.newly_flaky, "events": self.events}


class TriageService:
    """Triage as a service: ``history``/``bus``/``log`` are optional (the CLI without
    ``--record`` needs no Redis)."""

    def __init__(self, config: TriageConfig, *, clock: Callable[[], datetime],
                 log: StateLog | None = None, bus: EventBus | None = None,
                 history: FlakyHistory | None = None, redactor: Redactor | None = None) -> None:
        self.config = config
        self.clock = clock
        self.log = log
        self.bus = bus
        self.history = history
        self.redactor = redactor

    @property
    def max_bytes(self) -> int:
        return int(self.config.max_input_mb * 1024 * 1024)

    def parse_paths(self, paths: Iterable[Path]) -> list[ParsedInput]:
        return [parse_file(path, max_bytes=self.max_bytes) for path in paths]

    def parse_contents(self, contents: Iterable[tuple[str, bytes]]) -> list[ParsedInput]:
        return [parse_bytes(data, name, max_bytes=self.max_bytes) for name, data in contents]

    def triage(self, parsed: list[ParsedInput], *, commit: str | None = None,
               record: bool = False) -> BatchOutcome:
        newly_flaky: list[str] = []
        flaky_ids: set[str] = set()
        if self.history is not None:
            if record and commit:
                newly_flaky = [stats.test_id for stats in
                               self.history.record(commit, outcomes(parsed), now=self.clock())]
            flaky_ids = self.history.flaky_ids()
        triage = TestTriage(self.config,
                            flaky=(lambda test_id: canonical_test_id(test_id) in flaky_ids)
                            if flaky_ids else None)
        results = []
        inputs = []
        for item in parsed:
            found = triage.triage_parsed(item)
            results.extend(found)
            inputs.append(InputSummary(name=os.path.basename(item.name or "input"),
                                       format=item.format, failures=len(found),
                                       passed=len(item.passed), bytes=item.bytes_read,
                                       truncated=item.truncated))
        report = group_results(results, inputs)
        batch_id = new_id()
        self._log(report, batch_id, commit)
        events = self._publish(report, batch_id, commit) if record and self.bus else []
        return BatchOutcome(report=report, batch_id=batch_id, commit=commit,
                            newly_flaky=newly_flaky, events=events)

    def _log(self, report: BatchReport, batch_id: str, commit: str | None) -> None:
        if self.log is None:
            return
        for group in report.groups:
            for result in group.results:
                self.log.append({"kind": "result", "batch_id": batch_id, "commit": commit,
                                 **result.to_dict()})
        self.log.append({"kind": "batch", "batch_id": batch_id, "commit": commit,
                         "summary": report.summary(),
                         "inputs": [item.to_dict() for item in report.inputs]})

    def _publish(self, report: BatchReport, batch_id: str, commit: str | None) -> list[str]:
        if self.bus is None:
            return []
        published = []
        for group in report.groups:
            if not group.auto_fixable:
                continue
            tests = group.tests
            data: dict[str, Any] = {
                "batch_id": batch_id, "commit": commit, "fingerprint": group.fingerprint,
                "category": str(group.category), "action": str(group.action),
                "count": group.count, "test_id": tests[0] if tests else None,
                "tests": tests[:TRIAGE_MAX_EVENT_TESTS],
                "file": group.location.file if group.location else None,
                "line": group.location.line if group.location else None,
                "error": group.error, "evidence": group.evidence,
                "inputs": sorted({r.file_name for r in group.results if r.file_name}),
            }
            event = self.bus.publish(EVENT_TRIAGE_AUTO_FIXABLE, self._redact(data),
                                     source="triage")
            published.append(event.id)
        summary = report.summary()
        completed = self.bus.publish(EVENT_TRIAGE_COMPLETED, self._redact(
            {"batch_id": batch_id, "commit": commit, "summary": summary,
             "inputs": [item.to_dict() for item in report.inputs]}), source="triage")
        published.append(completed.id)
        return published

    def _redact(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.redactor is None:
            return data
        redacted: dict[str, Any] = self.redactor.redact(data)
        return redacted


def configured_service(settings: Settings, config: TriageConfig, *, clock: Callable[[], datetime],
                       redactor: Redactor, client: redis.Redis | None = None,
                       bus: EventBus | None = None) -> TriageService:
    """The service with this project's ``test_triage`` log and, given a Redis client, the
    flaky history (and, given a bus, the events)."""
    from pitstop.kernel.constants import LOG_TEST_TRIAGE
    from pitstop.kernel.statelog import StateLog

    history = (FlakyHistory(client, window=config.flaky.window, ttl_days=config.flaky.ttl_days)
               if client is not None else None)
    return TriageService(config, clock=clock,
                         log=StateLog(LOG_TEST_TRIAGE, settings.state_dir, redactor=redactor),
                         bus=bus, history=history, redactor=redactor)
