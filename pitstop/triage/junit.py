"""JUnit/xUnit XML, streamed: defusedxml parses it (no entities, no external references, so an
XML bomb is refused), junitparser reads each test case, and each case is dropped once read, so
memory stays bounded by one case however many there are."""

from __future__ import annotations

from typing import IO, Any

import defusedxml.ElementTree as SafeET
import junitparser
from defusedxml import DefusedXmlException

from pitstop.kernel.errors import TriageInputError
from pitstop.triage.parsed import EXCEPTION_LINE, ParsedInput, RawFailure
from pitstop.triage.signals import KEYWORDS, clean_line, location_in, scan

MAX_CASE_TEXT = 256 * 1024
"""Characters of one case's report that are read (its head and its tail)."""
MAX_FAILURES = 100_000
MAX_PASSED = 500_000
_DROP_EVERY = 500

_SETUP_PREFIXES = {"failed on setup with": "setup", "failed on teardown with": "teardown",
                   "collection failure": "collection"}


def _case_id(case: junitparser.TestCase) -> str:
    name = case.name or ""
    classname = case.classname or ""
    return f"{classname}.{name}" if classname else name


def _bounded(text: str) -> str:
    if len(text) <= MAX_CASE_TEXT:
        return text
    half = MAX_CASE_TEXT // 2
    return text[:half] + "\n" + text[-half:]


def _failure(case: junitparser.TestCase, result: junitparser.Failure | junitparser.Error,
             parsed: ParsedInput) -> RawFailure:
    outcome = "failed" if isinstance(result, junitparser.Failure) else "error"
    message = (result.message or "").strip()
    context = "test"
    for prefix, kind in _SETUP_PREFIXES.items():
        if message.startswith(prefix):
            context = kind
    failure = RawFailure(test_id=_case_id(case), source="junit", context=context, outcome=outcome)
    kind = (result.type or "").strip()
    body = _bounded(result.text or "")
    lines = [message.splitlines()[0] if message else "", kind, *body.splitlines()]
    if context != "test":
        marker = scan(message.split(" with ", 1)[0] if context != "collection" else message)
        if marker is not None:
            failure.add_hit(marker)
    file = case._elem.get("file")
    line_attr = case._elem.get("line")
    if file:
        failure.add_location((file, int(line_attr) if line_attr and line_attr.isdigit() else 0))
        parsed.facts.note_path(file)
    for raw in lines:
        line = clean_line(raw)
        if not line:
            continue
        failure.evidence_lines += 1
        where = location_in(line)
        if where is not None:
            failure.add_location(where)
            parsed.facts.note_path(where[0])
        if KEYWORDS.search(line) is None and not line.startswith(("E ", "assert", "Expected")):
            continue
        hit = scan(line)
        if hit is not None:
            failure.add_hit(hit)
        elif EXCEPTION_LINE.match(line):
            failure.exception_seen = True
            failure.note_exception(line)
    if kind and not any(hit.text == kind for hit in failure.hits) and "." in kind and \
            kind.rsplit(".", 1)[1] not in ("AssertionError", "AssertionFailedError"):
        failure.exception_seen = True
    return failure


def parse_junit(stream: IO[bytes], name: str | None = None) -> ParsedInput:
    """Failures and passes of every ``<testcase>`` in a JUnit/xUnit report."""
    parsed = ParsedInput(name=name, format="junit")
    stack: list[Any] = []
    seen = 0
    try:
        for event, elem in SafeET.iterparse(stream, events=("start", "end"),
                                            forbid_dtd=False, forbid_entities=True,
                                            forbid_external=True):
            if event == "start":
                stack.append(elem)
                continue
            stack.pop()
            if elem.tag != "testcase":
                continue
            seen += 1
            case = junitparser.TestCase.fromelem(elem)  # type: ignore[no-untyped-call]
            outcomes = [result for result in case.result
                        if isinstance(result, (junitparser.Failure, junitparser.Error))]
            if outcomes:
                if len(parsed.failures) < MAX_FAILURES:
                    parsed.failures.append(_failure(case, outcomes[0], parsed))
                else:
                    parsed.truncated = True
            elif not case.is_skipped:
                if len(parsed.passed) < MAX_PASSED:
                    parsed.passed.append(_case_id(case))
                else:
                    parsed.truncated = True
            elem.clear()
            if seen % _DROP_EVERY == 0 and stack:
                parent = stack[-1]
                del parent[:]
    except DefusedXmlException as exc:
        raise TriageInputError(f"{name or 'input'}: refused: the XML declares entities or external "
                               f"references ({type(exc).__name__}), as an XML bomb does") from None
    except SafeET.ParseError as exc:
        raise TriageInputError(f"{name or 'input'}: not well-formed XML ({exc})") from None
    if seen == 0 and not parsed.failures:
        parsed.format = "xml"
    return parsed
