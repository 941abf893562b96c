"""Names checked by a regex never accept a trailing newline (``$`` matches before one; ``\\Z`` does not)."""

from __future__ import annotations

import re

import pytest

from pitstop.alerts import config as alerts_config
from pitstop.kernel import statelog
from pitstop.patches import repos
from pitstop.triggers import conditions, gitchanges, rules, templates

pytestmark = pytest.mark.timeout(10)

CASES: list[tuple[str, re.Pattern[str], str]] = [
    ("state log name", statelog._NAME_RE, "runs"),
    ("alert header name", alerts_config._HEADER_NAME, "X-Team"),
    ("rule id", rules.RULE_ID, "phase1_to_phase2"),
    ("duration", rules._DURATION, "5s"),
    ("condition field", conditions._FIELD, "data.branch"),
    ("template path", templates._PATH, "event.data"),
    ("git range", gitchanges._RANGE, "main..HEAD"),
    ("repository name", repos._NAME_RE, "app"),
]


@pytest.mark.parametrize(("what", "pattern", "good"), CASES, ids=[c[0] for c in CASES])
def test_a_trailing_newline_is_refused(what: str, pattern: re.Pattern[str], good: str) -> None:
    assert pattern.match(good), what
    assert pattern.match(good + "\n") is None, what
    assert pattern.match(good + "\r\nX-Injected: 1") is None, what
