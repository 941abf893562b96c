"""The signals triage looks for, as regular expressions, and the cheap pass that finds where to look.

Two tiers keep a 50 MB CI log fast: :data:`KEYWORDS` (a few literal words, one ``finditer`` over
the raw text) finds the lines worth reading; only around those lines is each line cleaned and
searched with :data:`SIGNALS` (every pattern below, one combined regex) and the structure
patterns of the parsers. Every signal belongs to one :class:`Category`; a *weak* one (a wrapper
such as ``ImportError while importing test module``, or a consequence such as ``could not
compile``) decides only when no strong signal is present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pitstop.triage.model import Category

KEYWORD_WORDS: tuple[str, ...] = (
    "Error", "error", "ERROR", "FAIL", "Fail", "fail", "Exception", "Traceback", "Timeout",
    "timeout", "timed out", "Killed", "Segmentation", "Fatal", "fatal", "panic", "dumped",
    "Aborted", "not ok", "\u2716", "PASSED", "session starts", "ERR!",
)
"""Literal words one of which appears on (or within a few lines of) every line a signal or a
structure marker is on. A plain alternation of literals is what Python's regex engine scans
fastest; the benchmark compares triage with a bare pass of this very pattern."""
KEYWORDS = re.compile("|".join(re.escape(word) for word in KEYWORD_WORDS))

# (category, weak, may start a failure outside any test block, environment hint, pattern)
_C = Category
_TABLE: list[tuple[Category, bool, bool, bool, str]] = [
    # weak wrappers and consequences first: at one position the first alternative wins
    (_C.IMPORT_ERROR, True, False, False,
     r"ImportError while importing test module|ImportError: Failed to import test module"
     r"|ImportError while loading conftest"),
    (_C.COLLECTION_ERROR, True, False, False,
     r"errors? during collection|could not compile|\[build failed\]|build failed|BUILD FAILED"
     r"|COMPILATION ERROR|Compilation failed|ld returned \d+ exit status|undefined reference to"),
    (_C.ASSERTION_ERROR, True, False, False,
     r"Failed: (?!Timeout)|--- FAIL: |FAILED \(failures="),
    # strong, in precedence order
    (_C.INFRASTRUCTURE, False, True, True,
     r"[Nn]o space left on device|ENOSPC|Disk quota exceeded|not enough space on the disk"
     r"|Connection refused|ECONNREFUSED|ConnectionRefusedError|Connection reset by peer"
     r"|ConnectionResetError|ECONNRESET|Network is unreachable|ENETUNREACH|EHOSTUNREACH"
     r"|No route to host|Temporary failure in name resolution|Name or service not known"
     r"|nodename nor servname|getaddrinfo (?:ENOTFOUND|EAI_AGAIN)|Could not resolve host"
     r"|Failed to establish a new connection|Max retries exceeded with url|Connection timed out"
     r"|Read timed out|ReadTimeoutError|ConnectTimeout|ETIMEDOUT|TLS handshake timeout"
     r"|The runner has received a shutdown signal|lost communication with the server"
     r"|The hosted runner encountered an error|Job failed \(system failure\)|toomanyrequests"
     r"|API rate limit exceeded|HTTP Error 50[234]|50[234] Server Error|Service Unavailable"
     r"|Bad Gateway"),
    (_C.DEPENDENCY_ERROR, False, True, True,
     r"Could not find a version that satisfies the requirement|No matching distribution found"
     r"|ResolutionImpossible|conflicting dependencies|Failed building wheel for"
     r"|Could not build wheels for|Failed to build installable wheels"
     r"|metadata-generation-failed|externally-managed-environment"
     r"|npm ERR! code E(?:RESOLVE|TARGET|NOTARGET|404)|npm error code E(?:RESOLVE|TARGET|404)"
     r"|unable to resolve dependency tree|ERR_PNPM_\w+|Couldn't find any versions for"
     r"|No matching version found for|Could not resolve all (?:files|dependencies|artifacts)"
     r"|Could not resolve dependencies for project|Failed to collect dependencies"
     r"|Could not find artifact|failed to select a version for|no matching package named"
     r"|version solving failed|SolverProblemError|PackagesNotFoundError|UnsatisfiableError"
     r"|Unable to locate package|has no installation candidate|missing go\.sum entry"
     r"|Could not find gem|could not find compatible versions"),
    (_C.CRASH, False, True, False,
     r"Segmentation fault|SIGSEGV|Fatal Python error|core dumped|Aborted|SIGABRT|Bus error"
     r"|SIGBUS|Illegal instruction|double free|stack smashing detected|has overflowed its stack"
     r"|\bKilled\b|SIGKILL|OOMKilled|[Oo]ut of memory|oom-kill|MemoryError|heap out of memory"
     r"|OutOfMemoryError|Cannot allocate memory|node down: Not properly terminated"
     r"|crashed while running|worker '\w+' crashed|exit code 13[479]\b|panic: runtime error"
     r"|fatal error: (?:all goroutines|concurrent map|runtime)|unexpected signal during runtime"
     r"|StackOverflowError|(?:terminated|killed) by signal"),
    (_C.TIMEOUT, False, True, False,
     r"from pytest-timeout|Failed: Timeout|\+{3,} Timeout \+{3,}|Timeout >\s?[\d.]+s"
     r"|TimeoutError|TimeoutExpired|timed out after|test timed out|testTimeoutFailure"
     r"|Exceeded timeout of|Timeout of \d+ ?ms exceeded|execution took longer than"
     r"|exceeded the maximum execution time|The action has timed out|DeadlineExceeded"
     r"|deadline exceeded|Timed out waiting|\*\*\*Timeout"),
    (_C.SYNTAX_ERROR, False, True, False,
     r"SyntaxError|IndentationError|TabError|^error: expected|^error: unexpected"
     r"|^error: mismatched closing delimiter|this file contains an unclosed delimiter"
     r"|syntax error|error TS1\d{3}|illegal start of (?:expression|type)"
     r"|reached end of file while parsing"),
    (_C.IMPORT_ERROR, False, True, False,
     r"ModuleNotFoundError|ImportError|No module named|cannot import name|Cannot find module"
     r"|ERR_MODULE_NOT_FOUND|Cannot find package|Can't resolve '|error\[E0432\]|error\[E0433\]"
     r"|error\[E0463\]|unresolved import|can't find crate|no required module provides package"
     r"|cannot find package|ClassNotFoundException|NoClassDefFoundError"
     r"|error: package \S+ does not exist|cannot open shared object file|Library not loaded"
     r"|DLL load failed|cannot load such file"),
    (_C.FIXTURE_ERROR, False, False, False,
     r"fixture '[\w-]+' not found|ScopeMismatch|recursive dependency involving fixture"
     r"|Fixture \"\w+\" called directly|ERROR at setup of|ERROR at teardown of"
     r"|failed on setup with|failed on teardown with|ERROR: (?:setUpClass|tearDownClass"
     r"|setUpModule|tearDownModule) |\"(?:before|after) (?:each|all)\" hook"),
    (_C.COLLECTION_ERROR, False, False, False,
     r"ERROR collecting|collection failure|_FailedTest|Test suite failed to run"
     r"|ERROR: file or directory not found|ERROR: not found:|found no collectors"),
    (_C.TYPE_ERROR, False, True, False,
     r"TypeError|error\[E0308\]|mismatched types|error TS\d{4}|incompatible types"
     r"|cannot be converted to|ClassCastException|InvalidCastException|Incompatible types"
     r"|cannot use \S+ \(.*\) as "),
    (_C.ATTRIBUTE_ERROR, False, True, False,
     r"AttributeError|NameError|UnboundLocalError|ReferenceError|is not defined"
     r"|error\[E0425\]|error\[E0599\]|error\[E0609\]|no method named|cannot find symbol"
     r"|undefined: \w|undefined method|NoMethodError|NullPointerException|has no attribute"),
    (_C.ASSERTION_ERROR, False, False, False,
     r"AssertionError|AssertionFailedError|ComparisonFailure|ERR_ASSERTION|assertion failed"
     r"|assertion `|Assertion failed|expected:<|expected: <.*> but was: <|Expected values to be"
     r"|DID NOT RAISE|Failure/Error:|^assert |^\s*Expected: |^\s*Received: |AssertError"),
]

CONTEXT_MARKER = re.compile(
    r"^(?:ERROR at (?:setup|teardown) of|ERROR collecting|_FailedTest|failed on (?:setup|teardown) with"
    r"|collection failure|Test suite failed to run|ERROR: (?:setUpClass|tearDownClass|setUpModule"
    r"|tearDownModule) )")
"""Signals that say *where* a failure happened (setup, collection), not what it was: the
error shown for such a failure is the exception inside it."""

_ENV_CRASH = re.compile(r"[Oo]ut of memory|OOMKilled|oom-kill|heap out of memory|"
                        r"Cannot allocate memory")


MAX_LINE = 500
"""Characters of a signal line kept as evidence."""


@dataclass(frozen=True, slots=True)
class Hit:
    """One signal found on one line."""

    category: Category
    weak: bool
    starts_failure: bool
    """May begin a failure of its own when it is outside any test's block."""
    text: str
    """The line, cleaned, without pytest's ``E`` prefix."""

    @property
    def environment(self) -> bool:
        if self.category in (Category.INFRASTRUCTURE, Category.DEPENDENCY_ERROR):
            return True
        return self.category is Category.CRASH and _ENV_CRASH.search(self.text) is not None


