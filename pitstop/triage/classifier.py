"""``TestTriage``: from a failure's signals to a category, an action, evidence and a fingerprint.

The rules, in order (docs/triage.md has them with examples):

1. The signals of a failure are every line of its report that matched a pattern of
   :mod:`pitstop.triage.signals`, plus its one-line summary. Weak signals (wrappers such as
   ``ImportError while importing test module``, consequences such as ``could not compile``)
   count only when there is no strong one.
2. The root cause is the signal whose category comes first in
   :data:`~pitstop.triage.model.PRECEDENCE`: infrastructure, dependency, crash, timeout, syntax,
   import, fixture, collection, type, attribute, assertion. So a collection error caused by an
   import error is an import error, and an assertion printed after a timeout is a timeout.
3. No signal at all: a test whose runner says it *failed* (an expectation, not an exception)
   with some report is an assertion error (low confidence); otherwise unknown.
4. The environment is at fault when the evidence shows it: a missing module that is not one of
   the project's own (by the paths the output shows), a name imported from an installed
   package, a missing system library or package, out of memory, any infrastructure or
   dependency failure. Such failures get ``fix_environment`` (infrastructure: ``retry``).
5. A test on the known-flaky list, or flaky by its history, is ``known_flaky`` whatever it
   showed (what it showed is kept as ``detected``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from pitstop.triage.config import TriageConfig
from pitstop.triage.fingerprint import fingerprint
from pitstop.triage.model import (
    DEFAULT_ACTIONS,
    RANK,
    Action,
    Category,
    Location,
    TriageResult,
)
from pitstop.triage.parsed import EXCEPTION_LINE, InputFacts, ParsedInput, RawFailure
from pitstop.triage.signals import CONTEXT_MARKER, LIBRARY_PATH, Hit, clean_line, location_in, scan
from pitstop.triage.textscanner import parse_text

STRUCTURED = frozenset({"pytest", "unittest", "junit", "tap", "node", "cargo", "go", "jest"})
MAX_ERROR = 300
MAX_EVIDENCE = 3
MAX_WHOLE_TEXT_HITS = 2000

_NO_MODULE = re.compile(r"No module named '?([\w.]+)'?")
_CANNOT_IMPORT = re.compile(r"cannot import name '?\w+'? from '?[\w.]+'?(?: \(([^)]*)\))?")
_JS_MISSING = re.compile(r"Cannot find (?:module|package) '([^']+)'")
_SYSTEM_LIBRARY = re.compile(r"cannot open shared object file|Library not loaded|DLL load failed")
_ENV_IMPORT = re.compile(r"no required module provides package|cannot find package"
                         r"|cannot load such file|error\[E0463\]|can't find crate"
                         r"|use of undeclared crate|unresolved import `(?!crate::|self::|super::)")
_TAP_NAME = re.compile(r"^name: '(\w+)'$")
_LOCATION_PREFIX = re.compile(r"^[^\s:\"]+\.\w+:\d+: ")


def import_is_environment(text: str, facts: InputFacts) -> bool:
    """Whether an import error's line shows a missing third-party piece rather than code."""
    if _SYSTEM_LIBRARY.search(text):
        return True
    cannot = _CANNOT_IMPORT.search(text)
    if cannot:
        return bool(cannot.group(1)) and LIBRARY_PATH.search(cannot.group(1)) is not None
    missing = _NO_MODULE.search(text)
    if missing:
        name = missing.group(1)
        return not name.startswith(".") and name.split(".")[0] not in facts.project_names
    js = _JS_MISSING.search(text)
    if js:
        return not js.group(1).startswith((".", "/", "file:"))
    return _ENV_IMPORT.search(text) is not None


def _decisive(hits: list[Hit], category: Category) -> Hit:
    chosen = [hit for hit in hits if hit.category is category]
    for hit in chosen:
        if EXCEPTION_LINE.match(hit.text):
            return hit
    return chosen[0]


def _error_text(hit: Hit) -> str:
    return _LOCATION_PREFIX.sub("", hit.text, count=1)[:MAX_ERROR]


def _project_location(failure: RawFailure, facts: InputFacts) -> Location | None:
    for file, line in reversed(failure.locations):
        if not LIBRARY_PATH.search(file):
            return Location(facts.relative(file), line)
    if failure.locations:
        file, line = failure.locations[-1]
        return Location(facts.relative(file), line)
    return None


