"""Changed files between two commits, from real git, for file-change triggers from any CI.

``pitstop emit git.push --changed-files origin/main..HEAD branch=feature`` puts the paths in
``data.changed_files`` (as the GitHub push mapping does), so ``paths:`` conditions work the same
whoever emits. Renames count as a deletion and an addition (both paths), as GitHub lists them.
"""

from __future__ import annotations

import json
import re
import subprocess  # nosec B404 # argv lists only, never a shell
from pathlib import Path

from pitstop.kernel.errors import ValidationError

__all__ = ["changed_files", "fit_paths"]

_RANGE = re.compile(r"^([^\s.][^\s]*?)(\.\.\.?)([^\s.][^\s]*)\Z")
GIT_TIMEOUT = 60.0


def _check_revision(revision: str, spec: str) -> None:
    if revision.startswith("-") or not revision or "\0" in revision or len(revision) > 255:
        raise ValidationError(f"--changed-files {spec!r}: {revision!r} is not a revision")


def changed_files(spec: str, *, cwd: Path | None = None, git: str = "git",
                  timeout: float = GIT_TIMEOUT) -> list[str]:
    """Paths changed in ``BASE..HEAD`` (or ``BASE...HEAD``: since their merge base), sorted.

    Raises :class:`ValidationError` with one line for a bad range, a repository git cannot read,
    or git missing.
    """
    match = _RANGE.match(spec.strip()) if isinstance(spec, str) else None
    if match is None:
        raise ValidationError(f"--changed-files expects BASE..HEAD (or BASE...HEAD), got {spec!r}")
    base, dots, head = match.groups()
    _check_revision(base, spec)
    _check_revision(head, spec)
    args = [git, "-c", "core.quotepath=off", "diff", "--name-only", "-z", "--no-renames",
            "--no-ext-diff", "--no-textconv", f"{base}{dots}{head}", "--"]
    try:
        done = subprocess.run(args, cwd=cwd, capture_output=True, timeout=timeout, check=False)  # nosec B603 # checked revisions
    except FileNotFoundError:
        raise ValidationError("--changed-files needs git, which is not installed") from None
    except subprocess.TimeoutExpired:
        raise ValidationError(f"git diff {spec} took longer than {timeout:g}s") from None
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
        first = reason[0] if reason else f"exit code {done.returncode}"
        raise ValidationError(f"git diff {spec}: {first}")
    names = done.stdout.decode("utf-8", "surrogateescape").split("\0")
    return sorted({name for name in names if name})


def fit_paths(paths: list[str], max_bytes: int) -> tuple[list[str], bool]:
    """``paths`` cut so that their JSON fits ``max_bytes``; True when some were left out."""
    if len(json.dumps(paths)) <= max_bytes:
        return paths, False
    kept: list[str] = []
    size = 2
    for path in paths:
        size += len(json.dumps(path)) + 1
        if size > max_bytes:
            break
        kept.append(path)
    return kept, True
