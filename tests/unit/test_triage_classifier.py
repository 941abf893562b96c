"""TestTriage on small outputs: the seed's API, rules, fingerprints, garbage inputs."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from pitstop.kernel.errors import TriageInputError
from pitstop.triage import Action, Category, TestTriage, TriageConfig, canonical_test_id, parse_file
from pitstop.triage.fingerprint import fingerprint, normalize

pytestmark = pytest.mark.timeout(60)

MB = 1024 * 1024


def test_seed_api_classifies_one_traceback() -> None:
    result = TestTriage().classify_failure(
        "Traceback (most recent call last):\n"
        '  File "/srv/app/tests/test_a.py", line 3, in <module>\n'
        "    import numpy_pitstop_absent\n"
        "ModuleNotFoundError: No module named 'numpy_pitstop_absent'\n")
    assert result.category is Category.IMPORT_ERROR
    assert result.action is Action.FIX_ENVIRONMENT and not result.auto_fixable
    assert result.evidence == ["ModuleNotFoundError: No module named 'numpy_pitstop_absent'"]
    assert result.location is not None and result.location.line == 3
    assert 0 < result.confidence <= 1 and len(result.fingerprint) == 12


@pytest.mark.parametrize(("output", "category", "action"), [
    ("E   SyntaxError: invalid syntax", Category.SYNTAX_ERROR, Action.AUTO_FIX),
    ("E   TypeError: f() missing 1 required positional argument", Category.TYPE_ERROR,
     Action.AUTO_FIX),
    ("E   AttributeError: 'NoneType' object has no attribute 'x'", Category.ATTRIBUTE_ERROR,
     Action.AUTO_FIX),
    ("E   assert 1 == 2", Category.ASSERTION_ERROR, Action.MANUAL_REVIEW),
    ("E   Failed: Timeout (>5.0s) from pytest-timeout.", Category.TIMEOUT, Action.OPTIMIZE),
    ("OSError: [Errno 28] No space left on device", Category.INFRASTRUCTURE, Action.RETRY),
    ("The runner has received a shutdown signal.", Category.INFRASTRUCTURE, Action.RETRY),
    ("npm ERR! code ERESOLVE", Category.DEPENDENCY_ERROR, Action.FIX_ENVIRONMENT),
    ("Killed", Category.CRASH, Action.MANUAL_REVIEW),
    ("FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
     Category.CRASH, Action.FIX_ENVIRONMENT),
    ("E       fixture 'db' not found", Category.FIXTURE_ERROR, Action.MANUAL_REVIEW),
    ("ImportError: libGL.so.1: cannot open shared object file", Category.IMPORT_ERROR,
     Action.FIX_ENVIRONMENT),
    ("all good here", Category.UNKNOWN, Action.MANUAL_REVIEW),
])
def test_signals(output: str, category: Category, action: Action) -> None:
    result = TestTriage().classify_failure(output)
    assert (result.category, result.action) == (category, action)


def test_quoted_source_is_not_the_error() -> None:
    block = ("____ test_raises ____\n\n    def test_raises():\n>       with pytest.raises(TypeError):\n"
             "E       Failed: DID NOT RAISE <class 'TypeError'>\n\ntests/test_x.py:4: Failed\n")
    text = f"==== FAILURES ====\n{block}==== short test summary info ====\n"
    result = TestTriage().classify_failure(text)
    assert result.category is Category.ASSERTION_ERROR


def test_known_flaky_list_and_action_overrides() -> None:
    config = TriageConfig(known_flaky=["tests.test_net.*"],
                          actions={Category.TYPE_ERROR: Action.MANUAL_REVIEW})
    triage = TestTriage(config)
    flaky = triage.classify_failure("E   assert 0 == 1", test_id="tests/test_net.py::test_ping")
    assert flaky.category is Category.KNOWN_FLAKY and flaky.detected is Category.ASSERTION_ERROR
    typed = triage.classify_failure("TypeError: nope")
    assert typed.action is Action.MANUAL_REVIEW and not typed.auto_fixable
    text = ("==== FAILURES ====\n____ test_ping ____\nE   assert 0 == 1\n\ntests/test_net.py:3: "
            "AssertionError\n==== short test summary info ====\n"
            "FAILED tests/test_net.py::test_ping - assert 0 == 1\n==== 1 failed in 0.1s ====\n")
    result = triage.triage_text(text)[0]
    assert result.category is Category.KNOWN_FLAKY and result.detected is Category.ASSERTION_ERROR
    assert result.action is Action.SKIP_AND_LOG


def test_canonical_ids_agree_between_pytest_and_junit() -> None:
    assert canonical_test_id("tests/test_a.py::TestX::test_y[1-a/b]") == "tests.test_a.TestX.test_y[1-a/b]"
    assert canonical_test_id("tests.test_a.TestX.test_y") == "tests.test_a.TestX.test_y"


def test_fingerprints_ignore_numbers_paths_addresses_and_ids() -> None:
    one = "RuntimeError: db /tmp/pytest-of-ci/pytest-3/x/a1b2c3d4e5.db at 0x7f00aa locked after 3s"
    two = "RuntimeError: db /tmp/pytest-of-ci/pytest-9/y/ffe2c3d4e9.db at 0x7f11bb locked after 12s"
    assert normalize(one) == normalize(two)
    assert fingerprint(Category.UNKNOWN, one) == fingerprint(Category.UNKNOWN, two)
    assert fingerprint(Category.UNKNOWN, one) != fingerprint(Category.UNKNOWN, "RuntimeError: other")
    assert fingerprint(Category.UNKNOWN, one) != fingerprint(Category.CRASH, one)


# --- garbage in: a clear error or unknown, bounded memory, never a crash --------------------------

def test_binary_truncated_and_bomb_inputs_are_clear_errors(tmp_path: Path) -> None:
    binary = tmp_path / "core.bin"
    binary.write_bytes(os.urandom(100_000))
    truncated = tmp_path / "report.xml"
    truncated.write_text('<?xml version="1.0"?><testsuites><testsuite><testcase name="a"><fail')
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
                    + "".join(f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i else "&lol;" * 10}">'
                              for i in range(9))
                    + ']><testsuites><testsuite><testcase name="x"><failure message="&lol8;"/>'
                      "</testcase></testsuite></testsuites>")
    for path, words in ((binary, "binary"), (truncated, "not well-formed"), (bomb, "entities")):
        with pytest.raises(TriageInputError, match=words):
            parse_file(path, max_bytes=10 * MB)
    with pytest.raises(TriageInputError, match="no such file"):
        parse_file(tmp_path / "missing.log", max_bytes=MB)
    with pytest.raises(TriageInputError, match="larger than the limit"):
        parse_file(binary, max_bytes=1000)


def test_empty_file_finds_nothing(tmp_path: Path) -> None:
    empty = tmp_path / "empty.log"
    empty.write_bytes(b"")
    parsed, results = TestTriage().triage_file(empty)
    assert results == [] and parsed.failures == []
    assert TestTriage().classify_failure("").category is Category.UNKNOWN


def test_fifty_megabytes_of_noise_in_bounded_memory(tmp_path: Path) -> None:
    noise = tmp_path / "noise.log"
    line = b"2024-05-14T09:30:00.0000000Z \x1b[32mDownloading wheel 12.3 kB progress ok\x1b[0m\n"
    with noise.open("wb") as handle:
        block = line * (MB // len(line))
        for _ in range(50):
            handle.write(block)
    tracemalloc.start()
    try:
        parsed, results = TestTriage().triage_file(noise)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert results == [] and parsed.bytes_read >= 49 * MB
    assert peak < 40 * MB, f"peak {peak / MB:.1f} MB"
