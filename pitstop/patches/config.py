"""``config/patches.yaml``: repositories, their checks, weights, thresholds and protected paths.

Loaded with :mod:`pitstop.kernel.configfile` (safe YAML, errors naming file, key path and line).
A repository is declared by ``path`` (a local clone pitstop works in, never touching its
checkout) or ``url`` (pitstop keeps a bare mirror under ``.state/patches/mirrors``). Everything a
repository leaves out comes from ``defaults``; everything ``defaults`` leaves out from the seed
(tests 40, lint 20, types 15, security 15, coverage 10; auto-merge at 95, PR at 80).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pitstop.kernel.configfile import FieldProblem, load_model
from pitstop.kernel.constants import PATCH_GITHUB_LABEL, PATCH_QUEUE, PATCHES_FILE
from pitstop.kernel.errors import ConfigError
from pitstop.patches.safety import DEFAULT_PROTECTED

__all__ = ["CheckConfig", "GitHubConfig", "PatchesConfig", "RepoConfig", "RepoSettings",
           "default_checks", "load_patches_config"]

T = TypeVar("T")
CheckKind = Literal["pytest", "ruff", "mypy", "bandit", "coverage", "exit_code"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckConfig(_Model):
    """One check: an argument list (never a shell line) run in the worktree.

    Placeholders expand inside arguments: ``{python}`` (the worker's interpreter),
    ``{worktree}``, ``{scratch}`` (a private directory outside it), ``{coverage_data}``,
    ``{coverage_json}``; an argument that is exactly
    ``{changed_py}`` or ``{changed_files}`` expands to that many arguments (the check passes with
    "nothing to check" when the list is empty).
    """

    kind: CheckKind = "exit_code"
    command: list[str] = Field(min_length=1)
    report: list[str] | None = None
    """For ``coverage``: the command writing ``{coverage_json}`` after ``command`` ran."""
    timeout: float = Field(default=300.0, gt=0)
    weight: float = Field(default=0.0, ge=0)
    min_ratio: float = Field(default=0.8, ge=0, le=1)
    """For ``coverage``: the share of changed executable lines that must run."""
    enabled: bool = True
    env: dict[str, str] = {}
    """Extra environment for this check (the worker's own environment is never passed)."""


def default_checks() -> dict[str, CheckConfig]:
    pytest = ["{python}", "-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider"]
    return {
        "tests": CheckConfig(kind="pytest", command=pytest, weight=40),
        "lint": CheckConfig(kind="ruff", weight=20, timeout=120,
                            command=["ruff", "check", "--no-cache", "--output-format=concise",
                                     "{changed_py}"]),
        "types": CheckConfig(kind="mypy", weight=15, timeout=300,
                             command=["mypy", "--no-error-summary", "--hide-error-context",
                                      "{changed_py}"]),
        "security": CheckConfig(kind="bandit", weight=15, timeout=120,
                                command=["bandit", "-q", "-f", "json", "{changed_py}"]),
        "coverage": CheckConfig(kind="coverage", weight=10,
                                command=["{python}", "-m", "coverage", "run",
                                         "--data-file={coverage_data}", "-m", "pytest", "-q",
                                         "-p", "no:cacheprovider"],
                                report=["{python}", "-m", "coverage", "json", "-q",
                                        "--data-file={coverage_data}", "-o", "{coverage_json}"]),
    }


class GitHubConfig(_Model):
    repository: str | None = None
    """``owner/name``; unset: read from the remote's URL."""
    api_url: str = "https://api.github.com"
    graphql_url: str | None = None
    """Unset: ``<api_url>/graphql``."""
    token_env: str = "GITHUB_TOKEN"  # noqa: S105 - the variable's name, not a secret
    label: str = PATCH_GITHUB_LABEL
    merge_method: Literal["MERGE", "SQUASH", "REBASE"] = "SQUASH"
    timeout: float = Field(default=20.0, gt=0)


class RepoSettings(_Model):
    """What ``defaults`` and each repository may set (a repository's values win, per key)."""

    checks: dict[str, CheckConfig] | None = None
    protected: list[str] | None = None
    extra_protected: list[str] = []
    """Added to ``protected`` (so the defaults need not be repeated)."""
    auto_merge_at: float | None = Field(default=None, ge=0, le=100)
    pr_at: float | None = Field(default=None, ge=0, le=100)
    three_way_penalty: float | None = Field(default=None, ge=0, le=100)
    binary_cap_bytes: int | None = Field(default=None, gt=0)
    remote: str | None = None
    github: GitHubConfig | None = None
    committer_name: str | None = None
    committer_email: str | None = None


class RepoConfig(RepoSettings):
    path: Path | None = None
    url: str | None = None
    target: str = "main"
    """The default target branch (and base when ``--base`` is not given)."""

    @model_validator(mode="after")
    def _one_location(self) -> RepoConfig:
        if (self.path is None) == (self.url is None):
            raise FieldProblem(("path",), "declare exactly one of path or url")
        return self

    @field_validator("url")
    @classmethod
    def _url_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "ssh://", "git@", "file://")):
            raise ValueError("url must be https://, ssh://, git@host: or file://")
        return value


