"""``config/web.yaml``: who may log in to the web view, and how its cookies and links behave.

The API token (``PITSTOP_API_TOKEN``) logs in, as the user ``token``, unless ``token_login`` is
false; the users listed here log in with a password whose scrypt or PBKDF2 hash the file holds
(``pitstop web hash-password`` makes one). The file is optional: without it only the token logs
in. A token login only looks (every action refused) unless ``token_can_act`` is true: CI holds
the token to post events, and must not thereby be able to silence the alerts that would report
its abuse.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pitstop.kernel.configfile import load_model
from pitstop.kernel.constants import WEB_CONFIG_FILE
from pitstop.web.passwords import check_hash_format

__all__ = ["TOKEN_USER", "WebConfig", "WebUser", "load_web_config"]

TOKEN_USER = "token"  # noqa: S105 - a user name, not a password  # nosec B105 # a user name
"""The name a login with the API token gets."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


class WebUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    password_hash: str
    """``scrypt$...`` or ``pbkdf2_sha256$...`` (never the password itself)."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError("a user name is 1-64 letters, digits, '.', '_', '@' or '-'")
        if value == TOKEN_USER:
            raise ValueError(f"{TOKEN_USER!r} is the API token's login; pick another name")
        return value

    @field_validator("password_hash")
    @classmethod
    def _hash(cls, value: str) -> str:
        problem = check_hash_format(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class WebConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    users: list[WebUser] = Field(default_factory=list)
    session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    """How long a login lasts (the session is also dropped at logout)."""
    secure_cookies: Literal["auto", "always", "never"] = "auto"
    """``auto``: cookies are ``Secure`` when the request came over https (a TLS proxy in front
    must say so: uvicorn's ``--proxy-headers``); ``always`` behind a proxy that does not."""
    token_login: bool = True
    """Whether the API token logs in (turn off once users are set up)."""
    token_can_act: bool = False
    """Whether a login with the API token may act (disable or enable a trigger, acknowledge an
    alert, add or end a silence). Off by default: a token login is read-only, and only the
    users listed here act, since whoever can post events (CI) holds the token."""
    flower_url: str | None = None
    """The link the fleet page gives to Flower; default ``http://127.0.0.1:<flower.port>``."""
    max_login_failures: int = Field(default=10, ge=1)
    """Failed logins from one address within ``login_window_seconds`` before it must wait."""
    login_window_seconds: int = Field(default=300, ge=1)
    max_live_streams: int = Field(default=32, ge=1, le=1000)
    """Live feeds (server-sent events) served at once; more get 503 and retry."""

    @field_validator("flower_url")
    @classmethod
    def _flower(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"https?://[^\s<>\"'`]+", value):
            raise ValueError("flower_url must be an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _unique(self) -> WebConfig:
        names = [user.name for user in self.users]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"user listed twice: {', '.join(duplicates)}")
        return self

    def user(self, name: str) -> WebUser | None:
        return next((user for user in self.users if user.name == name), None)


def load_web_config(config_dir: Path) -> WebConfig:
    """``<config_dir>/web.yaml`` (defaults when it is missing); :class:`ConfigError` naming the
    file, key path and line when it is wrong."""
    return load_model(Path(config_dir) / WEB_CONFIG_FILE, WebConfig)
