"""Regenerate the triage corpus: real output of real tools on small failing projects.

    .venv/bin/python tests/triage/make_corpus.py          # rewrites tests/triage/corpus/

Every file under ``corpus/`` is what pytest, unittest, pip, node's test runner, cargo or bash
printed for a project this script builds under ``$TMPDIR/pitstop-corpus`` (a fixed place, so
paths stay the same from one regeneration to the next). ``corpus/MANIFEST.json`` says, for each
file, what the script built it to show: the category, action and test id the first group of its
triage must have. The CI-log cases run the same real tools and lay their output out as a CI
system stores it (timestamp per line, group markers, ANSI colours, several runs in one log).

Nothing here needs the network: pip resolves against an empty or local ``--find-links``
directory, and the one "network" case talks to a closed port on 127.0.0.1. Tools that are not
installed (node, cargo, gcc) are skipped with a note; their earlier files are kept.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
WORK = Path(tempfile.gettempdir()) / "pitstop-corpus"
PYTHON = sys.executable


@dataclass
class Expect:
    category: str
    action: str
    test_id: str | None
    """The first group's first test id (None: the failure is not a test's, e.g. pip)."""


@dataclass
class Case:
    name: str
    tool: str
    files: dict[str, str]
    argv: list[str]
    expect: Expect
    note: str
    suffix: str = ".txt"
    config: dict[str, Any] | None = None
    """A triage config (config/triage.yaml content) the case is triaged with."""
    junit: Expect | None = None
    """Also run with ``--junitxml`` and keep the XML (expected values may differ in id form)."""
    env: dict[str, str] = field(default_factory=dict)
    prepare: Callable[[Path], None] | None = None


def _env(extra: dict[str, str] | None = None, *, color: bool = False) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
        "COLUMNS": "100",
        "TERM": "xterm-256color" if color else "dumb",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "PIP_NO_INPUT": "1",
        "PIP_CONFIG_FILE": os.devnull,
        "CARGO_TERM_COLOR": "always" if color else "never",
    }
    env["FORCE_COLOR" if color else "NO_COLOR"] = "1"
    env.update(extra or {})
    return env


def _pytest(*args: str) -> list[str]:
    return [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-p", "pytest_timeout", *args]


def _run(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> str:
    argv = [part.replace("{python}", PYTHON) for part in argv]
    done = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=timeout, check=False)
    return done.stdout.decode("utf-8", errors="replace")


def _build(root: Path, files: dict[str, str]) -> None:
    if root.exists():
        shutil.rmtree(root)
    for rel, body in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(body).lstrip("\n"))


# --- the small projects --------------------------------------------------------------------------

APP = {
    "app/__init__.py": "",
    "app/core.py": """
        def total(items):
            return sum(item["price"] for item in items)


        def ratio(a, b):
            return a / b


        class Basket:
            def __init__(self, owner):
                self.owner = owner
                self.items = []
        """,
    "tests/__init__.py": "",
}

ASSERTS = {**APP, "tests/test_prices.py": """
    import pytest

    from app.core import Basket, total


    def test_total():
        assert total([{"price": 2}, {"price": 3}]) == 6


    @pytest.mark.parametrize("n", [1, 2, 3])
    def test_scaled(n):
        assert total([{"price": n}]) * 2 == n * 3


    def test_owner():
        basket = Basket("ann")
        assert basket.owner == "ann"


    class TestBasket:
        def test_empty(self):
            assert Basket("bob").items == [None]
    """}

THIRD_PARTY = {**APP, "tests/test_plots.py": """
    import matplotlib_pitstop_absent

    def test_plot():
        assert matplotlib_pitstop_absent
    """, "tests/test_ok.py": """
    def test_fine():
        assert True
    """}

PROJECT_IMPORT = {**APP, "tests/test_report.py": """
    from app.core import render_report


    def test_report():
        assert render_report([]) == ""
    """}

PROJECT_SUBMODULE = {**APP, "app/service.py": """
    import app.exporter


    def export_all():
        return app.exporter.run()
    """, "tests/test_exporter.py": """
    from app.service import export_all


    def test_export():
        assert export_all()
    """}

SYNTAX = {**APP, "app/parser.py": """
    def parse(text):
        if text.startswith("#")
            return None
        return text.split(",")
    """, "tests/test_parser.py": """
    from app.parser import parse


    def test_parse():
        assert parse("a,b") == ["a", "b"]
    """}

TIMEOUTS = {**APP, "tests/test_slow.py": """
    import time

    import pytest


    @pytest.mark.timeout(1)
    def test_sync_waits_forever():
        while True:
            time.sleep(0.05)


    def test_quick():
        assert 1 + 1 == 2
    """}

TIMEOUT_THEN_ASSERT = {**APP, "tests/test_cleanup.py": """
    import time

    import pytest


    @pytest.mark.timeout(1)
    def test_cleanup_after_stall():
        state = {"closed": False}
        try:
            time.sleep(30)
        finally:
            assert state["closed"], "connection was not closed"
    """}

SEGFAULT = {**APP, "tests/test_native.py": """
    import ctypes


    def test_before():
        assert True


    def test_reads_null_pointer():
        ctypes.string_at(0)


    def test_after():
        assert True
    """}

FIXTURES = {**APP, "tests/conftest.py": """
    import pytest


    @pytest.fixture
    def database():
        raise RuntimeError("could not open database: schema version 3 expected, found 2")
    """, "tests/test_store.py": """
    def test_insert(database):
        assert database


    def test_lookup(db_session):
        assert db_session
    """}

FIXTURE_IMPORT = {**APP, "tests/conftest.py": """
    import pytest


    @pytest.fixture
    def client():
        import requests_pitstop_absent
        return requests_pitstop_absent.Session()
    """, "tests/test_api.py": """
    def test_get(client):
        assert client.get("/")
    """}

COLLECTION = {**APP, "tests/test_config.py": """
    import pytest

    DEFAULTS = load_defaults()


    def test_defaults():
        assert DEFAULTS
    """}

TYPES = {**APP, "tests/test_ratio.py": """
    from app.core import Basket, ratio


    def test_ratio():
        assert ratio(1, 2, 3) == 0.5


    def test_owner_upper():
        assert Basket(None).owner.upper() == "ANN"
    """}

ATTRS = {**APP, "tests/test_basket.py": """
    from app.core import Basket


    def test_add():
        basket = Basket("ann")
        basket.add({"price": 1})
        assert basket.items
    """}

FLAKY = {**APP, "tests/test_network_race.py": """
    import random


    def test_eventually_consistent():
        random.seed(4)
        assert random.random() > 0.5, "replica lagged behind"


    def test_stable():
        assert True
    """}

DISK = {**APP, "tests/test_export.py": """
    def test_write_report():
        with open("/dev/full", "w") as handle:
            handle.write("report" * 10)
            handle.flush()
    """}

REFUSED = {**APP, "tests/test_service.py": """
    import socket


    def test_service_answers():
        with socket.create_connection(("127.0.0.1", 9), timeout=2) as conn:
            conn.sendall(b"ping")
    """}

MIXED = {**ASSERTS, **TYPES, **ATTRS, "tests/test_plots.py": THIRD_PARTY["tests/test_plots.py"]}

UNITTEST_FAIL = {**APP, "tests/test_unit_prices.py": """
    import unittest

    from app.core import Basket, total


    class PriceTests(unittest.TestCase):
        def test_total(self):
            self.assertEqual(total([{"price": 2}, {"price": 3}]), 6)

        def test_owner(self):
            self.assertEqual(Basket("ann").owner, "ann")

        def test_items_type(self):
            self.assertEqual(len(Basket("x").items, 1), 0)


    if __name__ == "__main__":
        unittest.main()
    """}

UNITTEST_IMPORT = {**APP, "tests/test_unit_plots.py": """
    import unittest

    import seaborn_pitstop_absent


    class PlotTests(unittest.TestCase):
        def test_plot(self):
            self.assertTrue(seaborn_pitstop_absent)
    """}

UNITTEST_SYNTAX = {**APP, "tests/test_unit_syntax.py": """
    import unittest


    class SyntaxTests(unittest.TestCase):
        def test_it(self):
            values = [1, 2, 3
            self.assertTrue(values)
    """}

NODE = {
    "package.json": '{"name": "calc", "version": "1.0.0", "type": "module"}\n',
    "src/calc.mjs": """
        export function add(a, b) { return a + b; }
        export function parse(text) { return text.split(","); }
        """,
    "test/calc.test.mjs": """
        import test from "node:test";
        import assert from "node:assert/strict";
        import { add, parse } from "../src/calc.mjs";

        test("adds numbers", () => {
          assert.equal(add(2, 2), 5);
        });

        test("parses lists", () => {
          assert.deepEqual(parse("a,b"), ["a", "b"]);
        });

        test("parses nothing", () => {
          parse(undefined);
        });
        """,
}

NODE_IMPORT = {
    "package.json": '{"name": "web", "version": "1.0.0", "type": "module"}\n',
    "test/server.test.mjs": """
        import test from "node:test";
        import express from "express-pitstop-absent";

        test("serves", () => { express(); });
        """,
}

NODE_TIMEOUT = {
    "package.json": '{"name": "q", "version": "1.0.0", "type": "module"}\n',
    "test/queue.test.mjs": """
        import test from "node:test";

        test("drains the queue", { timeout: 200 }, async () => {
          await new Promise((resolve) => setTimeout(resolve, 5000));
        });
        """,
}

CARGO_TOML = '[package]\nname = "shapes"\nversion = "0.1.0"\nedition = "2021"\n\n[dependencies]\n'

CARGO_PANIC = {"Cargo.toml": CARGO_TOML, "src/lib.rs": """
    pub fn area(w: u32, h: u32) -> u32 { w + h }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn area_of_square() {
            assert_eq!(area(3, 3), 9);
        }

        #[test]
        fn area_of_line() {
            assert_eq!(area(0, 4), 4);
        }
    }
    """}

CARGO_TYPE = {"Cargo.toml": CARGO_TOML, "src/lib.rs": """
    pub fn area(w: u32, h: u32) -> u32 { w * h }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn area_of_square() {
            let side: u32 = "3";
            assert_eq!(area(side, side), 9);
        }
    }
    """}

CARGO_IMPORT = {"Cargo.toml": CARGO_TOML, "src/lib.rs": """
    use crate::geometry::Polygon;

    pub fn area(w: u32, h: u32) -> u32 { w * h }
    """}

C_SEGFAULT = {"main.c": """
    #include <stdio.h>
    int main(void) {
        int *table = 0;
        printf("loading table\\n");
        fflush(stdout);
        return table[42];
    }
    """, "run.sh": """
    set -u
    gcc -O0 -o loader main.c
    ./loader
    """}


def _wheel(directory: Path, name: str, version: str, requires: list[str]) -> None:
    """A minimal, valid pure-Python wheel (so pip resolves offline against local files)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: pitstop-corpus\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, body in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(body.encode()).digest()).rstrip(b"=")
        record.append(f"{path},sha256={digest.decode()},{len(body.encode())}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(directory / f"{name}-{version}-py3-none-any.whl", "w") as archive:
        for path, body in files.items():
            archive.writestr(path, body)


def _conflicting_wheels(root: Path) -> None:
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    _wheel(wheels, "pitstop_client", "1.0", ["pitstop_proto==1.0"])
    _wheel(wheels, "pitstop_proto", "1.0", [])
    _wheel(wheels, "pitstop_proto", "2.0", [])


def _empty_index(root: Path) -> None:
    (root / "empty-index").mkdir(parents=True, exist_ok=True)


PIP_OFFLINE = ["{python}", "-m", "pip", "install", "--dry-run", "--no-index"]


def cases() -> list[Case]:
    assertion = Expect("assertion_error", "manual_review", "tests/test_prices.py::test_total")
    return [
        # --- pytest, one category per project, several -r/--tb modes -----------------------------
        Case("pytest_assert_default", "pytest", ASSERTS, _pytest(), assertion,
             "failing asserts, default options", junit=Expect(
                 "assertion_error", "manual_review", "tests.test_prices.test_total")),
        Case("pytest_assert_tb_short_rA", "pytest", ASSERTS, _pytest("--tb=short", "-rA"),
             assertion, "--tb=short -rA"),
        Case("pytest_assert_tb_line", "pytest", ASSERTS, _pytest("--tb=line"), assertion,
             "--tb=line: one line per failure"),
        Case("pytest_assert_tb_native", "pytest", ASSERTS, _pytest("--tb=native", "-q"),
             assertion, "--tb=native -q"),
        Case("pytest_assert_tb_no", "pytest", ASSERTS, _pytest("--tb=no", "-rf"), assertion,
             "--tb=no: the short summary only"),
        Case("pytest_assert_verbose_rN", "pytest", ASSERTS, _pytest("-v", "--tb=long", "-rN"),
             assertion, "-v --tb=long -rN: no short summary"),
        Case("pytest_assert_exitfirst", "pytest", ASSERTS, _pytest("-x"), assertion,
             "-x stops after the first failure"),
        Case("pytest_assert_xdist", "pytest", ASSERTS, _pytest("-p", "xdist", "-n", "2", "-v"),
             Expect("assertion_error", "manual_review", None), "xdist -n 2 -v (order varies)"),
        Case("pytest_import_thirdparty", "pytest", THIRD_PARTY, _pytest(),
             Expect("import_error", "fix_environment", "tests/test_plots.py"),
             "a missing third-party package: a collection error caused by an import error",
             junit=Expect("import_error", "fix_environment", "tests.test_plots")),
        Case("pytest_import_project_name", "pytest", PROJECT_IMPORT, _pytest("-q"),
             Expect("import_error", "auto_fix", "tests/test_report.py"),
             "a name missing from a project module (code, not environment)"),
        Case("pytest_import_project_module", "pytest", PROJECT_SUBMODULE, _pytest("--tb=short"),
             Expect("import_error", "auto_fix", "tests/test_exporter.py"),
             "a project submodule that does not exist (code, not environment)"),
        Case("pytest_syntax_error", "pytest", SYNTAX, _pytest(),
             Expect("syntax_error", "auto_fix", "tests/test_parser.py"),
             "a syntax error in an imported project module: syntax beats import and collection",
             junit=Expect("syntax_error", "auto_fix", "tests.test_parser")),
        Case("pytest_timeout_signal", "pytest", TIMEOUTS,
             _pytest("--timeout-method=signal"),
             Expect("timeout", "optimize", "tests/test_slow.py::test_sync_waits_forever"),
             "pytest-timeout, signal method",
             junit=Expect("timeout", "optimize", "tests.test_slow.test_sync_waits_forever")),
        Case("pytest_timeout_thread", "pytest", TIMEOUTS, _pytest("--timeout-method=thread", "-v"),
             Expect("timeout", "optimize", "tests/test_slow.py::test_sync_waits_forever"),
             "pytest-timeout, thread method: stacks dumped, the process exits"),
        Case("pytest_timeout_then_assert", "pytest", TIMEOUT_THEN_ASSERT,
             _pytest("--timeout-method=signal"),
             Expect("timeout", "optimize", "tests/test_cleanup.py::test_cleanup_after_stall"),
             "an assertion raised after the timeout: the timeout is the root cause"),
        Case("pytest_segfault_verbose", "pytest", SEGFAULT, _pytest("-v"),
             Expect("crash", "manual_review", "tests/test_native.py::test_reads_null_pointer"),
             "a segfault kills pytest mid-run"),
        Case("pytest_segfault_quiet", "pytest", SEGFAULT, _pytest("-q"),
             Expect("crash", "manual_review", "tests/test_native.py::test_reads_null_pointer"),
             "a segfault, no -v: the faulthandler stack names the test"),
        Case("pytest_segfault_xdist", "pytest", SEGFAULT, _pytest("-p", "xdist", "-n", "2"),
             Expect("crash", "manual_review", "tests/test_native.py::test_reads_null_pointer"),
             "an xdist worker crashes"),
        Case("pytest_fixture_error", "pytest", FIXTURES, _pytest(),
             Expect("fixture_error", "manual_review", "tests/test_store.py::test_insert"),
             "a fixture raising at setup, and a fixture that does not exist",
             junit=Expect("fixture_error", "manual_review", "tests.test_store.test_insert")),
        Case("pytest_fixture_import", "pytest", FIXTURE_IMPORT, _pytest(),
             Expect("import_error", "fix_environment", "tests/test_api.py::test_get"),
             "a fixture failing on a missing package: import beats fixture"),
        Case("pytest_collection_error", "pytest", COLLECTION, _pytest(),
             Expect("collection_error", "manual_review", "tests/test_config.py"),
             "a module-level NameError while collecting",
             junit=Expect("collection_error", "manual_review", "tests.test_config")),
        Case("pytest_type_error", "pytest", TYPES, _pytest("-rfE"),
             Expect("type_error", "auto_fix", "tests/test_ratio.py::test_ratio"),
             "wrong arguments, and a method of None"),
        Case("pytest_attribute_error", "pytest", ATTRS, _pytest(),
             Expect("attribute_error", "auto_fix", "tests/test_basket.py::test_add"),
             "a method that does not exist", junit=Expect(
                 "attribute_error", "auto_fix", "tests.test_basket.test_add")),
        Case("pytest_known_flaky", "pytest", FLAKY, _pytest(),
             Expect("known_flaky", "skip_and_log",
                    "tests/test_network_race.py::test_eventually_consistent"),
             "a listed known-flaky test",
             config={"known_flaky": ["tests/test_network_race.py::test_eventually_*"]}),
        Case("pytest_disk_full", "pytest", DISK, _pytest(),
             Expect("infrastructure", "retry", "tests/test_export.py::test_write_report"),
             "no space left on device"),
        Case("pytest_connection_refused", "pytest", REFUSED, _pytest("--tb=short"),
             Expect("infrastructure", "retry", "tests/test_service.py::test_service_answers"),
             "a service the test needs is not there"),
        Case("pytest_mixed_causes", "pytest", MIXED, _pytest("-q", "--tb=short"),
             Expect("import_error", "fix_environment", "tests/test_plots.py"),
             "interrupted by one collection error (-q): only the import error is reported"),
        Case("pytest_mixed_continue", "pytest", MIXED,
             _pytest("--continue-on-collection-errors", "--tb=short"),
             Expect("import_error", "fix_environment", "tests/test_plots.py"),
             "several causes in one run: the blocking import error first",
             junit=Expect("import_error", "fix_environment", "tests.test_plots")),
        # --- unittest ----------------------------------------------------------------------------
        Case("unittest_failures", "unittest", UNITTEST_FAIL,
             [PYTHON, "-m", "unittest", "discover", "-s", "tests", "-t", "."],
             Expect("type_error", "auto_fix", "tests.test_unit_prices.PriceTests.test_items_type"),
             "a failing assertEqual and a TypeError: the code error first"),
        Case("unittest_failures_verbose", "unittest", UNITTEST_FAIL,
             [PYTHON, "-m", "unittest", "-v", "tests.test_unit_prices"],
             Expect("type_error", "auto_fix", "tests.test_unit_prices.PriceTests.test_items_type"),
             "unittest -v"),
        Case("unittest_import_error", "unittest", UNITTEST_IMPORT,
             [PYTHON, "-m", "unittest", "discover", "-s", "tests", "-t", "."],
             Expect("import_error", "fix_environment", "tests.test_unit_plots"),
             "unittest's loader failing on a missing package"),
        Case("unittest_syntax_error", "unittest", UNITTEST_SYNTAX,
             [PYTHON, "-m", "unittest", "discover", "-s", "tests", "-t", "."],
             Expect("syntax_error", "auto_fix", "tests.test_unit_syntax"),
             "unittest's loader failing on a syntax error"),
        # --- pip -----------------------------------------------------------------------------------
        Case("pip_no_version", "pip", {}, [*PIP_OFFLINE, "--find-links", "empty-index",
                                           "pitstop-somepkg==99"],
             Expect("dependency_error", "fix_environment", None),
             "no version satisfies the requirement", prepare=_empty_index),
        Case("pip_conflict", "pip", {}, [*PIP_OFFLINE, "--find-links", "wheels",
                                         "pitstop_client==1.0", "pitstop_proto==2.0"],
             Expect("dependency_error", "fix_environment", None),
             "ResolutionImpossible between local wheels", prepare=_conflicting_wheels),
        Case("pip_connection_refused", "pip", {}, [
            "{python}", "-m", "pip", "install", "--dry-run", "--retries", "1", "--timeout", "2",
            "--index-url", "http://127.0.0.1:9/simple", "pitstop-somepkg"],
             Expect("infrastructure", "retry", None),
             "the index cannot be reached: the network, not the requirement, is the cause"),
    ]


def other_cases() -> list[Case]:
    found: list[Case] = []
    if shutil.which("node"):
        found += [
            Case("node_test_tap", "node", NODE, ["node", "--test", "--test-reporter=tap"],
                 Expect("type_error", "auto_fix", "parses nothing"),
                 "node:test, TAP: an assertion and a TypeError"),
            Case("node_test_spec", "node", NODE, ["node", "--test", "--test-reporter=spec"],
                 Expect("type_error", "auto_fix", "parses nothing"), "node:test, spec reporter"),
            Case("node_test_junit", "node", NODE, ["node", "--test", "--test-reporter=junit"],
                 Expect("type_error", "auto_fix", "test.parses nothing"),
                 "node:test's own JUnit reporter", suffix=".xml"),
            Case("node_import_error", "node", NODE_IMPORT, ["node", "--test"],
                 Expect("import_error", "fix_environment", None), "a package that is not installed"),
            Case("node_timeout", "node", NODE_TIMEOUT, ["node", "--test", "--test-reporter=tap"],
                 Expect("timeout", "optimize", "drains the queue"), "a test over its timeout"),
        ]
    if shutil.which("cargo"):
        cargo = ["cargo", "test", "--offline"]
        found += [
            Case("cargo_panic", "cargo", CARGO_PANIC, cargo,
                 Expect("assertion_error", "manual_review", "tests::area_of_square"),
                 "assert_eq! panics"),
            Case("cargo_type_error", "cargo", CARGO_TYPE, cargo,
                 Expect("type_error", "auto_fix", None), "mismatched types (E0308)"),
            Case("cargo_unresolved_import", "cargo", CARGO_IMPORT, cargo,
                 Expect("import_error", "auto_fix", None), "an unresolved import (E0432)"),
        ]
    if shutil.which("gcc"):
        found.append(Case("c_segfault", "bash", C_SEGFAULT, ["bash", "run.sh"],
                          Expect("crash", "manual_review", None),
                          "a C program reading a null pointer, run by bash"))
    return found


# --- CI logs: the same real tools, laid out as a CI system stores their output --------------------

START = datetime(2024, 5, 14, 9, 30, 0, tzinfo=UTC)


class LogWriter:
    """Lines stamped the way a CI system stamps them, on a clock that advances 7 ms a line."""

    def __init__(self, style: str) -> None:
        self.style = style
        self.now = START
        self.lines: list[str] = []

    def _stamp(self) -> str:
        self.now += timedelta(milliseconds=7)
        if self.style == "github":
            return self.now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z "
        if self.style == "jenkins":
            return "[" + self.now.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z] "
        return ""

    def add(self, text: str) -> None:
        for line in text.splitlines():
            self.lines.append(self._stamp() + line)

    def step(self, title: str, output: str, *, failed: bool) -> None:
        stamp = int(self.now.timestamp())
        if self.style == "github":
            self.add(f"##[group]Run {title}")
            self.add(output)
            self.add("##[endgroup]")
            if failed:
                self.add("##[error]Process completed with exit code 1.")
        elif self.style == "gitlab":
            name = title.split(maxsplit=1)[0].replace("-", "_")
            self.lines.append(f"\x1b[0Ksection_start:{stamp}:{name}\r\x1b[0K\x1b[36;1m$ {title}\x1b[0;m")
            self.add(output)
            self.lines.append(f"\x1b[0Ksection_end:{stamp + 3}:{name}\r\x1b[0K")
        else:
            self.add(f"+ {title}")
            self.add(output)

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


