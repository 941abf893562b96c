"""A real fixer: ``ruff check --fix`` on a repository at a ref, turned into a unified diff.

It works in a throw-away worktree (the repository's checkout is never touched), runs the fix
command in its own process group with a timeout (as checks run), and returns ``git diff`` of what
changed: the patch ``validate_patch`` takes next. Fixes lint findings ruff can fix safely: unused
imports, import order, pyupgrade rewrites, whatever the repository's ruff config selects.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pitstop.kernel.errors import PatchError
from pitstop.patches.checks import CheckRunner
from pitstop.patches.git import Git
from pitstop.patches.worktree import WorktreeManager

__all__ = ["DEFAULT_FIX_COMMAND", "FixResult", "LintFixer"]

DEFAULT_FIX_COMMAND = ("ruff", "check", "--fix", "--exit-zero", "--no-cache", "--quiet", ".")


@dataclass
class FixResult:
    base_sha: str
    patch: str
    files: list[str] = field(default_factory=list)
    duration: float = 0.0

    @property
    def has_changes(self) -> bool:
        return bool(self.patch.strip())

    def to_dict(self) -> dict[str, Any]:
        return {"base_sha": self.base_sha, "patch": self.patch, "files": self.files,
                "has_changes": self.has_changes, "duration": round(self.duration, 3)}


class LintFixer:
    def __init__(self, worktrees: WorktreeManager, runner: CheckRunner | None = None, *,
                 command: tuple[str, ...] = DEFAULT_FIX_COMMAND, timeout: float = 300.0) -> None:
        self.worktrees = worktrees
        self.runner = runner or CheckRunner()
        self.command = list(command)
        self.timeout = timeout

    def fix(self, git: Git, ref: str) -> FixResult:
        started = time.monotonic()
        base = git.rev_parse(ref)
        if base is None:
            raise PatchError(f"{git.cwd} has no commit {ref!r}")
        if self.runner.missing_tool(self.command):
            raise PatchError(f"{self.command[0]} is not installed: the lint fixer needs it")
        with self.worktrees.checkout(git, base, "fix") as worktree, \
                tempfile.TemporaryDirectory(prefix="pitstop-fix-") as scratch:
            ran = self.runner.run_command(self.command, worktree, Path(scratch),
                                          deadline=time.monotonic() + self.timeout)
            if ran.timed_out:
                raise PatchError(f"the fixer timed out after {self.timeout:g}s")
            if ran.code not in (0, None):
                raise PatchError(f"the fixer exited {ran.code}: {ran.output.strip()[-300:]}")
            work = Git(worktree)
            diff = work.run("diff", "--no-ext-diff", "--no-color", "--no-textconv",
                            "--src-prefix=a/", "--dst-prefix=b/", "HEAD").stdout
            files = work.out("diff", "--name-only", "HEAD").split("\n")
        return FixResult(base, diff.decode("utf-8", errors="surrogateescape"),
                         [f for f in files if f], time.monotonic() - started)