class TestTriage:
    """Classifies test failures (see the module for the rules).

    ``flaky``: tells whether a test id is flaky by its history (:class:`FlakyHistory`).
    """

    __test__ = False  # not a pytest test class, whatever its name says

    def __init__(self, config: TriageConfig | None = None, *,
                 flaky: Callable[[str], bool] | None = None) -> None:
        self.config = config or TriageConfig()
        self.flaky = flaky

    # --- the seed's API ------------------------------------------------------------------------
    def classify_failure(self, test_output: str, *, test_id: str | None = None) -> TriageResult:
        """Classify ``test_output``: one failure's report, or a whole run or log, in which
        case the most significant failure in it is returned (:meth:`triage_text` has all)."""
        results = self.triage_text(test_output)
        if results:
            result = results[0]
            if test_id is not None:
                result.test_id = test_id
            return result
        failure = RawFailure(test_id=test_id, source="text", context="global", outcome="error")
        for raw in test_output.splitlines():
            line = clean_line(raw)
            hit = scan(line) if line else None
            if hit is not None and len(failure.hits) < MAX_WHOLE_TEXT_HITS:
                failure.add_hit(hit)
            where = location_in(line) if line else None
            if where is not None:
                failure.add_location(where)
        failure.evidence_lines = len(failure.hits)
        return self.classify(failure, InputFacts())

    # --- many at once --------------------------------------------------------------------------
    def triage_text(self, text: str, name: str | None = None) -> list[TriageResult]:
        return self.triage_parsed(parse_text(text, name))

    def triage_parsed(self, parsed: ParsedInput) -> list[TriageResult]:
        results = [self.classify(failure, parsed.facts, file_name=parsed.name)
                   for failure in parsed.failures]
        order = {id(result): index for index, result in enumerate(results)}
        results.sort(key=lambda result: (RANK[result.category], order[id(result)]))
        return results

    def triage_file(self, path: Path, *, max_bytes: int | None = None) -> tuple[ParsedInput,
                                                                              list[TriageResult]]:
        from pitstop.triage.inputs import parse_file

        limit = max_bytes or int(self.config.max_input_mb * 1024 * 1024)
        parsed = parse_file(path, max_bytes=limit)
        return parsed, self.triage_parsed(parsed)

    # --- one failure -----------------------------------------------------------------------------
    def classify(self, failure: RawFailure, facts: InputFacts, *,
                 file_name: str | None = None) -> TriageResult:
        hits = list(failure.hits)
        if failure.summary is not None:
            hits.append(failure.summary)
        strong = [hit for hit in hits if not hit.weak]
        pool = strong or hits
        environment = False
        decisive: Hit | None = None
        if pool:
            category = min((hit.category for hit in pool), key=RANK.__getitem__)
            decisive = _decisive(pool, category)
            structured = failure.source in STRUCTURED
            confidence = (0.9 if structured else 0.75) if strong else 0.5
            if category is Category.IMPORT_ERROR:
                environment = import_is_environment(decisive.text, facts)
            else:
                environment = decisive.environment
        elif (failure.evidence_lines and failure.outcome == "failed"
              and failure.context == "test" and not failure.exception_seen):
            category, confidence = Category.ASSERTION_ERROR, 0.4
        else:
            category, confidence = Category.UNKNOWN, 0.2 if failure.evidence_lines else 0.1
        error = _error_text(decisive) if decisive is not None else ""
        evidence = [] if decisive is None else [decisive.text]
        if decisive is not None and CONTEXT_MARKER.match(decisive.text):
            inner = next((hit for hit in hits if not CONTEXT_MARKER.match(hit.text)), None)
            if inner is not None:
                error = _error_text(inner)
                evidence.insert(0, inner.text)
            elif failure.exception_text:
                error = failure.exception_text[:MAX_ERROR]
                evidence.insert(0, failure.exception_text)
        elif decisive is not None and failure.exception_text and (
                tap := _TAP_NAME.match(decisive.text)):
            error = f"{tap.group(1)}: {failure.exception_text}"[:MAX_ERROR]
            evidence.insert(0, failure.exception_text)
        elif decisive is None and failure.exception_text:
            error = failure.exception_text[:MAX_ERROR]
            evidence.append(failure.exception_text)
        detected: Category | None = None
        if self._is_flaky(failure.test_id):
            detected, category, confidence = category, Category.KNOWN_FLAKY, 0.95
        action = self._action(category, environment)
        for hit in pool:
            if len(evidence) >= MAX_EVIDENCE:
                break
            if hit.text not in evidence and (hit.category is not category or not evidence):
                evidence.append(hit.text)
        signals = sorted({hit.category for hit in hits}, key=RANK.__getitem__)
        key = (failure.test_id or "") if category is Category.KNOWN_FLAKY else error
        return TriageResult(
            category=category, action=action, auto_fixable=action is Action.AUTO_FIX,
            confidence=confidence, fingerprint=fingerprint(category, key or str(category)),
            test_id=failure.test_id, evidence=evidence, error=error,
            location=_project_location(failure, facts), environment=environment,
            source=failure.source, detected=detected, signals=signals, file_name=file_name)

    def _is_flaky(self, test_id: str | None) -> bool:
        if not test_id:
            return False
        if self.config.is_known_flaky(test_id):
            return True
        return self.flaky is not None and self.flaky(test_id)

    def _action(self, category: Category, environment: bool) -> Action:
        configured = self.config.actions.get(category)
        if configured is not None:
            return configured
        if environment and category is not Category.INFRASTRUCTURE:
            return Action.FIX_ENVIRONMENT
        return DEFAULT_ACTIONS[category]