HINT_WORDS: tuple[str, ...] = (
    "rror", "RROR", "ail", "AIL", "xception", "imeout", "IMEOUT", "imed out", "efused", "REFUSED",
    "ECONN", "ENET", "EHOST", "ETIMED", "ENOSPC", "ENOTFOUND", "EAI_", "space", "quota",
    "nreachable", "No route", "esolution", "not known", "servname", "esolve", "stablish",
    "Max retries", "reset", "handshake", "runner", "communication", "toomanyrequests",
    "rate limit", "Unavailable", "Bad Gateway", "Could not find", "ouldn't", "matching",
    "onflicting", "ERR", "Unable to locate", "installation candidate", "go.sum", "compatible",
    "Segmentation", "SIG", "dumped", "Aborted", "Illegal instruction", "double free",
    "smashing", "overflowed", "Killed", "emory", "oom-kill", "node down", "crashed",
    "exit code 13", "panic", "fatal error", "unexpected signal", "by signal", "longer than",
    "maximum execution", "eadline", "unclosed", "syntax error", "illegal start", "reached end",
    "No module", "import name", "Cannot find", "an't", "unresolved", "required module",
    "find package", "shared object", "Library not loaded", "load such", "ixture", "ScopeMismatch",
    "hook", "_FailedTest", "collectors", "mismatched", "ncompatible", "converted", "cannot use",
    "not defined", "no method", "find symbol", "undefined", "no attribute", "ssert", "xpected",
    "DID NOT", "Received", "compile", "ld returned",
)
"""Literal pieces at least one of which is in every line :data:`SIGNALS` can match: a line
without any is not searched with the (much slower) full pattern."""
HINTS = re.compile("|".join(re.escape(word) for word in HINT_WORDS))

