"""Acceptance: a corpus of malicious diffs is refused before any file changes.

Each diff goes through the whole validator against a sample repository that holds traps (a
symlink out of the tree, a symlink to /tmp, a submodule). After each one the repository (``.git``
included), its remote and the directory beside it hash the same as before, and no worktree was
left (none was even needed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pitstop.kernel.constants import PATCH_WORKTREES_DIR
from pitstop.patches import PatchRequest, PatchValidator
from tests.patches.corpus import CORPUS
from tests.patches.sample import Sample, git, make_sample, patches_config, tree_digest

pytestmark = pytest.mark.timeout(60)


@dataclass
class Trapped:
    sample: Sample
    outside: Path
    state: Path
    validator: PatchValidator

    def digests(self) -> tuple[str, str, str]:
        return (tree_digest(self.sample.path), tree_digest(self.sample.remote),
                tree_digest(self.outside))


@pytest.fixture(scope="module")
def trapped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trapped]:
    root = tmp_path_factory.mktemp("corpus")
    sample = make_sample(root)
    outside = root / "outside"
    outside.mkdir()
    (outside / "victim.txt").write_text("keep\n")
    os.symlink("../outside", sample.path / "docs")
    os.symlink("/tmp", sample.path / "escape")
    git(sample.path, "add", "docs", "escape")
    git(sample.path, "update-index", "--add", "--cacheinfo",
        "160000,1234567890123456789012345678901234567890,vendor/lib")
    git(sample.path, "commit", "-q", "-m", "traps")
    git(sample.path, "push", "-q", "origin", "HEAD:main")
    git(sample.path, "fetch", "-q", "origin")
    git(sample.path, "update-ref", "refs/heads/main", "HEAD")
    state = root / "state"
    validator = PatchValidator(patches_config(sample), state_dir=state, redis_client=None)
    yield Trapped(sample, outside, state, validator)


def test_the_corpus_is_large_enough() -> None:
    assert len(CORPUS) >= 50


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_malicious_diff_is_refused_before_any_write(trapped: Trapped, name: str) -> None:
    before = trapped.digests()
    outcome = trapped.validator.validate(PatchRequest(repo="sample", patch=CORPUS[name]))
    assert outcome.result == "rejected", outcome.to_dict()
    assert outcome.refusals, f"{name}: rejected without a safety refusal: {outcome.reasons}"
    assert outcome.method is None and outcome.commit is None
    assert trapped.digests() == before
    worktrees = trapped.state / PATCH_WORKTREES_DIR
    assert not worktrees.exists() or not any(worktrees.iterdir())
    assert not Path("/tmp/pitstop-pwned").exists()
    assert (trapped.outside / "victim.txt").read_text() == "keep\n"
