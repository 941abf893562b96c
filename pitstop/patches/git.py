"""Running git for pitstop: argument lists only, hooks off, a clean environment, clear errors.

Every call disables hooks (``core.hooksPath=/dev/null``: a worktree checkout or a commit of ours
must not run the repository's scripts) and the fsmonitor, drops ``GIT_*`` variables that would
point git elsewhere, and never prompts. :func:`check_git_version` refuses git older than 2.39.2,
whose ``git apply`` follows symlinks out of the tree (CVE-2023-23946).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess  # nosec B404 # argv lists only, never a shell
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pitstop.kernel.constants import PATCH_MIN_GIT_VERSION
from pitstop.kernel.errors import GitTooOld, PatchError

__all__ = ["Git", "GitResult", "check_git_version", "git_version"]

_SAFE_CONFIG = ("-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
                "-c", "advice.detachedHead=false", "-c", "init.defaultBranch=main",
                "-c", "gc.auto=0", "-c", "maintenance.auto=false", "-c", "fetch.prune=false")
_KEEP_ENV = ("PATH", "HOME", "LANG", "TMPDIR", "SSH_AUTH_SOCK", "GIT_SSH_COMMAND",
             "SSL_CERT_FILE", "SSL_CERT_DIR")


def _git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {name: os.environ[name] for name in _KEEP_ENV if name in os.environ}
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_CONFIG_NOSYSTEM": "1"})
    env.update(extra or {})
    return env


@dataclass(frozen=True)
class GitResult:
    code: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")


class Git:
    """git commands in one repository (or worktree) directory."""

    def __init__(self, cwd: Path, *, identity: tuple[str, str] = ("pitstop", "pitstop@localhost"),
                 timeout: float = 120.0) -> None:
        self.cwd = Path(cwd)
        self.identity = identity
        self.timeout = timeout

    def run(self, *args: str, check: bool = True, input_bytes: bytes | None = None,
            env: Mapping[str, str] | None = None, timeout: float | None = None) -> GitResult:
        name, email = self.identity
        argv = ["git", *_SAFE_CONFIG, "-c", f"user.name={name}", "-c", f"user.email={email}",
                *args]
        try:
            proc = subprocess.run(argv, cwd=self.cwd, env=_git_env(env), input=input_bytes,  # nosec B603 # git argv, safe -c config
                                  capture_output=True, check=False,
                                  timeout=timeout or self.timeout)
        except FileNotFoundError:
            raise GitTooOld("git is not installed (pitstop needs git 2.39.2 or later)") from None
        except subprocess.TimeoutExpired:
            raise PatchError(f"git {args[0]} took longer than {timeout or self.timeout:g}s") from None
        result = GitResult(proc.returncode, proc.stdout,
                           proc.stderr.decode("utf-8", errors="replace"))
        if check and result.code != 0:
            raise PatchError(f"git {' '.join(args[:2])} failed: {result.stderr.strip()[:500]}")
        return result

    def out(self, *args: str) -> str:
        return self.run(*args).text.strip()

    def rev_parse(self, ref: str) -> str | None:
        """The commit ``ref`` names, or None."""
        result = self.run("rev-parse", "--verify", "--quiet", "--end-of-options",
                          f"{ref}^{{commit}}", check=False)
        return result.text.strip() or None if result.code == 0 else None

    def tree_modes(self, commit: str, paths: Sequence[str]) -> dict[str, str]:
        """Mode of each of ``paths`` that exists in ``commit``'s tree (read-only)."""
        if not paths:
            return {}
        result = self.run("--literal-pathspecs", "ls-tree", "-z", "--full-tree", commit, "--",
                          *paths, check=False)
        modes: dict[str, str] = {}
        for entry in result.stdout.split(b"\0"):
            if b"\t" not in entry:
                continue
            meta, path = entry.split(b"\t", 1)
            modes[path.decode("utf-8", errors="surrogateescape")] = meta.split(b" ")[0].decode()
        return modes

    def numstat_paths(self, patch_file: Path) -> list[str]:
        """The paths ``git apply`` itself reads from the patch (nothing is applied)."""
        result = self.run("apply", "--numstat", "-z", str(patch_file), check=False)
        if result.code != 0:
            raise PatchError(f"git apply cannot read the patch: {result.stderr.strip()[:300]}")
        fields = result.stdout.split(b"\0")
        paths: list[str] = []
        i = 0
        while i < len(fields):
            item = fields[i]
            if not item:
                i += 1
                continue
            parts = item.split(b"\t", 2)
            if len(parts) == 3 and parts[2]:
                paths.append(parts[2].decode("utf-8", errors="surrogateescape"))
                i += 1
            elif len(parts) == 3:  # a rename or copy: the two names follow
                paths.extend(f.decode("utf-8", errors="surrogateescape")
                             for f in fields[i + 1:i + 3])
                i += 3
            else:
                i += 1
        return paths

    def branch_worktrees(self) -> dict[str, Path]:
        """Branches checked out in some working tree of this repository -> where."""
        result = self.run("worktree", "list", "--porcelain", "-z", check=False)
        found: dict[str, Path] = {}
        current: Path | None = None
        bare = False
        for field in result.stdout.split(b"\0"):
            text = field.decode("utf-8", errors="replace")
            if text.startswith("worktree "):
                current, bare = Path(text[len("worktree "):]), False
            elif text == "bare":
                bare = True
            elif text.startswith("branch refs/heads/") and current is not None and not bare:
                found[text[len("branch refs/heads/"):]] = current
        return found


def git_version() -> tuple[int, ...]:
    git = shutil.which("git")
    if git is None:
        raise GitTooOld("git is not installed (pitstop needs git 2.39.2 or later)")
    out = subprocess.run([git, "--version"], capture_output=True, text=True, check=False,  # nosec B603 # git --version
                         timeout=30).stdout
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", out)
    if match is None:
        raise GitTooOld(f"cannot tell the git version from {out.strip()!r}")
    return tuple(int(part or 0) for part in match.groups())


def check_git_version(version: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """Refuse git older than 2.39.2 (:class:`GitTooOld`); returns the version found."""
    found = git_version() if version is None else version
    if found < PATCH_MIN_GIT_VERSION:
        shown = ".".join(map(str, found))
        raise GitTooOld(f"git {shown} is too old: pitstop needs 2.39.2 or later (older git apply "
                        "follows symlinks out of the tree, CVE-2023-23946)")
    return found