_GROUPS: list[tuple[Category, bool, bool]] = []
_parts: list[str] = []
for _index, (_category, _weak, _starts, _env, _pattern) in enumerate(_TABLE):
    _GROUPS.append((_category, _weak, _starts))
    _parts.append(f"(?P<s{_index}>{_pattern})")
SIGNALS = re.compile("|".join(_parts), re.MULTILINE)

_ANSI = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_PREFIX = re.compile(
    r"^(?:\ufeff)?(?:\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)? ?"
    r"|\[\d{4}-\d\d-\d\dT[\d:.,]+(?:Z|[+-]\d\d:?\d\d)?\] ?|\[?\d\d:\d\d:\d\d(?:\.\d+)?\]? )")
_MARKER = re.compile(r"^(?:##\[(?:group|endgroup|error|warning|section|command|debug|notice)\]"
                     r"|::(?:group|endgroup|error|warning|notice)(?: [^:]*)?::)")
_PYTEST_E = re.compile(r"^E {1,}")
_CODE_LINE = re.compile(r"^(?:>|\s{4,}(?:raise|with|assert|if|elif|return|def|for|while|await|"
                        r"yield|self\.|[\w.]+\s*=[^=]|[\w.]+\())")


def clean_line(raw: str) -> str:
    """A log line as a person reads it: carriage-return overwrites, ANSI colours, the CI's
    timestamp prefix and group/annotation markers removed."""
    line = raw.rstrip("\r\n")
    if "\r" in line:
        line = line.rsplit("\r", 1)[1]
    if "\x1b" in line:
        line = _ANSI.sub("", line)
    if line[:1].isdigit() or line[:1] in ("[", "\ufeff"):
        line = _PREFIX.sub("", line, count=1)
    if line[:2] in ("##", "::"):
        line = _MARKER.sub("", line, count=1)
    return line


