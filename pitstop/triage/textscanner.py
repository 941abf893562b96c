"""Raw test-runner output and whole CI logs, fed to the parser in chunks.

The text arrives in chunks (so a 50 MB log never sits in memory twice). :class:`TextScanner`
skips, at regex-engine speed, everything that is not within a few lines of a keyword
(:data:`~pitstop.triage.signals.KEYWORDS`), and hands the rest to a
:class:`~pitstop.triage.textparser.TextParser` line by line.
"""

from __future__ import annotations

import re

from pitstop.triage.parsed import ParsedInput
from pitstop.triage.signals import KEYWORDS
from pitstop.triage.textparser import GAP, TextParser

KEYWORD_TAIL = 3
"""Lines after a keyword read closely even when the keyword's own line showed nothing."""
LOOKBACK = 6
"""Lines before a keyword that are read too (a compiler error before ``FAIL [build failed]``)."""

_PASS_WORDS = ("PASSED", "ok", "PASS")
_FAST_PASS = re.compile(r"([^\s:\x1b]+\.py::[^\s\x1b]+) (?:\x1b\[[\d;]*m)*PASSED"
                        r"|PASSED(?:\x1b\[[\d;]*m)* ([^\s:\x1b]+\.py::[^\s\x1b]+)")


class TextScanner:
    """Feeds a :class:`~pitstop.triage.textparser.TextParser` the lines worth reading, chunk by
    chunk."""

    def __init__(self, parser: TextParser) -> None:
        self.parser = parser
        self.lineno = 0
        self.carry = ""

    def feed(self, text: str) -> None:
        """Add text (any split); lines are read once they are complete."""
        if self.carry:
            text = self.carry + text
        cut = text.rfind("\n")
        if cut < 0:
            self.carry = text
            if len(self.carry) > 1_000_000:  # a single giant line: read what we have
                self._scan(self.carry + "\n")
                self.carry = ""
            return
        self.carry = text[cut + 1:]
        self._scan(text[:cut + 1])

    def close(self) -> ParsedInput:
        if self.carry:
            self._scan(self.carry + "\n")
            self.carry = ""
        return self.parser.finish()

    def _scan(self, chunk: str) -> None:
        parser = self.parser
        pos, size, lineno = 0, len(chunk), self.lineno
        search = KEYWORDS.search
        while pos < size:
            if parser.wants_more(lineno):
                end = chunk.find("\n", pos)
                if end < 0:
                    end = size
                parser.feed(lineno, chunk[pos:end])
                lineno += 1
                pos = end + 1
                continue
            match = search(chunk, pos)
            if match is None:
                lineno += chunk.count("\n", pos)
                break
            start = chunk.rfind("\n", pos, match.start()) + 1
            word = match.group()
            if word == "PASSED":  # a passing test in a verbose log: note it, read nothing more
                end = chunk.find("\n", match.end())
                end = size if end < 0 else end
                passed = _FAST_PASS.search(chunk, start, end)
                if passed is not None and parser.block is None:
                    parser.note_pass(passed.group(1) or passed.group(2))
                    lineno += chunk.count("\n", pos, end) + 1
                    pos = end + 1
                    continue
            if word not in _PASS_WORDS:
                for _ in range(LOOKBACK):
                    if start <= pos:
                        break
                    start = chunk.rfind("\n", pos, start - 1) + 1
            start = max(start, pos)
            lineno += chunk.count("\n", pos, start)
            end = chunk.find("\n", start)
            end = size if end < 0 else end
            parser.feed(lineno, chunk[start:end])
            if word not in _PASS_WORDS:  # the next few lines may say what the keyword was about
                parser.last_interesting = max(parser.last_interesting, lineno - GAP + KEYWORD_TAIL)
            lineno += 1
            pos = end + 1
        self.lineno = lineno


def parse_text(text: str, name: str | None = None) -> ParsedInput:
    """Parse a whole text at once (tests, the seed API); files go through the scanner in chunks."""
    scanner = TextScanner(TextParser(name))
    scanner.feed(text)
    return scanner.close()
