"""A large JUnit report with a known number of root causes, for the acceptance test and the bench.

The failure texts are laid out as pytest writes them (``message`` attribute, ``E`` lines, the
``path:line: Type`` trailer) and vary in what differs between tests sharing one root cause:
numbers, addresses, temporary paths, ids.
"""

from __future__ import annotations

import random
import uuid
from xml.sax.saxutils import escape, quoteattr

CAUSES: list[tuple[str, int]] = [
    ("assertion_error", 120), ("import_error", 100), ("timeout", 80), ("type_error", 70),
    ("attribute_error", 60), ("infrastructure", 40), ("fixture_error", 30),
]
"""(category, failures): 500 failures from 7 root causes."""


def _failure(cause: str, rng: random.Random, index: int) -> tuple[str, str, str]:
    """(element, message, text) of one failure of ``cause``."""
    tmp = f"/tmp/pytest-of-ci/pytest-{rng.randint(1, 999)}/test_{index}0"
    if cause == "assertion_error":
        got = rng.randint(300, 599)
        return ("failure", f"AssertionError: assert {got} == 200",
                f">       assert response.status_code == 200\nE       AssertionError: assert {got}"
                f" == 200\nE        +  where {got} = <Response [{got}]>.status_code\n\n"
                f"tests/api/test_endpoints.py:{rng.randint(10, 900)}: AssertionError")
    if cause == "import_error":
        return ("failure", "ModuleNotFoundError: No module named 'yaml_pitstop_absent'",
                "tests/config/test_loader.py:3: in <module>\n    import yaml_pitstop_absent\n"
                "E   ModuleNotFoundError: No module named 'yaml_pitstop_absent'")
    if cause == "timeout":
        limit = rng.choice(["1.0", "2.5", "10.0"])
        return ("failure", f"Failed: Timeout (>{limit}s) from pytest-timeout.",
                f">           time.sleep(0.{rng.randint(1, 9)})\nE           Failed: Timeout (>{limit}s)"
                f" from pytest-timeout.\n\ntests/slow/test_sync.py:{rng.randint(5, 99)}: Failed")
    if cause == "type_error":
        given = rng.randint(3, 6)
        return ("failure", f"TypeError: parse() takes 2 positional arguments but {given} were given",
                f">       parse(a, b, c)\nE       TypeError: parse() takes 2 positional arguments but"
                f" {given} were given\n\ntests/test_parse.py:{rng.randint(5, 300)}: TypeError")
    if cause == "attribute_error":
        address = f"0x{rng.getrandbits(44):x}"
        return ("failure", f"AttributeError: <Session at {address}> has no attribute 'commit'",
                f"E       AttributeError: <Session at {address}> has no attribute 'commit'\n\n"
                f"app/db.py:{rng.randint(20, 80)}: AttributeError")
    if cause == "infrastructure":
        return ("failure", "ConnectionRefusedError: [Errno 111] Connection refused",
                f"E       ConnectionRefusedError: [Errno 111] Connection refused ({tmp}/redis.sock)"
                f"\n\n/usr/lib/python3.11/socket.py:{rng.randint(800, 850)}: ConnectionRefusedError")
    database = f"{tmp}/db-{uuid.UUID(int=rng.getrandbits(128))}.sqlite"
    return ("error", f'failed on setup with "RuntimeError: database {database} is locked"',
            f">       raise RuntimeError(f\"database {{path}} is locked\")\nE       RuntimeError: "
            f"database {database} is locked\n\ntests/conftest.py:41: RuntimeError")


def junit_report(total: int = 5000, seed: int = 7) -> tuple[str, dict[str, int]]:
    """(XML text, failures per category): ``total`` cases, the :data:`CAUSES` failing."""
    rng = random.Random(seed)
    plan = [cause for cause, count in CAUSES for _ in range(count)]
    plan += [""] * (total - len(plan))
    rng.shuffle(plan)
    cases = []
    for index, cause in enumerate(plan):
        module = f"tests.suite{index % 40}.test_mod{index % 7}"
        name = f"test_case_{index}"
        if not cause:
            cases.append(f'<testcase classname="{module}" name="{name}" time="0.001" />')
            continue
        element, message, text = _failure(cause, rng, index)
        cases.append(f'<testcase classname="{module}" name="{name}" time="0.010">'
                     f"<{element} message={quoteattr(message)}>{escape(text)}</{element}>"
                     "</testcase>")
    failures = sum(count for _, count in CAUSES)
    xml = ('<?xml version="1.0" encoding="utf-8"?><testsuites name="pytest tests">'
           f'<testsuite name="pytest" errors="0" failures="{failures}" skipped="0" tests="{total}">'
           + "".join(cases) + "</testsuite></testsuites>\n")
    return xml, dict(CAUSES)
