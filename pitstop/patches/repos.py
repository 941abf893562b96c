"""Where a patch's repository is: a declared name, a declared local path, or a URL mirror.

A repository declared by ``path`` is worked on in place, read-only but for the objects and refs
pitstop adds (its checkout is never touched: work happens in worktrees). One declared by ``url``
is kept as a bare mirror under ``.state/patches/mirrors/<name>.git`` whose remote ``origin`` is
the URL. With a remote (``remote:``, else ``origin`` when the clone has one) the target branch's
head is the remote's, fetched before use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from pitstop.kernel.errors import PatchError, ValidationError
from pitstop.patches.config import PatchesConfig, RepoConfig, RepoSettings, ResolvedRepo
from pitstop.patches.git import Git

__all__ = ["RepoHandle", "RepoRegistry", "github_repository"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
_GITHUB_RE = re.compile(r"github\.com[:/]([^/]+)/([^/]+?)(?:\.git)?/?$")


@dataclass
class RepoHandle:
    name: str
    git: Git
    settings: ResolvedRepo
    remote: str | None
    default_target: str

    def target_ref(self, branch: str) -> str:
        """The ref holding the target branch's head: the remote's when there is one."""
        return f"refs/remotes/{self.remote}/{branch}" if self.remote else f"refs/heads/{branch}"

    def fetch(self, branch: str) -> None:
        if self.remote:
            self.git.run("fetch", "--quiet", "--no-tags", "--no-write-fetch-head", self.remote,
                         f"+refs/heads/{branch}:refs/remotes/{self.remote}/{branch}",
                         timeout=300)

    def head(self, branch: str) -> str | None:
        """The target branch's current head (fetched first when there is a remote)."""
        self.fetch(branch)
        return self.git.rev_parse(self.target_ref(branch))


def github_repository(url: str) -> str | None:
    """``owner/name`` from a GitHub remote URL, or None."""
    match = _GITHUB_RE.search(url.strip())
    return f"{match.group(1)}/{match.group(2)}" if match else None


class RepoRegistry:
    def __init__(self, config: PatchesConfig, mirrors_dir: Path) -> None:
        self.config = config
        self.mirrors_dir = Path(mirrors_dir)

    def resolve(self, repo: str) -> RepoHandle:
        """A declared name, the path of a declared repository, or (``allow_undeclared``) any
        local git repository."""
        declared = self.config.repos.get(repo)
        if declared is not None:
            return self._handle(repo, declared)
        path = Path(repo).expanduser()
        if path.exists():
            real = path.resolve()
            for name, candidate in self.config.repos.items():
                if candidate.path is not None and candidate.path.resolve() == real:
                    return self._handle(name, candidate)
            if self.config.allow_undeclared:
                return self._local(real.name or "repo", real, RepoSettings(), "main")
            raise ValidationError(f"{real} is not declared in config/patches.yaml (declare it "
                                  "under repos:, or set allow_undeclared: true)")
        known = ", ".join(sorted(self.config.repos)) or "none declared"
        raise ValidationError(f"unknown repository {repo!r} (known: {known})")

    def _handle(self, name: str, repo: RepoConfig) -> RepoHandle:
        if repo.path is not None:
            return self._local(name, repo.path, repo, repo.target)
        assert repo.url is not None  # noqa: S101 - the model requires one of the two  # nosec B101 # type narrowing
        return self._mirror(name, repo.url, repo)

    def _local(self, name: str, path: Path, repo: RepoSettings, target: str) -> RepoHandle:
        settings = self.config.resolved(repo)
        git = Git(path, identity=settings.committer)
        if not path.is_dir() or git.run("rev-parse", "--git-dir", check=False).code != 0:
            raise ValidationError(f"{path} is not a git repository")
        remotes = git.out("remote").split()
        remote = settings.remote
        if remote is not None and remote not in remotes:
            raise ValidationError(f"repository {name}: remote {remote!r} does not exist")
        if remote is None and "origin" in remotes:
            remote = "origin"
        return RepoHandle(_safe_name(name), git, settings, remote, target)

    def _mirror(self, name: str, url: str, repo: RepoConfig) -> RepoHandle:
        settings = self.config.resolved(repo)
        path = self.mirrors_dir / f"{_safe_name(name)}.git"
        if not (path / "HEAD").exists():
            path.mkdir(parents=True, exist_ok=True)
            init = Git(path, identity=settings.committer)
            init.run("init", "--quiet", "--bare")
            init.run("remote", "add", "origin", url)
        git = Git(path, identity=settings.committer)
        current = git.out("remote", "get-url", "origin")
        if current != url:
            git.run("remote", "set-url", "origin", url)
        return RepoHandle(_safe_name(name), git, settings, settings.remote or "origin",
                          repo.target)


def _safe_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise PatchError(f"repository name {name!r} must be letters, digits, '.', '_', '-'")
    return name
