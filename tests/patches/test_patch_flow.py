"""Acceptance: patches on a sample repository, real git and real tools, real Redis.

A correct fix is auto-merged (target branch and its bare remote contain it); a patch breaking a
test goes to manual review naming the test; a lint error scores below 95 and opens a PR against a
local stand-in for the GitHub API; a workflow edit goes to review whatever its score; a target
that moved during validation is re-tested before merging. After every outcome the worktree is
gone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from pitstop.bus.eventbus import EventBus
from pitstop.kernel.constants import LOG_PATCH_DECISIONS, PATCH_WORKTREES_DIR
from pitstop.kernel.statelog import read_log
from pitstop.patches import PatchOutcome, PatchRequest, PatchValidator, ReviewQueue
from pitstop.patches.config import PatchesConfig
from tests.patches.github_standin import github_standin
from tests.patches.sample import CALC, Sample, git, make_sample, patches_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

MUL = CALC + "\n\ndef mul(a: int, b: int) -> int:\n    return a * b\n"
MUL_TEST = "from calc import mul\n\n\ndef test_mul() -> None:\n    assert mul(2, 3) == 6\n"


@pytest.fixture
def sample(tmp_path: Path) -> Sample:
    return make_sample(tmp_path)


def make_validator(tmp_path: Path, client: redis.Redis, config: PatchesConfig, *,
                   environ: dict[str, str] | None = None,
                   on_phase: Callable[[str], None] | None = None) -> PatchValidator:
    return PatchValidator(config, state_dir=tmp_path / "state", redis_client=client,
                          bus=EventBus(client), environ=environ or {}, on_phase=on_phase)


def events(client: redis.Redis, pattern: str = "patch.*") -> list[Any]:
    return list(EventBus(client).replay(pattern=pattern))


def assert_clean(tmp_path: Path, sample: Sample) -> None:
    worktrees = tmp_path / "state" / PATCH_WORKTREES_DIR
    assert not worktrees.exists() or not any(worktrees.iterdir())
    listed = git(sample.path, "worktree", "list", "--porcelain")
    assert listed.count("worktree ") == 1, listed


def validate(validator: PatchValidator, patch: bytes, **kw: Any) -> PatchOutcome:
    return validator.validate(PatchRequest(repo="sample", patch=patch, **kw))


def test_a_correct_fix_is_auto_merged(tmp_path: Path, sample: Sample,
                                      redis_client: redis.Redis) -> None:
    validator = make_validator(tmp_path, redis_client, patches_config(sample))
    base = sample.head()
    patch = sample.patch({"calc.py": MUL, "tests/test_mul.py": MUL_TEST}, scratch=tmp_path)

    outcome = validate(validator, patch)

    assert outcome.result == "merged", outcome.reasons
    assert outcome.score == 100.0 and outcome.method == "apply"
    assert [c.status for c in outcome.checks] == ["passed"] * 5
    assert "def mul" in sample.file_at("main", "calc.py", remote=True)
    assert sample.remote_head() == sample.head() == outcome.landing["merged"]
    assert git(sample.path, "rev-parse", f"{outcome.landing['merged']}~1") == base
    assert not outcome.landing["retested"]
    assert git(sample.path, "branch", "--list", "pitstop/*") == ""
    (event,) = events(redis_client)
    assert event.type == "patch.merged" and event.data["merged"] == outcome.landing["merged"]
    (record,) = [r for r in read_log(LOG_PATCH_DECISIONS, tmp_path / "state")
                 if r.get("event") == "decision"]
    assert record["patch_hash"] == outcome.patch_hash and record["base_sha"] == base
    assert record["decision"] == "auto_merge" and record["method"] == "apply"
    assert {c["name"]: c["status"] for c in record["checks"]} == {
        "tests": "passed", "lint": "passed", "types": "passed", "security": "passed",
        "coverage": "passed"}
    assert all(c["duration"] > 0 for c in record["checks"])
    assert record["gates"] == {"tests_pass": True, "applies_cleanly": True,
                               "no_protected_paths": True, "no_high_severity": True}
    assert_clean(tmp_path, sample)


def test_a_test_breaking_patch_goes_to_review_naming_the_test(
        tmp_path: Path, sample: Sample, redis_client: redis.Redis) -> None:
    validator = make_validator(tmp_path, redis_client, patches_config(sample))
    before = sample.remote_head()
    patch = sample.patch({"calc.py": CALC.replace("return a + b", "return a - b")},
                         scratch=tmp_path)

    outcome = validate(validator, patch)

    assert outcome.result == "review_queued"
    assert outcome.gates["tests_pass"] is False
    assert any("tests/test_calc.py::test_add" in reason for reason in outcome.reasons)
    tests = outcome.checks[0]
    assert tests.status == "failed" and "tests/test_calc.py::test_add" in tests.summary
    assert sample.remote_head() == before
    review = ReviewQueue(redis_client).get(outcome.landing["review_id"])
    assert review["status"] == "pending" and review["commit"] == outcome.commit
    assert git(sample.path, "rev-parse", f"refs/heads/{review['branch']}") == outcome.commit
    (event,) = events(redis_client)
    assert event.type == "patch.review_queued"
    assert_clean(tmp_path, sample)


def test_a_lint_error_scores_below_95_and_opens_a_pr(tmp_path: Path, sample: Sample,
                                                     redis_client: redis.Redis) -> None:
    with github_standin() as github:
        config = patches_config(sample, github={"repository": "o/r", "api_url": github.url})
        validator = make_validator(tmp_path, redis_client, config,
                                   environ={"GITHUB_TOKEN": "ghp_standintoken123"})
        patch = sample.patch({"calc.py": "import os\n" + MUL, "tests/test_mul.py": MUL_TEST},
                             scratch=tmp_path)

        outcome = validate(validator, patch)

    assert outcome.result == "pr_opened", outcome.reasons
    assert outcome.score == 80.0 and outcome.decision == "pr"
    lint = outcome.checks[1]
    assert lint.status == "failed" and any("F401" in d for d in lint.details)
    branch = outcome.landing["branch"]
    assert sample.remote_head() == git(sample.path, "rev-parse", "refs/heads/main")
    assert git(sample.remote, "rev-parse", f"refs/heads/{branch}") == outcome.commit
    pulls, labels, graphql = github.requests
    assert pulls.path == "/repos/o/r/pulls"
    assert pulls.body["head"] == branch and pulls.body["base"] == "main"
    assert "| lint | failed |" in pulls.body["body"] and "80.0%" in pulls.body["body"]
    assert pulls.headers["Authorization"] == "Bearer ghp_standintoken123"
    assert labels.path == "/repos/o/r/issues/7/labels" and labels.body == {"labels": ["pitstop"]}
    assert graphql.path == "/graphql"
    assert "enablePullRequestAutoMerge" in graphql.body["query"]
    assert graphql.body["variables"] == {"id": "PR_node7", "method": "SQUASH"}
    assert outcome.landing["pr"] == {"number": 7, "url": "https://github.example/o/r/pull/7",
                                     "auto_merge": True, "notes": []}
    (event,) = events(redis_client)
    assert event.type == "patch.pr_opened"
    assert "ghp_standintoken123" not in json.dumps(event.data)
    log_text = (tmp_path / "state" / f"{LOG_PATCH_DECISIONS}.jsonl").read_text()
    assert "ghp_standintoken123" not in log_text
    assert_clean(tmp_path, sample)


def test_without_a_token_the_branch_is_pushed_and_the_decision_says_so(
        tmp_path: Path, sample: Sample, redis_client: redis.Redis) -> None:
    validator = make_validator(tmp_path, redis_client, patches_config(sample))
    patch = sample.patch({"calc.py": "import os\n" + MUL, "tests/test_mul.py": MUL_TEST},
                         scratch=tmp_path)

    outcome = validate(validator, patch)

    assert outcome.result == "pr_opened" and outcome.landing["pr"] is None
    assert any("no GitHub token in GITHUB_TOKEN" in reason for reason in outcome.reasons)
    branch = outcome.landing["branch"]
    assert git(sample.remote, "rev-parse", f"refs/heads/{branch}") == outcome.commit


def test_a_workflow_edit_goes_to_review_whatever_its_score(
        tmp_path: Path, sample: Sample, redis_client: redis.Redis) -> None:
    validator = make_validator(tmp_path, redis_client, patches_config(sample))
    patch = sample.patch({".github/workflows/ci.yml": "on: push\njobs: {}\n"}, scratch=tmp_path)

    outcome = validate(validator, patch)

    assert outcome.score == 100.0
    assert outcome.result == "review_queued"
    assert outcome.gates["no_protected_paths"] is False
    assert outcome.protected == {".github/workflows/ci.yml": ".github/workflows/**"}
    assert any("protected" in reason for reason in outcome.reasons)
    assert_clean(tmp_path, sample)


def test_a_target_that_moved_during_validation_is_retested_before_merging(
        tmp_path: Path, sample: Sample, redis_client: redis.Redis) -> None:
    moved: list[str] = []

    def on_phase(phase: str) -> None:
        if phase == "checks":  # someone pushes to main while the checks run
            moved.append(sample.push_commit("NOTES.md", "moved\n", scratch=tmp_path))

    validator = make_validator(tmp_path, redis_client, patches_config(sample), on_phase=on_phase)
    base = sample.head()
    patch = sample.patch({"calc.py": MUL, "tests/test_mul.py": MUL_TEST}, scratch=tmp_path)

    outcome = validate(validator, patch)

    assert outcome.result == "merged", outcome.reasons
    assert outcome.base_sha == base
    landing = outcome.landing
    assert landing["retested"] is True and landing["target_head"] == moved[0]
    assert landing["retest"]["status"] == "passed"
    merged = landing["merged"]
    assert sample.remote_head() == merged == sample.head()
    assert git(sample.path, "rev-parse", f"{merged}~1") == moved[0]
    assert sample.file_at("main", "NOTES.md", remote=True) == "moved"
    assert "def mul" in sample.file_at("main", "calc.py", remote=True)
    assert_clean(tmp_path, sample)


def test_a_moved_target_that_breaks_the_patch_stops_the_merge(
        tmp_path: Path, sample: Sample, redis_client: redis.Redis) -> None:
    def on_phase(phase: str) -> None:
        if phase == "checks":  # main now expects mul(2, 3) == 7: the patch's mul fails there
            sample.push_commit("tests/test_mul_contract.py",
                               "from calc import mul\n\n\ndef test_contract() -> None:\n"
                               "    assert mul(2, 3) == 7\n", scratch=tmp_path)

    validator = make_validator(tmp_path, redis_client, patches_config(sample), on_phase=on_phase)
    patch = sample.patch({"calc.py": MUL, "tests/test_mul.py": MUL_TEST}, scratch=tmp_path)

    outcome = validate(validator, patch)

    assert outcome.decision == "auto_merge" and outcome.result == "review_queued"
    assert any("tests fail on the current head" in reason for reason in outcome.reasons)
    assert "def mul" not in sample.file_at("main", "calc.py", remote=True)
    assert_clean(tmp_path, sample)


def test_a_repository_declared_by_url_is_mirrored_and_landed_on_the_url(
        tmp_path: Path, sample: Sample, redis_client: redis.Redis) -> None:
    config = PatchesConfig.model_validate({"repos": {"sample": {
        "url": f"file://{sample.remote}", "target": "main",
        "checks": patches_config(sample).repos["sample"].checks}}})
    validator = make_validator(tmp_path, redis_client, config)
    patch = sample.patch({"calc.py": MUL, "tests/test_mul.py": MUL_TEST}, scratch=tmp_path)
    before = sample.head()

    outcome = validate(validator, patch)

    assert outcome.result == "merged", outcome.reasons
    assert "def mul" in sample.file_at("main", "calc.py", remote=True)
    assert sample.head() == before  # the local clone is not the one declared
    mirror = tmp_path / "state" / "patches" / "mirrors" / "sample.git"
    assert git(mirror, "rev-parse", "refs/remotes/origin/main") == sample.remote_head()
