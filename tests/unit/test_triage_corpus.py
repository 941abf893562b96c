"""The generated corpus (real output of real tools, tests/triage/make_corpus.py): every file's
first group has the category, action and test id its project was built to show."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pitstop.triage import Category, TestTriage, TriageConfig
from pitstop.triage.model import PRECEDENCE

pytestmark = pytest.mark.timeout(60)

CORPUS = Path(__file__).resolve().parents[1] / "triage" / "corpus"
MANIFEST: dict[str, dict[str, Any]] = json.loads((CORPUS / "MANIFEST.json").read_text())


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_first_group_is_what_the_project_shows(name: str) -> None:
    expected = MANIFEST[name]
    triage = TestTriage(TriageConfig(**expected.get("config", {})))
    _, results = triage.triage_file(CORPUS / name)
    assert results, f"{name}: no failure found"
    first = results[0]
    assert (first.category, first.action) == (expected["category"], expected["action"]), \
        f"{name}: {first.to_dict()}"
    if expected["test_id"] is not None:
        assert first.test_id == expected["test_id"]
    assert first.evidence and first.evidence[0]
    assert first.auto_fixable == (expected["action"] == "auto_fix")


def test_the_corpus_covers_every_category_and_tool() -> None:
    shown = {entry["category"] for entry in MANIFEST.values()}
    wanted = {str(category) for category in PRECEDENCE if category is not Category.UNKNOWN}
    assert wanted | {"known_flaky"} <= shown
    tools = {entry["tool"] for entry in MANIFEST.values()}
    assert {"pytest", "unittest", "pip", "ci-github", "ci-gitlab", "ci-jenkins"} <= tools
    assert any(name.endswith(".xml") for name in MANIFEST)
    actions = {entry["action"] for entry in MANIFEST.values()}
    assert actions == {"auto_fix", "manual_review", "optimize", "skip_and_log",
                       "fix_environment", "retry"}


@pytest.mark.parametrize(("name", "beaten"), [
    ("pytest_import_thirdparty.txt", Category.COLLECTION_ERROR),   # import beats collection
    ("pytest_syntax_error.txt", Category.COLLECTION_ERROR),       # syntax beats collection
    ("unittest_syntax_error.txt", Category.IMPORT_ERROR),         # syntax beats import
    ("pytest_timeout_then_assert.txt", Category.ASSERTION_ERROR),  # timeout beats assertion
    ("pytest_fixture_import.txt", Category.FIXTURE_ERROR),        # import beats fixture
    ("pip_connection_refused.txt", Category.DEPENDENCY_ERROR),    # network beats install
    ("unittest_import_error.txt", Category.COLLECTION_ERROR),
])
def test_precedence_rules_on_real_output(name: str, beaten: Category) -> None:
    _, results = TestTriage().triage_file(CORPUS / name)
    assert beaten in results[0].signals and results[0].category is not beaten
    assert results[0].category.value == MANIFEST[name]["category"]


def test_environment_and_code_are_told_apart() -> None:
    env = TestTriage().triage_file(CORPUS / "pytest_import_thirdparty.txt")[1][0]
    code = TestTriage().triage_file(CORPUS / "pytest_import_project_module.txt")[1][0]
    assert env.environment and env.action == "fix_environment" and not env.auto_fixable
    assert not code.environment and code.action == "auto_fix" and code.auto_fixable
    assert code.error == "ModuleNotFoundError: No module named 'app.exporter'"


def test_ci_logs_are_cleaned_and_split_per_test() -> None:
    _, results = TestTriage().triage_file(CORPUS / "ci_github_two_runs.log")
    ids = [result.test_id for result in results]
    assert len(ids) == 6 and len(set(ids)) == 6  # two runs in one log, one result per test
    assert all("\x1b" not in line and "##[" not in line and not line[:4].isdigit()
               for result in results for line in result.evidence)
    timeout = results[0]
    assert timeout.location is not None and timeout.location.file == "tests/test_slow.py"
