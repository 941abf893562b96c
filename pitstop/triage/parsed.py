"""What the parsers hand the classifier: failures as found, before any judgement."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pitstop.triage.signals import LIBRARY_PATH, Hit

MAX_HITS = 64
"""Signal lines kept per failure (the first ones: a root cause is printed before its echoes)."""
MAX_LOCATIONS = 32


@dataclass
class RawFailure:
    """One failing test, or one failing step outside any test (``context == "global"``)."""

    test_id: str | None
    source: str
    context: str = "test"
    """test, setup, teardown, collection or global."""
    outcome: str = "failed"
    """failed (the test's expectation) or error (anything else)."""
    hits: list[Hit] = field(default_factory=list)
    locations: list[tuple[str, int]] = field(default_factory=list)
    summary: Hit | None = None
    """The one-line summary a runner printed for it, when that line carried a signal."""
    evidence_lines: int = 0
    """How many lines of its report were read (0: only its name is known)."""
    exception_seen: bool = False
    """A line looked like an exception (``SomethingError:``) even if no category matched."""
    exception_text: str | None = None
    """The first such line (or a runner's error message), for the error when no signal
    names it (a fixture raising ``RuntimeError``)."""
    name: str | None = None
    """The runner's short name for it (pytest's block title), for matching to a test id."""
    session: int = 0
    first_line: int = 0

    def add_hit(self, hit: Hit) -> None:
        if len(self.hits) < MAX_HITS:
            self.hits.append(hit)

    def add_location(self, where: tuple[str, int]) -> None:
        if len(self.locations) >= MAX_LOCATIONS:
            del self.locations[1]  # keep the first (the test) and the deepest ones
        self.locations.append(where)

    def note_exception(self, line: str) -> None:
        if self.exception_text is None:
            self.exception_text = _E_PREFIX.sub("", line, count=1).strip()[:300]

    def merge(self, other: RawFailure) -> None:
        for hit in other.hits:
            self.add_hit(hit)
        for where in other.locations:
            self.add_location(where)
        self.evidence_lines += other.evidence_lines
        self.exception_seen = self.exception_seen or other.exception_seen
        self.exception_text = self.exception_text or other.exception_text
        if self.summary is None:
            self.summary = other.summary


_E_PREFIX = re.compile(r"^E\s+")
_SEPARATORS = re.compile(r"[\\/]")
EXCEPTION_LINE = re.compile(r"^(?:E\s+)?[\w.]*(?:Error|Exception|Exit|Interrupt)\b:?")


@dataclass
class InputFacts:
    """What one input says about its project, for telling code from environment."""

    rootdir: str | None = None
    project_names: set[str] = field(default_factory=set)
    test_files: set[str] = field(default_factory=set)

    def note_path(self, path: str) -> None:
        if LIBRARY_PATH.search(path) or len(self.project_names) > 5000:
            return
        rel = self.relative(path)
        parts = [part for part in _SEPARATORS.split(rel) if part and part not in (".", "..")]
        for part in parts:
            self.project_names.add(part.removesuffix(".py"))

    def relative(self, path: str) -> str:
        """``path`` relative to the run's root directory when it lies under it."""
        path = path.removeprefix("file://")
        if self.rootdir and path.startswith(self.rootdir.rstrip("/") + "/"):
            return path[len(self.rootdir.rstrip("/")) + 1:]
        if path.startswith("/"):
            for known in self.test_files:
                if path.endswith("/" + known):
                    return known
        return path


@dataclass
class ParsedInput:
    """Everything one input (a file, a text) yielded."""

    name: str | None
    format: str
    failures: list[RawFailure] = field(default_factory=list)
    passed: list[str] = field(default_factory=list)
    """Test ids seen passing (for flaky history); capped."""
    facts: InputFacts = field(default_factory=InputFacts)
    bytes_read: int = 0
    truncated: bool = False
    """True when a cap stopped the parser from keeping everything."""
