"""``config/deployments.yaml``: per environment, how to deploy, check, roll back and approve.

```yaml
environments:
  staging:
    deploy:   {script: deploy/deploy.sh, args: ["--env", "staging", "{version}"]}
    rollback: {script: deploy/deploy.sh, args: ["--env", "staging", "{version}"]}
    smoke:
      - name: health
        http: {url: "https://staging.example.com/healthz", status: 200,
               body_match: '"version": *"{version}"', max_latency_ms: 800, retries: 5}
      - name: db migrations applied
        script: deploy/check_migrations.py
    timeouts: {deploy: 900, smoke: 120, rollback: 900}
  production:
    ...
    approval: {required: true, approvers: [alice, bob], timeout: 3600}
```

``{version}``, ``{env}`` and ``{previous}`` in script arguments, HTTP URLs, headers and body
patterns are replaced by the deployment's values (in a body pattern, the version is escaped as a
literal). Scripts run through the script supervisor (:class:`pitstop.scripts.CLIWrapper`):
inside ``scripts.allowed_roots``, timed, output redacted. Secrets come from the environment as
``${NAME}`` (never written in the file).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pitstop.kernel.configfile import load_model
from pitstop.kernel.constants import DEPLOYMENTS_FILE
from pitstop.kernel.errors import ConfigError, ValidationError
from pitstop.scripts.policy import ScriptName, ScriptText

__all__ = ["ApprovalConfig", "CommandConfig", "DeploymentsConfig", "EnvironmentConfig",
           "HttpCheckConfig", "SmokeCheckConfig", "TimeoutsConfig", "check_environment_name",
           "check_version", "load_deployments", "substitute"]

ENV_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
"""An environment name: one event-type segment (``deploy.<env>.succeeded``)."""
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
"""A version: what a tag, a semver or a commit SHA looks like; never an option or a path."""
PLACEHOLDERS = ("version", "env", "previous")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def check_environment_name(name: str) -> str:
    if not ENV_NAME.fullmatch(name):
        raise ValidationError(f"environment {name!r}: lower-case letters, digits, '-' and '_' "
                              "only (it is a segment of deploy.<env>.* events)")
    return name


def check_version(version: str) -> str:
    if not VERSION.fullmatch(version):
        raise ValidationError(f"version {version!r}: letters, digits, '.', '_', '+', '-' only, "
                              "starting with a letter or digit (at most 128 characters)")
    return version


def _placeholders(value: str) -> str:
    for name in _PLACEHOLDER.findall(value):
        if name not in PLACEHOLDERS:
            raise ValueError(f"unknown placeholder {{{name}}} (known: "
                             + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS) + ")")
    return value


def substitute(text: str, values: dict[str, str], *, literal: bool = False) -> str:
    """``text`` with ``{version}``, ``{env}`` and ``{previous}`` replaced (``literal``: as
    regular-expression literals, for body patterns)."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            return match.group(0)
        return re.escape(values[name]) if literal else values[name]

    return _PLACEHOLDER.sub(replace, text)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CommandConfig(_Strict):
    """A script the supervisor runs (deploy, rollback, or a smoke check)."""

    script: ScriptName
    """Path inside ``scripts.allowed_roots`` (a relative one is looked up in the working
    directory, then in each root, as ``pitstop run`` does)."""
    args: list[ScriptText] = Field(default_factory=list)
    env: dict[str, ScriptText] = Field(default_factory=dict)
    timeout: float | None = Field(None, gt=0, le=24 * 3600, allow_inf_nan=False)
    """Seconds; default the environment's ``timeouts`` for this step."""

    @field_validator("args")
    @classmethod
    def _known_placeholders(cls, value: list[str]) -> list[str]:
        for arg in value:
            _placeholders(arg)
        return value


class HttpCheckConfig(_Strict):
    url: str
    method: str = "GET"
    status: list[int] = Field(default_factory=lambda: [200])
    """Accepted status codes (one number or a list)."""
    body_match: str | None = None
    """A regular expression the body must contain (``re.search``)."""
    max_latency_ms: float | None = Field(None, gt=0, allow_inf_nan=False)
    """The response must arrive within this (a slower one fails the attempt)."""
    retries: int = Field(0, ge=0, le=100)
    """Attempts after the first one that fails."""
    retry_delay: float = Field(2.0, ge=0, le=600, allow_inf_nan=False)
    timeout: float = Field(10.0, gt=0, le=600, allow_inf_nan=False)
    """Seconds one request may take before it counts as failed."""
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return _placeholders(value)

    @field_validator("status", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, int) else value

    @field_validator("status")
    @classmethod
    def _real_statuses(cls, value: list[int]) -> list[int]:
        if not value or any(not 100 <= code <= 599 for code in value):
            raise ValueError("must list HTTP status codes (100-599)")
        return value

    @field_validator("method")
    @classmethod
    def _method(cls, value: str) -> str:
        if value.upper() not in ("GET", "HEAD", "POST", "PUT", "OPTIONS"):
            raise ValueError("must be GET, HEAD, POST, PUT or OPTIONS")
        return value.upper()

    @field_validator("body_match")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            _placeholders(value)
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from None
        return value


