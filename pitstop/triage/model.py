"""What triage says about a failure: its category, the action to take, and the evidence.

Categories and actions are plain strings on the wire (JSON, events, ``.state`` logs). The order of
:data:`PRECEDENCE` is the documented rule for a failure that shows several signals: the first
category in it that the failure shows is its root cause (see docs/triage.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Category(StrEnum):
    INFRASTRUCTURE = "infrastructure"
    """The machine or network, not the code: disk full, connection refused, runner lost."""
    DEPENDENCY_ERROR = "dependency_error"
    """Installing the dependencies failed: unresolvable requirement, conflict, build of a wheel."""
    CRASH = "crash"
    """The process died: segfault, abort, killed (out of memory), a crashed xdist worker."""
    TIMEOUT = "timeout"
    SYNTAX_ERROR = "syntax_error"
    IMPORT_ERROR = "import_error"
    FIXTURE_ERROR = "fixture_error"
    """Setup or teardown failed (a pytest fixture, ``setUpClass``, a before/after hook)."""
    COLLECTION_ERROR = "collection_error"
    """The tests could not be collected or built (module-level errors, compile failures)."""
    TYPE_ERROR = "type_error"
    ATTRIBUTE_ERROR = "attribute_error"
    """A name or attribute that does not exist (AttributeError, NameError, E0425 …)."""
    ASSERTION_ERROR = "assertion_error"
    KNOWN_FLAKY = "known_flaky"
    UNKNOWN = "unknown"


class Action(StrEnum):
    AUTO_FIX = "auto_fix"
    MANUAL_REVIEW = "manual_review"
    OPTIMIZE = "optimize"
    SKIP_AND_LOG = "skip_and_log"
    FIX_ENVIRONMENT = "fix_environment"
    RETRY = "retry"


PRECEDENCE: tuple[Category, ...] = (
    Category.INFRASTRUCTURE,
    Category.DEPENDENCY_ERROR,
    Category.CRASH,
    Category.TIMEOUT,
    Category.SYNTAX_ERROR,
    Category.IMPORT_ERROR,
    Category.FIXTURE_ERROR,
    Category.COLLECTION_ERROR,
    Category.TYPE_ERROR,
    Category.ATTRIBUTE_ERROR,
    Category.ASSERTION_ERROR,
    Category.UNKNOWN,
)
"""Root cause first: one failure showing several signals takes the earliest category here.
Groups are listed in this order too (known-flaky ones last), then by size."""

RANK: dict[Category, int] = {category: rank for rank, category in enumerate(PRECEDENCE)}
RANK[Category.KNOWN_FLAKY] = len(PRECEDENCE)

DEFAULT_ACTIONS: dict[Category, Action] = {
    Category.INFRASTRUCTURE: Action.RETRY,
    Category.DEPENDENCY_ERROR: Action.FIX_ENVIRONMENT,
    Category.CRASH: Action.MANUAL_REVIEW,
    Category.TIMEOUT: Action.OPTIMIZE,
    Category.SYNTAX_ERROR: Action.AUTO_FIX,
    Category.IMPORT_ERROR: Action.AUTO_FIX,
    Category.FIXTURE_ERROR: Action.MANUAL_REVIEW,
    Category.COLLECTION_ERROR: Action.MANUAL_REVIEW,
    Category.TYPE_ERROR: Action.AUTO_FIX,
    Category.ATTRIBUTE_ERROR: Action.AUTO_FIX,
    Category.ASSERTION_ERROR: Action.MANUAL_REVIEW,
    Category.KNOWN_FLAKY: Action.SKIP_AND_LOG,
    Category.UNKNOWN: Action.MANUAL_REVIEW,
}
"""A code error a machine may attempt is ``auto_fix``; any category whose evidence shows the
environment at fault (a missing third-party package, a missing system library, OOM) becomes
``fix_environment`` instead, whatever this table says."""


@dataclass(frozen=True)
class Location:
    file: str
    line: int | None = None

    def __str__(self) -> str:
        return self.file if self.line is None else f"{self.file}:{self.line}"


@dataclass
class TriageResult:
    """One failing test (or one failing step such as ``pip install``), classified."""

    category: Category
    action: Action
    auto_fixable: bool
    confidence: float
    fingerprint: str
    test_id: str | None = None
    evidence: list[str] = field(default_factory=list)
    """The line(s) the category was decided on, first the deciding one."""
    error: str = ""
    """The error as one line (``ModuleNotFoundError: No module named 'x'``)."""
    location: Location | None = None
    """Where the error is: the deepest frame in the project's own files, when shown."""
    environment: bool = False
    """True when the output shows the environment, not the code, at fault."""
    source: str = "text"
    """Which format it came from: pytest, unittest, junit, tap, node, cargo, log."""
    detected: Category | None = None
    """For ``known_flaky``: what the failure looked like otherwise."""
    signals: list[Category] = field(default_factory=list)
    """Every category the output showed, in precedence order."""
    file_name: str | None = None
    """The input file it came from."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "category": str(self.category),
            "action": str(self.action),
            "auto_fixable": self.auto_fixable,
            "confidence": round(self.confidence, 2),
            "fingerprint": self.fingerprint,
            "test_id": self.test_id,
            "error": self.error,
            "evidence": list(self.evidence),
            "file": self.location.file if self.location else None,
            "line": self.location.line if self.location else None,
            "environment": self.environment,
            "source": self.source,
            "detected": str(self.detected) if self.detected else None,
            "signals": [str(signal) for signal in self.signals],
            "input": self.file_name,
        }
