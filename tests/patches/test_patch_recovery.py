"""Error recovery, chained through the step kinds: ``fix_lint`` → ``validate_patch`` → landed.

The workstream engine runs these steps from ``config/workstreams.yaml``; here each step kind is
executed directly with a :class:`StepContext` as the engine builds it, so the chain is tested on
its own: ruff fixes the sample's lint errors into a diff, the diff is validated with the real
checks and auto-merged onto the branch and its remote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import redis
import yaml

from pitstop.bus.eventbus import EventBus
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.settings import load_settings
from pitstop.workstreams.steps import StepContext, get_step_kind
from tests.patches.sample import CALC, Sample, git, make_sample, sample_checks

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def context(tmp_path: Path, client: redis.Redis, kind: str, params: dict[str, Any],
            step_id: str) -> StepContext:
    settings = load_settings(tmp_path / "home" / "config",
                             environ={"PITSTOP_STATE_DIR": str(tmp_path / "home" / ".state")})
    model: type[pydantic.BaseModel] = get_step_kind(kind).params_model
    return StepContext(run_id="run-1", workstream_id="WS-ERROR-RECOVERY", step_id=step_id,
                       attempt=1, params=model.model_validate(params), event=None,
                       trace_id=None, hops=0, timeout=60.0, settings=settings, redis=client,
                       bus=EventBus(client), redactor=Redactor())


@pytest.fixture
def sample(tmp_path: Path) -> Sample:
    sample = make_sample(tmp_path)
    sample.push_commit("calc.py", "import sys\nimport os\n" + CALC, scratch=tmp_path)
    git(sample.path, "fetch", "-q", "origin")
    git(sample.path, "update-ref", "refs/heads/main", "refs/remotes/origin/main")
    config = {"repos": {"sample": {"path": str(sample.path), "target": "main",
                                   "checks": sample_checks()}}}
    (tmp_path / "home" / "config").mkdir(parents=True)
    (tmp_path / "home" / "config" / "patches.yaml").write_text(yaml.safe_dump(config))
    return sample


def test_fix_validate_land(tmp_path: Path, sample: Sample, redis_client: redis.Redis) -> None:
    assert get_step_kind("validate_patch").name == "validate_patch"
    fixed = get_step_kind("fix_lint").execute(
        context(tmp_path, redis_client, "fix_lint", {"repo": "sample"}, "fix"))
    assert fixed.status == "succeeded", fixed.message
    assert fixed.outputs["has_changes"] and fixed.outputs["files"] == ["calc.py"]
    assert "-import sys" in fixed.outputs["patch"]

    validated = get_step_kind("validate_patch").execute(context(
        tmp_path, redis_client, "validate_patch",
        {"repo": "sample", "patch": fixed.outputs["patch"], "base": fixed.outputs["base_sha"],
         "title": "pitstop: ruff --fix"}, "validate"))

    assert validated.status == "succeeded", validated.message
    assert validated.outputs["result"] == "merged" and validated.outputs["score"] == 100.0
    landed = sample.file_at("main", "calc.py", remote=True)
    assert "import sys" not in landed and "import os" not in landed
    assert sample.head() == sample.remote_head() == validated.outputs["merged"]
    assert git(sample.path, "log", "-1", "--format=%s", "main") == "pitstop: ruff --fix"


def test_nothing_to_fix_gives_an_empty_patch_and_validate_skips_it(
        tmp_path: Path, sample: Sample, redis_client: redis.Redis) -> None:
    clean = sample.push_commit("calc.py", CALC, scratch=tmp_path)
    fixed = get_step_kind("fix_lint").execute(
        context(tmp_path, redis_client, "fix_lint", {"repo": "sample"}, "fix"))
    assert fixed.status == "succeeded" and not fixed.outputs["has_changes"]
    assert fixed.outputs["base_sha"] == clean
    validated = get_step_kind("validate_patch").execute(context(
        tmp_path, redis_client, "validate_patch", {"repo": "sample", "patch": ""}, "validate"))
    assert validated.status == "succeeded"
    assert validated.outputs["result"] == "nothing_to_do"
