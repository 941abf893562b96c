"""Applying on a moved base (3-way, conflicts named by file and hunk) and the review queue's
decisions (approve lands through the merge lane, reject deletes the branch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from pitstop.bus.eventbus import EventBus
from pitstop.kernel.errors import ValidationError
from pitstop.patches import PatchRequest, PatchValidator
from tests.patches.sample import CALC, Sample, git, make_sample, patches_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

TESTS_ONLY = {"tests": {"kind": "pytest", "weight": 100,
                        "command": ["{python}", "-m", "pytest", "-q", "-rf", "-p",
                                    "no:cacheprovider"],
                        "env": {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}}}


@pytest.fixture
def sample(tmp_path: Path) -> Sample:
    return make_sample(tmp_path)


def validator(tmp_path: Path, client: redis.Redis, sample: Sample, **repo: Any) -> PatchValidator:
    return PatchValidator(patches_config(sample, checks=TESTS_ONLY, **repo),
                          state_dir=tmp_path / "state", redis_client=client, bus=EventBus(client),
                          environ={})


def move_main(sample: Sample, tmp_path: Path, content: str) -> str:
    moved = sample.push_commit("calc.py", content, scratch=tmp_path)
    git(sample.path, "fetch", "-q", "origin")
    return moved


def test_a_patch_that_only_applies_three_way_is_recorded_and_scored_lower(
        tmp_path: Path, sample: Sample, redis_client: redis.Redis) -> None:
    patch = sample.patch({"calc.py": CALC.replace("return a - b", "return -(b - a)")},
                         scratch=tmp_path)
    # main moves: a line inside the hunk's context changes, far enough for a clean 3-way merge
    move_main(sample, tmp_path, CALC.replace("return a + b\n\n\n", "return a + b\n\n# sub:\n"))
    outcome = validator(tmp_path, redis_client, sample).validate(
        PatchRequest(repo="sample", patch=patch))
    assert outcome.method == "3way", outcome.conflicts
    assert outcome.score == 90.0 and outcome.decision == "pr"
    assert any("--3way" in reason for reason in outcome.reasons)


def test_a_patch_that_does_not_apply_names_the_file_and_hunk(
        tmp_path: Path, sample: Sample, redis_client: redis.Redis) -> None:
    patch = sample.patch({"calc.py": CALC.replace("return a - b", "return -(b - a)")},
                         scratch=tmp_path)
    move_main(sample, tmp_path, CALC.replace("return a - b", "return a + -b"))
    outcome = validator(tmp_path, redis_client, sample).validate(
        PatchRequest(repo="sample", patch=patch))
    assert outcome.result == "rejected" and outcome.method is None
    assert outcome.conflicts and all("calc.py" in c for c in outcome.conflicts)
    assert not outcome.refusals
    (event,) = EventBus(redis_client).replay(pattern="patch.*")
    assert event.type == "patch.rejected"


def test_approving_a_review_lands_it_through_the_lane(tmp_path: Path, sample: Sample,
                                                      redis_client: redis.Redis) -> None:
    checker = validator(tmp_path, redis_client, sample)
    broken = sample.patch({"calc.py": CALC + "\n\ndef neg(a: int) -> int:\n    return -a\n",
                           ".github/workflows/ci.yml": "on: push\n"}, scratch=tmp_path)
    outcome = checker.validate(PatchRequest(repo="sample", patch=broken))
    assert outcome.result == "review_queued"
    review_id = outcome.landing["review_id"]
    moved = sample.push_commit("NOTES.md", "moved\n", scratch=tmp_path)  # approved later: re-test

    done = checker.approve(review_id[-8:], by="alice")

    assert done["status"] == "landed"
    landing = done["landing"]
    assert landing["retested"] is True and landing["target_head"] == moved
    assert sample.remote_head() == landing["merged"]
    assert sample.file_at("main", ".github/workflows/ci.yml", remote=True) == "on: push"
    assert git(sample.path, "branch", "--list", "pitstop/*") == ""
    assert [h["status"] for h in done["history"]] == ["approved", "landed"]
    types = [e.type for e in EventBus(redis_client).replay(pattern="patch.*")]
    assert types == ["patch.review_queued", "patch.merged"]
    with pytest.raises(ValidationError, match="landed"):
        checker.approve(review_id, by="bob")


def test_rejecting_a_review_needs_a_reason_and_deletes_its_branch(
        tmp_path: Path, sample: Sample, redis_client: redis.Redis) -> None:
    checker = validator(tmp_path, redis_client, sample)
    patch = sample.patch({"calc.py": CALC.replace("a + b", "a - b")}, scratch=tmp_path)
    outcome = checker.validate(PatchRequest(repo="sample", patch=patch))
    review_id = outcome.landing["review_id"]
    branch = outcome.landing["branch"]
    assert git(sample.path, "branch", "--list", "pitstop/*").strip().endswith(branch)
    with pytest.raises(ValidationError, match="reason"):
        checker.reject(review_id, reason=" ", by="alice")
    doc = checker.reject(review_id, reason="breaks add", by="alice")
    assert doc["status"] == "rejected" and doc["reason"] == "breaks add"
    assert git(sample.path, "branch", "--list", "pitstop/*") == ""
    assert checker.reviews().list() == []
    rejected = list(EventBus(redis_client).replay(pattern="patch.rejected"))
    assert rejected[-1].data["reason"] == "breaks add"


def test_two_patches_landing_at_once_take_turns_in_the_lane(
        tmp_path: Path, sample: Sample, redis_client: redis.Redis) -> None:
    import threading

    patches = [sample.patch({"calc.py": CALC + "\n\ndef neg(a: int) -> int:\n    return -a\n"},
                            scratch=tmp_path),
               sample.patch({"div.py": "def div(a: int, b: int) -> float:\n    return a / b\n"},
                            scratch=tmp_path)]
    outcomes: list[Any] = [None, None]

    def land(index: int) -> None:
        outcomes[index] = validator(tmp_path, redis_client, sample).validate(
            PatchRequest(repo="sample", patch=patches[index]))

    threads = [threading.Thread(target=land, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [o.result for o in outcomes] == ["merged", "merged"], [o.reasons for o in outcomes]
    assert sorted(o.landing["retested"] for o in outcomes) == [False, True]
    assert "def neg" in sample.file_at("main", "calc.py", remote=True)
    assert "def div" in sample.file_at("main", "div.py", remote=True)
    assert sample.head() == sample.remote_head()


def test_a_busy_lane_makes_a_landing_wait_then_give_up(redis_client: redis.Redis) -> None:
    from pitstop.kernel.errors import LandingFailed
    from pitstop.patches import MergeLane

    lane = MergeLane(redis_client, wait=0.3)
    with lane.hold("app", "main"), pytest.raises(LandingFailed, match="stayed busy"), \
            lane.hold("app", "main"):
        pass  # pragma: no cover - the second hold never gets the lane
    with lane.hold("app", "release"), lane.hold("other", "main"):
        assert redis_client.exists(MergeLane.key("app", "release"))
    assert not redis_client.exists(MergeLane.key("app", "main"))