@dataclass
class LogCase:
    name: str
    style: str
    steps: list[tuple[str, dict[str, str], list[str]]]
    """(shown command, project files, argv) per step."""
    expect: Expect
    note: str


def log_cases() -> list[LogCase]:
    color = ["--color=yes"]
    return [
        LogCase("ci_github_two_runs", "github", [
            ("python -m pip --version", {}, [PYTHON, "-m", "pip", "--version"]),
            ("pytest tests/unit", ASSERTS, _pytest(*color)),
            ("pytest tests/integration", TIMEOUTS, _pytest(*color, "--timeout-method=signal")),
        ], Expect("timeout", "optimize", "tests/test_slow.py::test_sync_waits_forever"),
            "GitHub Actions log: timestamps, groups, colours, two pytest runs"),
        LogCase("ci_github_pip_then_tests", "github", [
            ("pip install matplotlib-pitstop-absent==99", {}, [
                *PIP_OFFLINE, "--find-links", "empty-index", "matplotlib-pitstop-absent==99"]),
            ("pytest", THIRD_PARTY, _pytest(*color)),
        ], Expect("dependency_error", "fix_environment", None),
            "the install failed, so the import of the package fails too"),
        LogCase("ci_gitlab_unittest", "gitlab", [
            ("python -m unittest discover", UNITTEST_FAIL,
             [PYTHON, "-m", "unittest", "discover", "-s", "tests", "-t", "."]),
        ], Expect("type_error", "auto_fix", "tests.test_unit_prices.PriceTests.test_items_type"),
            "GitLab log: section markers, carriage returns, colours"),
        LogCase("ci_jenkins_segfault", "jenkins", [
            ("pytest -v", SEGFAULT, _pytest("-v", *color)),
        ], Expect("crash", "manual_review", "tests/test_native.py::test_reads_null_pointer"),
            "Jenkins timestamper prefixes, a crash"),
    ]