class SmokeCheckConfig(_Strict):
    """One smoke check: a script (exit 0 passes) or an HTTP request."""

    name: str = Field(min_length=1, max_length=100)
    script: str | None = None
    args: list[ScriptText] = Field(default_factory=list)
    env: dict[str, ScriptText] = Field(default_factory=dict)
    timeout: float | None = Field(None, gt=0, le=3600, allow_inf_nan=False)
    retries: int = Field(0, ge=0, le=100)
    """Script checks: runs after the first one that fails."""
    retry_delay: float = Field(2.0, ge=0, le=600, allow_inf_nan=False)
    http: HttpCheckConfig | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SmokeCheckConfig:
        if (self.script is None) == (self.http is None):
            raise ValueError("a smoke check is either a script or an http check (exactly one)")
        for arg in self.args:
            _placeholders(arg)
        return self

    def command(self) -> CommandConfig:
        return CommandConfig(script=self.script or "", args=self.args, env=self.env,
                             timeout=self.timeout)


class TimeoutsConfig(_Strict):
    deploy: float = Field(900, gt=0, le=24 * 3600, allow_inf_nan=False)
    smoke: float = Field(120, gt=0, le=3600, allow_inf_nan=False)
    """Seconds each script smoke check may take (HTTP checks have their own ``timeout``)."""
    rollback: float = Field(900, gt=0, le=24 * 3600, allow_inf_nan=False)


class ApprovalConfig(_Strict):
    required: bool = False
    approvers: list[str] = Field(default_factory=list)
    """Who may approve (``pitstop deploy approve ID --as NAME``); never the requester."""
    timeout: float = Field(24 * 3600, gt=0, le=30 * 24 * 3600, allow_inf_nan=False)
    """Seconds a deployment waits for its approval before it expires."""

    @model_validator(mode="after")
    def _someone_approves(self) -> ApprovalConfig:
        if self.required and not self.approvers:
            raise ValueError("approval is required: list who may approve (approvers)")
        return self


class EnvironmentConfig(_Strict):
    deploy: CommandConfig
    rollback: CommandConfig | None = None
    """Run with ``{version}`` = the version to go back to; none: a failed deploy stays failed."""
    smoke: list[SmokeCheckConfig] = Field(default_factory=list)
    timeouts: TimeoutsConfig = TimeoutsConfig()
    approval: ApprovalConfig = ApprovalConfig()
    lock_ttl: float = Field(60, ge=2, le=3600, allow_inf_nan=False)
    """Seconds the environment's lock lives without renewal (renewed every third of it)."""

    @field_validator("smoke")
    @classmethod
    def _unique_names(cls, value: list[SmokeCheckConfig]) -> list[SmokeCheckConfig]:
        names = [check.name for check in value]
        duplicated = sorted({name for name in names if names.count(name) > 1})
        if duplicated:
            raise ValueError(f"smoke check names must be unique: {', '.join(duplicated)}")
        return value


class DeploymentsConfig(_Strict):
    environments: dict[str, EnvironmentConfig] = Field(default_factory=dict)

    @field_validator("environments")
    @classmethod
    def _names(cls, value: dict[str, EnvironmentConfig]) -> dict[str, EnvironmentConfig]:
        for name in value:
            if not ENV_NAME.fullmatch(name):
                raise ValueError(f"environment {name!r}: lower-case letters, digits, '-' and "
                                 "'_' only")
        return value

    def environment(self, name: str) -> EnvironmentConfig:
        try:
            return self.environments[name]
        except KeyError:
            known = ", ".join(sorted(self.environments)) or "none"
            raise ValidationError(f"no environment {name!r} in {DEPLOYMENTS_FILE} "
                                  f"(known: {known})") from None


def load_deployments(config_dir: Path) -> DeploymentsConfig:
    """``<config_dir>/deployments.yaml``; a missing file is a ConfigError (nothing to deploy)."""
    path = config_dir / DEPLOYMENTS_FILE
    if not path.is_file():
        raise ConfigError("no deployments configured: create it (see the shipped example)",
                          file=str(path))
    return load_model(path, DeploymentsConfig)