class PatchesConfig(_Model):
    queue: str = PATCH_QUEUE
    allow_undeclared: bool = False
    """Let ``--repo PATH`` name a local repository that is not declared below."""
    lane_wait_seconds: float = Field(default=600.0, gt=0)
    """How long a landing waits for the merge lane of its target branch."""
    defaults: RepoSettings = RepoSettings()
    repos: dict[str, RepoConfig] = {}

    def resolved(self, repo: RepoSettings) -> ResolvedRepo:
        """One repository's settings with ``defaults`` and the seed filled in."""
        base = self.defaults
        checks = _first(repo.checks, base.checks, seed=default_checks())
        return ResolvedRepo(
            checks={name: check for name, check in checks.items() if check.enabled},
            protected=[*_first(repo.protected, base.protected, seed=list(DEFAULT_PROTECTED)),
                       *base.extra_protected, *repo.extra_protected],
            auto_merge_at=_first(repo.auto_merge_at, base.auto_merge_at, seed=95.0),
            pr_at=_first(repo.pr_at, base.pr_at, seed=80.0),
            three_way_penalty=_first(repo.three_way_penalty, base.three_way_penalty, seed=10.0),
            binary_cap_bytes=_first(repo.binary_cap_bytes, base.binary_cap_bytes,
                                    seed=1024 * 1024),
            remote=_first(repo.remote, base.remote, seed=None),
            github=_first(repo.github, base.github, seed=GitHubConfig()),
            committer=(_first(repo.committer_name, base.committer_name, seed="pitstop"),
                       _first(repo.committer_email, base.committer_email,
                              seed="pitstop@localhost")),
        )


def _first(*values: T | None, seed: T) -> T:
    for value in values:
        if value is not None:
            return value
    return seed


class ResolvedRepo(_Model):
    checks: dict[str, CheckConfig]
    protected: list[str]
    auto_merge_at: float
    pr_at: float
    three_way_penalty: float
    binary_cap_bytes: int
    remote: str | None
    github: GitHubConfig
    committer: tuple[str, str]


def load_patches_config(config_dir: Path) -> PatchesConfig:
    """``<config_dir>/patches.yaml`` (the seed's defaults when the file is missing)."""
    config = load_model(config_dir / PATCHES_FILE, PatchesConfig)
    for name, repo in config.repos.items():
        if repo.path is not None and not repo.path.is_absolute():
            repo_path = (config_dir.parent / repo.path).resolve()
            config.repos[name] = repo.model_copy(update={"path": repo_path})
        resolved = config.resolved(config.repos[name])
        if resolved.pr_at > resolved.auto_merge_at:
            raise ConfigError("pr_at must not be above auto_merge_at",
                              file=str(config_dir / PATCHES_FILE), key_path=f"repos.{name}")
    return config