# --- driver ---------------------------------------------------------------------------------------

def _run_case(case: Case, manifest: dict[str, Any]) -> None:
    root = WORK / case.name
    _build(root, case.files)
    root.mkdir(parents=True, exist_ok=True)
    if case.prepare:
        case.prepare(root)
    env = _env(case.env)
    if case.tool == "cargo":
        env["CARGO_TARGET_DIR"] = str(WORK / "cargo-target")
    argv = list(case.argv)
    output = _run(argv, root, env)
    (CORPUS / f"{case.name}{case.suffix}").write_text(output)
    manifest[f"{case.name}{case.suffix}"] = _entry(case.expect, case, " ".join(argv))
    if case.junit is not None:
        _build(root, case.files)
        _run([*argv, "--junitxml=report.xml"], root, env)
        xml = (root / "report.xml").read_text()
        (CORPUS / f"{case.name}.xml").write_text(xml)
        manifest[f"{case.name}.xml"] = _entry(case.junit, case, " ".join(argv) + " --junitxml")


def _entry(expect: Expect, case: Case | LogCase, command: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"category": expect.category, "action": expect.action,
                             "test_id": expect.test_id, "note": case.note,
                             "command": command.replace(PYTHON, "python")}
    if isinstance(case, Case):
        entry["tool"] = case.tool
        if case.config:
            entry["config"] = case.config
    else:
        entry["tool"] = f"ci-{case.style}"
    return entry