def is_code(line: str) -> bool:
    """Source code a traceback quotes (pytest's ``>`` lines, indented statements): a
    ``raise TypeError`` shown there is not the error that happened."""
    return _CODE_LINE.match(line) is not None


def scan(line: str) -> Hit | None:
    """The signal on a cleaned ``line``, if any (the leftmost; weak wrappers win ties)."""
    if HINTS.search(line) is None or is_code(line):
        return None
    if line[:1] == "E":
        text = _PYTEST_E.sub("", line, count=1)
    elif line[:2] == "# ":  # TAP diagnostics
        text = line[2:]
    else:
        text = line
    match = SIGNALS.search(text)
    if match is None or match.lastgroup is None:
        return None
    category, weak, starts = _GROUPS[int(match.lastgroup[1:])]
    return Hit(category, weak, starts, text.strip()[:MAX_LINE])


# --- locations ------------------------------------------------------------------------------------

_LOCATIONS = re.compile(
    r"^(?:E\s+)?\s*File \"(?P<tb_file>[^\"]+)\", line (?P<tb_line>\d+)"
    r"|^(?P<py_file>[^\s:\"'<>]+\.py):(?P<py_line>\d+)(?::|$)"
    r"|^file (?P<fx_file>\S+\.py), line (?P<fx_line>\d+)"
    r"|location: '(?P<js_file>[^']+?):(?P<js_line>\d+):\d+'"
    r"|^\s*--> (?P<rs_file>[^\s:]+):(?P<rs_line>\d+):\d+"
    r"|panicked at (?P<pn_file>[^\s:]+):(?P<pn_line>\d+):\d+")

LIBRARY_PATH = re.compile(
    r"site-packages|dist-packages|/lib/python\d|<frozen|node_modules|node:internal|\.cargo/registry"
    r"|/usr/lib/|/usr/local/lib/|\.pyenv/versions|hostedtoolcache|\.rustup|/rustc/")


def location_in(line: str) -> tuple[str, int] | None:
    """``(file, line)`` when ``line`` names a place in a source file."""
    match = _LOCATIONS.search(line)
    if match is None:
        return None
    groups = match.groupdict()
    for prefix in ("tb", "py", "fx", "js", "rs", "pn"):
        file = groups.get(f"{prefix}_file")
        if file:
            return file.removeprefix("file://"), int(groups[f"{prefix}_line"])
    return None
