"""The lines of test-runner output and CI logs worth reading, turned into failing tests.

:class:`TextParser` reads the lines the :class:`~pitstop.triage.textscanner.TextScanner` hands
it, cleaned of colours, timestamps and group markers, and follows the structure of the runners
it knows: pytest (any ``-r``/``--tb``, ``-v``, ``-x``, xdist), unittest, node's test runner (TAP
and spec), cargo test, go test, jest. Signals outside any test's report are kept for
:mod:`pitstop.triage.globalsignals`, with the test that was running when the output shows one.
"""

from __future__ import annotations

import re

from pitstop.triage.globalsignals import (
    MAX_GLOBAL_HITS,
    GlobalHit,
    GlobalLocation,
    adopt_orphans,
    cluster_failures,
    fold_dying_banners,
)
from pitstop.triage.parsed import EXCEPTION_LINE, InputFacts, ParsedInput, RawFailure
from pitstop.triage.pytestsession import SummaryLine, pair_session
from pitstop.triage.signals import Hit, clean_line, location_in, scan

GAP = 8
"""Lines after the last interesting one that are still read closely."""
MAX_FAILURES = 100_000
MAX_PASSED = 500_000

_STRUCTURE = re.compile(
    r"(?P<session>^=+ test session starts =+$)"
    r"|^=+ (?P<section>.+?) =+$"
    r"|^_{3,} (?P<header>.+?) _{3,}$"
    r"|^rootdir: (?P<rootdir>\S+)"
    r"|^(?P<sum_out>FAILED|ERROR|PASSED|XPASS|XFAIL|SKIPPED) (?P<sum_id>\S+)(?: - (?P<sum_msg>.*))?$"
    r"|^(?:\[gw\d+\] \[\s*\d+%\] )(?P<xd_out>PASSED|FAILED|ERROR|XFAIL|XPASS|SKIPPED) (?P<xd_id>\S+)"
    r"|^(?P<vb_id>[^\s:]+\.py::\S+)"
    r"(?: (?P<vb_out>PASSED|FAILED|ERROR|XFAIL|XPASS|SKIPPED)\b| (?P<vb_rest>.*)|$)"
    r"|^(?P<pg_file>[^\s:]+\.py) [.FEsxX]+(?:\s+\[\s*\d+%\])?$"
    r"|^(?P<ut_kind>FAIL|ERROR): (?P<ut_name>\S+) \((?P<ut_id>[\w.]+)\)\s*$"
    r"|^(?P<uv_name>\w+) \((?P<uv_id>[\w.]+)\)(?: \.\.\. (?P<uv_out>ok|FAIL|ERROR|skipped.*|expected failure"
    r"|unexpected success)?)?\s*$"
    r"|(?P<ut_end>^Ran \d+ tests? in )"
    r"|^(?P<tap_ind>\s*)(?P<tap_ok>not ok|ok) \d+ - (?P<tap_name>.*?)(?: # (?:SKIP|TODO).*)?$"
    r"|(?P<tap_end>^\s*\.\.\.$|^1\.\.\d+$|^# (?:tests|pass|fail) \d+$|^TAP version)"
    r"|^(?P<sp_ind>\s*)\u2716 (?P<sp_name>.+?)(?: \([\d.]+m?s\))?$"
    r"|^\s*\u2714 (?P<sp_pass>.+?)(?: \([\d.]+m?s\))?$"
    r"|(?P<sp_end>^\u2139 )"
    r"|^---- (?P<cg_name>\S+) stdout ----$"
    r"|^test (?P<cg_test>\S+) \.\.\. (?P<cg_out>ok|FAILED|ignored)"
    r"|(?P<cg_end>^test result: |^failures:$)"
    r"|^\s*--- (?P<go_out>FAIL|PASS): (?P<go_name>\S+)"
    r"|(?P<go_end>^(?:FAIL|ok)\s+\S+\s)"
    r"|^\s*\u25cf (?P<jest_name>.+)$"
    r"|(?P<jest_end>^Test Suites: )")

_CRASHED_WHILE = re.compile(r"crashed while running '([^']+)'")
_COLLECTING = re.compile(r"^ERROR collecting (\S+)")
_SETUP = re.compile(r"^ERROR at (setup|teardown) of (.+)$")
_TB_LINE = re.compile(r"^([^\s:\"]+\.py):(\d+): (.+)$")
_SUBTESTS = re.compile(r"failureType: 'subtestsFailed'|\d+ subtests? failed")
_QUIET = object()
_PYTHON_BLOCKS = frozenset({"pytest", "unittest"})
_TAP_ERROR = re.compile(r"^\s*error: ['\"]?(.*?)['\"]?$")