def _run_log_case(case: LogCase, manifest: dict[str, Any]) -> None:
    writer = LogWriter(case.style)
    for number, (title, files, argv) in enumerate(case.steps):
        root = WORK / f"{case.name}-{number}"
        _build(root, files)
        root.mkdir(parents=True, exist_ok=True)
        _empty_index(root)
        output = _run(argv, root, _env(color=True))
        failed = any(word in output for word in ("failed", "ERROR", "Error", "Fatal"))
        writer.step(title, output, failed=failed)
    (CORPUS / f"{case.name}.log").write_text(writer.text())
    manifest[f"{case.name}.log"] = _entry(case.expect, case, " && ".join(s[0] for s in case.steps))


def main() -> int:
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    CORPUS.mkdir(exist_ok=True)
    manifest: dict[str, Any] = {}
    for case in [*cases(), *other_cases()]:
        print(f"  {case.name}", file=sys.stderr)
        _run_case(case, manifest)
    for log_case in log_cases():
        print(f"  {log_case.name}", file=sys.stderr)
        _run_log_case(log_case, manifest)
    (CORPUS / "MANIFEST.json").write_text(json.dumps(dict(sorted(manifest.items())), indent=2) + "\n")
    print(f"wrote {len(manifest)} files to {CORPUS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
