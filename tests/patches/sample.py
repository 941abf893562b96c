"""A tiny sample repository with a bare remote, patches made against it, tree hashes, and a
pitstop project whose patches config names it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pitstop.patches.config import PatchesConfig, default_checks

CALC = '''\
"""A tiny module the sample tests cover."""


def add(a: int, b: int) -> int:
    return a + b


def sub(a: int, b: int) -> int:
    return a - b
'''

TESTS = '''\
from calc import add, sub


def test_add() -> None:
    assert add(1, 2) == 3


def test_sub() -> None:
    assert sub(3, 1) == 2
'''

PYPROJECT = '''\
[tool.ruff]
line-length = 100

[tool.ruff.lint]
select = ["E", "F", "I"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@localhost", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@localhost", "GIT_CONFIG_NOSYSTEM": "1"}


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    return subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=env,
                          check=True, capture_output=True, text=True).stdout.strip()


@dataclass
class Sample:
    path: Path
    """The repository pitstop works in (HEAD detached: main is not checked out)."""
    remote: Path
    """Its bare ``origin``."""

    def head(self, branch: str = "main") -> str:
        return git(self.path, "rev-parse", f"refs/heads/{branch}")

    def remote_head(self, branch: str = "main") -> str:
        return git(self.remote, "rev-parse", f"refs/heads/{branch}")

    def file_at(self, ref: str, path: str, *, remote: bool = False) -> str:
        return git(self.remote if remote else self.path, "show", f"{ref}:{path}")

    def patch(self, edits: dict[str, str | None], *, scratch: Path) -> bytes:
        """The diff (git format, binary-safe) making ``edits`` on main: content, or None to delete."""
        clone = scratch / f"clone-{len(list(scratch.glob('clone-*')))}"
        git(scratch, "clone", "-q", str(self.remote), str(clone))
        for name, content in edits.items():
            target = clone / name
            if content is None:
                target.unlink()
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(textwrap.dedent(content))
        git(clone, "add", "-A")
        env = {**os.environ, **GIT_ENV}
        return subprocess.run(["git", "diff", "--cached", "--binary"], cwd=clone, env=env,
                              check=True, capture_output=True).stdout

    def push_commit(self, name: str, content: str, *, scratch: Path, branch: str = "main") -> str:
        """Someone else moves ``branch`` on the remote: a commit adding ``name``."""
        clone = scratch / f"mover-{len(list(scratch.glob('mover-*')))}"
        git(scratch, "clone", "-q", "-b", branch, str(self.remote), str(clone))
        (clone / name).write_text(content)
        git(clone, "add", "-A")
        git(clone, "commit", "-q", "-m", f"add {name}")
        git(clone, "push", "-q", "origin", f"HEAD:{branch}")
        return git(clone, "rev-parse", "HEAD")


def make_sample(root: Path, *, remote: bool = True) -> Sample:
    path = root / "sample"
    (path / "tests").mkdir(parents=True)
    (path / "calc.py").write_text(CALC)
    (path / "tests" / "test_calc.py").write_text(TESTS)
    (path / "pyproject.toml").write_text(PYPROJECT)
    (path / "conftest.py").write_text("")
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "sample")
    bare = root / "remote.git"
    if remote:
        git(root, "init", "-q", "--bare", str(bare))
        git(path, "remote", "add", "origin", str(bare))
        git(path, "push", "-q", "origin", "main")
        git(path, "fetch", "-q", "origin")
    git(path, "checkout", "-q", "--detach")
    return Sample(path, bare)


def tree_digest(root: Path) -> str:
    """A hash of every file, directory, symlink and mode under ``root`` (``.git`` included)."""
    digest = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            st = full.lstat()
            digest.update(f"{full.relative_to(root)}\0{st.st_mode:o}\0".encode())
            if full.is_symlink():
                digest.update(os.readlink(full).encode())
            elif full.is_file():
                digest.update(full.read_bytes())
    return digest.hexdigest()


def sample_checks() -> dict[str, Any]:
    """The shipped default checks (real pytest, ruff, mypy, bandit, coverage), with pytest's
    plugin autoload off: the sample needs none and the test venv has many slow ones."""
    checks = {}
    for name, check in default_checks().items():
        data = check.model_dump()
        if check.kind in ("pytest", "coverage"):
            data["env"] = {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
        checks[name] = data
    return checks


def patches_config(sample: Sample, **repo: Any) -> PatchesConfig:
    """A config declaring the sample as ``sample`` (``repo`` adds or overrides its keys)."""
    return PatchesConfig.model_validate(
        {"repos": {"sample": {"path": str(sample.path), "target": "main",
                              "checks": sample_checks(), **repo}}})


def patches_project(home: Path, pitstop_env: Mapping[str, str], redis_url: str, sample: Sample,
                    checks: dict[str, Any], *, repo: str = "sample") -> dict[str, str]:
    """``home/config/patches.yaml`` declaring the sample as ``repo`` with ``checks``; returns the
    environment for pitstop processes of that project on ``redis_url``."""
    (home / "config").mkdir(parents=True)
    config = {"repos": {repo: {"path": str(sample.path), "target": "main", "checks": checks}}}
    (home / "config" / "patches.yaml").write_text(yaml.safe_dump(config))
    return {**pitstop_env, "PITSTOP_REDIS_URL": redis_url,
            "PITSTOP_CONFIG_DIR": str(home / "config"), "PITSTOP_STATE_DIR": str(home / ".state")}