class TextParser:
    """Reads cleaned lines (:meth:`feed`) and keeps what failed (:meth:`finish`)."""

    def __init__(self, name: str | None = None) -> None:
        self.result = ParsedInput(name=name, format="text")
        self.facts: InputFacts = self.result.facts
        self.session = 0
        self.section: str | None = None
        self.block: RawFailure | None = None
        self.last_interesting = -(10**9)
        self.lineno = 0
        self.running: str | None = None
        """The pytest/unittest test started and not finished yet (a crash is its)."""
        self.sources: set[str] = set()
        # per pytest session
        self.blocks: list[RawFailure] = []
        self.summary: list[SummaryLine] = []
        self.progress: dict[str, str] = {}
        # elsewhere
        self.others: list[RawFailure] = []
        self.global_hits: list[GlobalHit] = []
        self.global_locations: list[GlobalLocation] = []

    # --- the scanner's questions -----------------------------------------------------------------
    def wants_more(self, lineno: int) -> bool:
        return (self.section is not None or self.block is not None
                or lineno - self.last_interesting <= GAP)

    # --- lines ---------------------------------------------------------------------------------------
    def feed(self, lineno: int, raw: str) -> None:
        self.lineno = lineno
        line = clean_line(raw)
        if not line:
            return
        match = _STRUCTURE.match(line)
        if match is not None:
            handled = self._structure(lineno, line, match)
            if handled:
                if handled is not _QUIET:
                    self.last_interesting = lineno
                return
        self._content(lineno, line)

    def _content(self, lineno: int, line: str) -> None:
        block = self.block
        if (block is not None and line[:1] in (" ", ">") and block.source in _PYTHON_BLOCKS
                and (line[:1] == ">" or line.startswith("    "))):
            block.evidence_lines += 1  # quoted source in a Python traceback: never the error
            return
        hit = scan(line)
        where = location_in(line)
        if where is not None:
            self.facts.note_path(where[0])
        if block is None and self.section in ("failures", "errors"):
            block = self.block = RawFailure(  # --tb=line/no header: lines up to a path line
                test_id=None, source="pytest", outcome="error" if self.section == "errors"
                else "failed", session=self.session, first_line=lineno)
            self.blocks.append(block)
        if block is not None:
            block.evidence_lines += 1
            if hit is not None:
                block.add_hit(hit)
            elif EXCEPTION_LINE.match(line):
                block.exception_seen = True
                block.note_exception(line)
            elif block.source == "tap" and block.exception_text is None:
                message = _TAP_ERROR.match(line)
                if message and message.group(1) not in ("|-", "|", ">-"):
                    block.exception_text = message.group(1)
            if where is not None:
                block.add_location(where)
            crashed = _CRASHED_WHILE.search(line)
            if crashed:
                block.test_id = crashed.group(1)
            if block.source == "tap" and _SUBTESTS.search(line):
                block.context = "drop"
            if hit is not None or where is not None:
                self.last_interesting = lineno
            if (block.name is None and block.test_id is None and block.source == "pytest"
                    and _TB_LINE.match(line)):
                self._close_block()
            return
        if hit is not None and len(self.global_hits) < MAX_GLOBAL_HITS:
            self.global_hits.append((lineno, hit, self.running, self.session))
            self.last_interesting = lineno
        if where is not None and len(self.global_locations) < MAX_GLOBAL_HITS:
            self.global_locations.append((lineno, where, line))

    def _structure(self, lineno: int, line: str, m: re.Match[str]) -> object:
        """Handle a structure line: False when it turned out to be ordinary content,
        :data:`_QUIET` for a passing test (which does not keep the region open)."""
        kind = m.lastgroup
        groups = m.groupdict()
        if groups["session"]:
            self._end_session()
            self.session += 1
            self.sources.add("pytest")
            return True
        if groups["section"] is not None:
            return self._section(groups["section"])
        if groups["header"] is not None:
            if self.section not in ("failures", "errors"):
                return False
            self._open_pytest_block(groups["header"])
            return True
        if groups["rootdir"]:
            self.facts.rootdir = groups["rootdir"]
            return True
        if groups["sum_out"] and self.section == "summary":
            self._summary(groups["sum_out"], groups["sum_id"], groups["sum_msg"])
            return True
        if groups["sum_out"] == "PASSED":
            return _QUIET
        if groups["xd_out"]:
            self._progress(groups["xd_id"], groups["xd_out"])
            return _QUIET if groups["xd_out"] == "PASSED" else True
        if groups["vb_id"]:
            return self._verbose(lineno, line, groups)
        if groups["pg_file"]:
            self.facts.test_files.add(groups["pg_file"])
            self.sources.add("pytest")
            return True
        if groups["ut_kind"]:
            self._open_unittest(groups["ut_kind"], groups["ut_name"], groups["ut_id"])
            return True
        if groups["uv_name"]:
            return self._unittest_verbose(lineno, groups)
        if kind == "ut_end":
            self._close_block()
            self.section = None
            self.running = None
            return True
        if groups["tap_ok"]:
            self._close_block()
            if groups["tap_ok"] == "ok":
                self._passed(groups["tap_name"])
            else:
                self._open("tap", groups["tap_name"], section="tap")
            return True
        if kind == "tap_end":
            self._close_block()
            if not line.strip().startswith("..."):
                self.section = None
            return True
        if groups["sp_name"] is not None:
            self._close_block()
            name = groups["sp_name"]
            if name == "failing tests:":
                return True
            self._open("node", name, section="spec")
            return True
        if groups["sp_pass"] is not None:
            self._close_block()
            self._passed(groups["sp_pass"])
            return True
        if kind == "sp_end":
            self._close_block()
            self.section = None
            return True
        if groups["cg_name"]:
            self._close_block()
            self._open("cargo", groups["cg_name"], section="cargo")
            return True
        if groups["cg_test"]:
            if groups["cg_out"] == "ok":
                self._passed(groups["cg_test"])
            return True
        if kind == "cg_end":
            self._close_block()
            self.section = None
            return True
        if groups["go_out"]:
            self._close_block()
            if groups["go_out"] == "PASS":
                self._passed(groups["go_name"])
            else:
                self._open("go", groups["go_name"], section="go")
            return True
        if kind == "go_end":
            self._close_block()
            self.section = None
            return True
        if groups["jest_name"]:
            self._close_block()
            name = groups["jest_name"].strip()
            self._open("jest", name, section="jest",
                       context="collection" if name == "Test suite failed to run" else "test")
            return True
        if kind == "jest_end":
            self._close_block()
            self.section = None
            return True
        return False

    # --- pytest ----------------------------------------------------------------------------------
    def _section(self, title: str) -> bool:
        self._close_block()
        upper = title.strip().upper()
        self.sources.add("pytest")
        if upper == "FAILURES":
            self.section = "failures"
        elif upper == "ERRORS":
            self.section = "errors"
        elif upper == "SHORT TEST SUMMARY INFO":
            self.section = "summary"
        else:
            self.section = None
            if " in " in title and any(word in title for word in ("failed", "passed", "error")):
                self._end_session()
        return True

    def _open_pytest_block(self, header: str) -> None:
        self._close_block()
        context, name, test_id = "test", header, None
        name_or_none: str | None = name
        collecting = _COLLECTING.match(header)
        setup = _SETUP.match(header)
        if collecting:
            context, name_or_none, test_id = "collection", None, collecting.group(1)
        elif setup:
            context, name_or_none = setup.group(1), setup.group(2)
        outcome = "error" if self.section == "errors" else "failed"
        block = RawFailure(test_id=test_id, source="pytest", context=context, outcome=outcome,
                           name=name_or_none, session=self.session, first_line=self.lineno)
        if context != "test":
            block.add_hit(scan(f"ERROR {'collecting' if collecting else 'at ' + context + ' of'}")
                          or _never())
        self.block = block
        self.blocks.append(block)

    def _summary(self, outcome: str, node_id: str, message: str | None) -> None:
        if outcome == "PASSED":
            self._passed(node_id)
            return
        if outcome not in ("FAILED", "ERROR"):
            return
        hit = scan(message) if message else None
        self.summary.append((outcome, node_id, hit))

    def _progress(self, node_id: str, outcome: str) -> None:
        self.sources.add("pytest")
        if outcome == "PASSED":
            self._passed(node_id)
        elif outcome in ("FAILED", "ERROR"):
            self.progress.setdefault(node_id, outcome)
        if self.running == node_id:
            self.running = None

    def _verbose(self, lineno: int, line: str, groups: dict[str, str | None]) -> object:
        node_id = groups["vb_id"] or ""
        self.facts.test_files.add(node_id.split("::", 1)[0])
        if groups["vb_out"]:
            self._progress(node_id, groups["vb_out"])
            return _QUIET if groups["vb_out"] == "PASSED" else True
        self.running = node_id
        rest = groups["vb_rest"]
        if rest:
            self._content(lineno, rest)
        return True

    # --- unittest --------------------------------------------------------------------------------
    def _open_unittest(self, kind: str, name: str, ident: str) -> None:
        self._close_block()
        self.sources.add("unittest")
        context = "test"
        if ident.startswith("unittest.loader._FailedTest"):
            test_id, context = name, "collection"
        elif name in ("setUpClass", "tearDownClass", "setUpModule", "tearDownModule"):
            test_id, context = ident, "setup" if name.startswith("setUp") else "teardown"
        else:
            test_id = ident if ident.endswith("." + name) else f"{ident}.{name}"
        block = RawFailure(test_id=test_id, source="unittest", context=context,
                           outcome="failed" if kind == "FAIL" else "error", first_line=self.lineno)
        if context == "collection":
            block.add_hit(scan("_FailedTest") or _never())
        elif context != "test":
            block.add_hit(scan(f"ERROR: {name} ") or _never())
        self.block = block
        self.section = "unittest"

    def _unittest_verbose(self, lineno: int, groups: dict[str, str | None]) -> bool:
        name, ident, outcome = groups["uv_name"] or "", groups["uv_id"] or "", groups["uv_out"]
        test_id = ident if ident.endswith("." + name) else f"{ident}.{name}"
        if self.block is not None:
            return False
        if outcome is None:
            self.running = test_id
        elif outcome == "ok":
            self._passed(test_id)
            self.running = None
        else:
            self.running = None
        return True

    # --- generic blocks ----------------------------------------------------------------------------
    def _open(self, source: str, test_id: str, *, section: str, context: str = "test") -> None:
        self._close_block()
        self.sources.add(source)
        self.block = RawFailure(test_id=test_id.strip(), source=source, context=context,
                                session=self.session, first_line=self.lineno)
        if context == "collection":
            self.block.add_hit(scan("Test suite failed to run") or _never())
        self.section = section

    def _close_block(self) -> None:
        block = self.block
        if block is None:
            return
        self.block = None
        if block.source != "pytest" and block.context != "drop":
            self._keep(block)

    def _keep(self, failure: RawFailure) -> None:
        if len(self.others) < MAX_FAILURES:
            self.others.append(failure)
        else:
            self.result.truncated = True

    def note_pass(self, test_id: str) -> None:
        """A passing test seen by the scanner's fast path (verbose pytest, xdist)."""
        self._passed(test_id)
        if self.running == test_id:
            self.running = None

    def _passed(self, test_id: str) -> None:
        if len(self.result.passed) < MAX_PASSED:
            self.result.passed.append(test_id.strip())
        else:
            self.result.truncated = True

    # --- assembly ----------------------------------------------------------------------------------
    def _end_session(self) -> None:
        """Pair the pytest session's blocks with its summary and progress lines."""
        self._close_block()
        self.section = None
        blocks, summary, progress = self.blocks, self.summary, self.progress
        self.blocks, self.summary, self.progress = [], [], {}
        for failure in pair_session(blocks, summary, progress, self.facts, self.session):
            self._keep(failure)

    def finish(self) -> ParsedInput:
        self._close_block()
        self._end_session()
        for failure in cluster_failures(self.global_hits, self.global_locations, self.facts,
                                        fallback=not self.others):
            self._keep(failure)
        self.others = adopt_orphans(self.others)
        merged: dict[tuple[int, str], RawFailure] = {}
        by_id: dict[str, RawFailure] = {}
        failures: list[RawFailure] = []
        # Reports first, then what was printed outside them (a crash may precede the header).
        ordered = sorted(self.others, key=lambda failure: failure.context == "global")
        for failure in ordered:
            if failure.test_id:
                key = (failure.session, failure.test_id)
                existing = merged.get(key)
                if existing is None and failure.context == "global":
                    existing = by_id.get(failure.test_id)
                if existing is not None:
                    existing.merge(failure)
                    continue
                merged[key] = failure
                by_id.setdefault(failure.test_id, failure)
            failures.append(failure)
        failures = fold_dying_banners(failures)
        failures.sort(key=lambda failure: failure.first_line)
        result = self.result
        result.failures = failures
        result.format = "+".join(sorted(self.sources)) or "text"
        return result


def _never() -> Hit:
    raise AssertionError("a built-in marker did not match its own signal")
