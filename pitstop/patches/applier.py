"""``PatchApplier``: the safety checks before any write, then ``git apply`` in a worktree.

:meth:`PatchApplier.inspect` only reads (the diff, the base tree, ``git apply --numstat``);
:meth:`PatchApplier.apply` writes, and only inside the worktree it is given: ``git apply
--check`` then ``git apply --index``; when that fails, ``git apply --3way`` (recorded: a 3-way
apply lowers confidence). A patch that applies neither way is refused with the files and hunks
that conflict. The result is committed on the worktree's detached HEAD, hooks disabled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pitstop.patches.diff import ParsedDiff
from pitstop.patches.git import Git
from pitstop.patches.safety import PatchSafety, SafetyReport

__all__ = ["ApplyOutcome", "PatchApplier"]

Method = Literal["apply", "3way"]
_FAILED_AT = re.compile(r"^error: patch failed: (.+):(\d+)$")
_ERROR = re.compile(r"^error: (.+)$")


@dataclass
class ApplyOutcome:
    method: Method | None
    commit: str | None = None
    conflicts: list[str] = field(default_factory=list)
    """What did not apply: ``path: hunk #n (@@ -a,b +c,d @@)`` or git's own line."""

    @property
    def applied(self) -> bool:
        return self.method is not None and self.commit is not None


class PatchApplier:
    def __init__(self, safety: PatchSafety | None = None) -> None:
        self.safety = safety or PatchSafety()

    def inspect(self, patch: bytes, repo: Git, base: str, patch_file: Path) -> SafetyReport:
        """Everything that decides whether the patch may be applied at all; writes nothing."""
        return self.safety.inspect(patch, repo, base, patch_file)

    def apply(self, worktree: Path, patch_file: Path, parsed: ParsedDiff, message: str,
              identity: tuple[str, str]) -> ApplyOutcome:
        git = Git(worktree, identity=identity)
        check = git.run("apply", "--check", "--index", str(patch_file), check=False)
        method: Method
        if check.code == 0:
            git.run("apply", "--index", str(patch_file))
            method = "apply"
        else:
            three_way = git.run("apply", "--3way", str(patch_file), check=False)
            if three_way.code != 0:
                unmerged = git.run("diff", "--name-only", "--diff-filter=U", check=False).text
                conflicts = [f"{path}: conflicts in a 3-way merge" for path in unmerged.split()]
                return ApplyOutcome(None, conflicts=conflicts or
                                    self._conflicts(check.stderr, parsed) or
                                    [three_way.stderr.strip()[:300] or "the patch does not apply"])
            method = "3way"
        committed = git.run("commit", "--quiet", "--no-verify", "-m", message, check=False)
        if committed.code != 0:
            return ApplyOutcome(None, conflicts=["the patch changes nothing on this base"])
        return ApplyOutcome(method, commit=git.out("rev-parse", "HEAD"))

    @staticmethod
    def _conflicts(stderr: str, parsed: ParsedDiff) -> list[str]:
        """Name the file and hunk of each failure ``git apply --check`` reports."""
        out: list[str] = []
        for line in stderr.splitlines():
            failed = _FAILED_AT.match(line)
            if failed:
                path, at = failed.group(1), int(failed.group(2))
                out.append(_hunk_name(parsed, path, at))
                continue
            error = _ERROR.match(line)
            if error and "patch does not apply" not in line:
                out.append(error.group(1))
        return out


def _hunk_name(parsed: ParsedDiff, path: str, line: int) -> str:
    for change in parsed.files:
        if path not in (change.old_path, change.new_path):
            continue
        for number, hunk in enumerate(change.hunks, start=1):
            if hunk.old_start == line:
                return f"{path}: hunk #{number} ({hunk.header}) does not apply"
        return f"{path}: the hunk at line {line} does not apply"
    return f"{path}: does not apply at line {line}"
