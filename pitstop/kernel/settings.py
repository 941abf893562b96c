"""Typed settings: ``config/pitstop.yaml`` overlaid by ``PITSTOP_*`` environment variables.

Validated once at load (:func:`load_settings`); everything else receives a :class:`Settings`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from pitstop.kernel.configfile import (
    FieldProblem,
    error_key_path,
    format_key_path,
    read_document,
    validate_document,
)
from pitstop.kernel.constants import (
    DEFAULT_CALLER_ENV,
    DEFAULT_ENV_ALLOWLIST,
    DEFAULT_QUEUE,
    DEFAULT_SCRIPT_QUEUE,
    EVENT_DATA_MAX_BYTES,
    EVENT_MAX_HOPS,
    EVENT_STREAM_MAXLEN,
    RUN_TTL_SECONDS,
)
from pitstop.kernel.errors import ConfigError
from pitstop.kernel.sealing import Sealer, key_file_sealer
from pitstop.kernel.serverinfo import SERVER_INFO_FILE, ServerInfo

SETTINGS_FILE = "pitstop.yaml"
CONFIG_DIR_NAME = "config"
STATE_DIR_NAME = ".state"
HOME_ENV = "PITSTOP_HOME"


def _queue_name(value: Any) -> Any:
    """Refuse what ``pitstop worker -Q a,b`` or Celery could never consume as one queue."""
    if isinstance(value, str):
        if not value:
            raise ValueError("a queue name must not be empty")
        if "," in value or any(char.isspace() for char in value):
            raise ValueError(f"queue name {value!r} must not contain spaces or commas "
                             "(list several queues as separate entries)")
    return value


def _directory(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        # Path("") is ".": the working directory, which must never become an allowed root.
        raise ValueError("a directory must not be empty")
    return value


def _env_pattern(value: Any) -> Any:
    if isinstance(value, str) and (not value or any(c in value for c in "=, \t\n\0")):
        raise ValueError(f"{value!r} is not a variable name pattern (like CI_* or GIT_SHA)")
    return value


QueueName = Annotated[str, BeforeValidator(_queue_name)]
Directory = Annotated[Path, BeforeValidator(_directory)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RedisSettings(_Section):
    url: SecretStr | None = None
    """A real Redis (``redis://``, ``rediss://``, or ``sentinel://`` naming sentinels and the
    service they watch; password included). Unset: the embedded server."""
    embedded_dir: Path | None = None
    """Where the embedded server keeps its files; default ``<state_dir>/redis``."""


    @field_validator("url")
    @classmethod
    def _redis_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = value.get_secret_value().partition("://")[0]
            if scheme not in ("redis", "rediss", "unix", "sentinel"):
                raise ValueError("must be a redis://, rediss://, unix:// or sentinel:// URL")
        return value


class BusSettings(_Section):
    stream_maxlen: int = Field(EVENT_STREAM_MAXLEN, ge=100)
    max_data_bytes: int = Field(EVENT_DATA_MAX_BYTES, ge=256, le=16 * 1024 * 1024)
    max_hops: int = Field(EVENT_MAX_HOPS, ge=1, le=1000)
    max_deliveries: int = Field(5, ge=1)
    claim_idle_ms: int = Field(60_000, ge=100)


def default_scripts_root(config_dir: Path) -> Path:
    """Where scripts may live when ``scripts.allowed_roots`` is not configured: the project's
    ``scripts/`` directory, next to the config directory (never the worker's working directory,
    where ``.venv/bin/pip`` would count as an allowed script)."""
    return config_dir.absolute().parent / "scripts"


class ScriptSettings(_Section):
    allowed_roots: list[Directory] = Field(default_factory=lambda: [Path("scripts")])
    """Relative roots in the file are taken from the project directory (``PITSTOP_ALLOWED_ROOTS``
    as given). Unset, :func:`load_settings` makes it ``<config_dir>/../scripts``
    (:func:`default_scripts_root`); this default is that for the default config directory."""
    default_timeout: float = Field(300, gt=0)
    max_timeout: float = Field(3600, gt=0)
    default_queue: QueueName = DEFAULT_SCRIPT_QUEUE
    env_allowlist: list[str] = Field(default_factory=lambda: list(DEFAULT_ENV_ALLOWLIST))
    caller_env: list[Annotated[str, BeforeValidator(_env_pattern)]] = Field(
        default_factory=lambda: list(DEFAULT_CALLER_ENV))
    """Names (case-sensitive globs) a caller may set with ``pitstop run --env``; the worker
    refuses any other (``PITSTOP_CALLER_ENV=CI_*,MY_FLAG`` overrides). Never opens
    ``PROTECTED_ENV``."""
    output_cap_bytes: int = Field(1_000_000, ge=1024)
    retry_idempotent: bool = False
    """Re-run a script whose worker died mid-run (only for scripts safe to run twice)."""
    lost_after_seconds: float = Field(60, ge=2)
    """A running script whose worker stopped heart-beating this long ago is marked ``lost``."""
    queue_ttl_seconds: float = Field(86400, gt=0, le=RUN_TTL_SECONDS, allow_inf_nan=False)
    """A run no worker has taken from its queue this long after it was sent is ``expired``
    (``pitstop run --queue-timeout`` overrides it per run); at most as long as runs are kept."""

    @field_validator("allowed_roots")
    @classmethod
    def _some_root(cls, value: list[Path]) -> list[Path]:
        if not value:
            raise ValueError("must name at least one directory: with none, no script could run "
                             "(leave the key out for the scripts/ directory next to config/)")
        return value

    @model_validator(mode="after")
    def _timeouts_ordered(self) -> ScriptSettings:
        if self.default_timeout > self.max_timeout:
            raise FieldProblem(("default_timeout",), f"{self.default_timeout:g}s must not exceed "
                               f"max_timeout ({self.max_timeout:g}s)")
        return self


class CelerySettings(_Section):
    visibility_timeout: int = Field(7200, ge=60)
    """Seconds before Redis redelivers an unacknowledged task; must exceed every hard time limit."""
    result_expires: int = Field(24 * 3600, ge=60)
    time_limit_grace: int = Field(30, ge=1)
    """Seconds a task gets past its script's timeout before Celery's hard limit kills it."""
    concurrency: int | None = Field(None, ge=1)
    beat_lock_ttl: int = Field(30, ge=2, le=600)
    """Seconds a standby Beat waits after the leader dies before it takes over."""
    queues: list[QueueName] = Field(default_factory=lambda: [DEFAULT_QUEUE, DEFAULT_SCRIPT_QUEUE])
    """Queues a plain ``pitstop worker`` or ``pitstop up`` consumes."""
    task_events: bool = False
    """Workers send task events from the start (``-E``), which Flower needs to list tasks
    (``PITSTOP_TASK_EVENTS=1``; on in docker-compose.yml). They cost worker throughput
    (``bench/flower_events.py``). Off, a running Flower still switches them on in the workers
    it sees (its ``enable_events``), for as long as those workers run."""

    @field_validator("queues")
    @classmethod
    def _some_queue(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one queue for `pitstop worker` / `pitstop up` "
                             "to consume")
        return value


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8787, ge=1, le=65535)
    webhook_secret: SecretStr | None = None
    api_token: SecretStr | None = None
    max_concurrent_bodies: int = Field(4, ge=1, le=256)
    """Request bodies (5 MiB at most each) ``pitstop serve`` reads at once; others wait."""
    body_timeout_seconds: float = Field(10, gt=0, le=600, allow_inf_nan=False)
    """Time a request has to get a body slot and send its whole body (else 503 or 408)."""


def basic_auth_problem(value: str) -> str | None:
    """Why ``value`` is not one usable ``user:password`` login for Flower, or None.

    Flower splits its basic auth on ``,`` into several logins, so ``admin:hunter,2`` would also
    let in a user ``2`` with an empty password. The reason never quotes the value (a password).
    """
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        return "must be user:password, with a non-empty user and password"
    if "," in value:
        return ("must not contain ',': Flower reads a comma as the start of another login "
                "(use one user:password without commas)")
    return None


class FlowerSettings(_Section):
    port: int = Field(5555, ge=1, le=65535)
    basic_auth: SecretStr | None = None
    """``user:password`` (one login, no ``,``); Flower refuses to start without it."""

    @field_validator("basic_auth")
    @classmethod
    def _one_login(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            problem = basic_auth_problem(value.get_secret_value())
            if problem is not None:
                raise ValueError(problem)
        return value


class Settings(_Section):
    """Everything pitstop reads from ``config/pitstop.yaml`` and the environment."""

    project_dir: Path = Path(".")
    """The project: ``PITSTOP_HOME``, else the nearest directory from the working directory up
    holding ``config/pitstop.yaml`` or ``.state/`` (:func:`find_project_dir`). Set by
    :func:`load_settings`, never read from the file."""
    state_dir: Path = Path(STATE_DIR_NAME)
    """Relative in the file: taken from the project directory. Default ``<project>/.state``."""
    config_dir: Path = Path(CONFIG_DIR_NAME)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    secret_key: SecretStr | None = None
    """Key that seals secret ``--env`` values between CI and workers (``pitstop keygen``).
    Unset with the embedded Redis: one is kept in ``<state_dir>/secret.key``."""
    secret_names: list[str] = Field(default_factory=list)
    """Extra environment variable names whose values are secrets (on top of *TOKEN*, *SECRET* …)."""
    redis: RedisSettings = RedisSettings()
    bus: BusSettings = BusSettings()
    scripts: ScriptSettings = ScriptSettings()
    celery: CelerySettings = CelerySettings()
    server: ServerSettings = ServerSettings()
    flower: FlowerSettings = FlowerSettings()

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _visibility_exceeds_time_limits(self) -> Settings:
        longest = self.scripts.max_timeout + self.celery.time_limit_grace
        if self.celery.visibility_timeout <= longest:
            raise FieldProblem(
                ("celery", "visibility_timeout"),
                f"{self.celery.visibility_timeout}s must be longer than the longest task time "
                f"limit (scripts.max_timeout + celery.time_limit_grace = {longest:g}s), or Redis "
                "redelivers tasks that are still running",
            )
        return self

    def sealer(self) -> Sealer | None:
        """How secret values travel through Redis; None when no key is configured or kept.

        The key file (``<state_dir>/secret.key``) is only for the embedded Redis: with a real
        one, CI and the workers must share ``PITSTOP_SECRET_KEY``, and a key file left from
        earlier embedded use is ignored."""
        if self.secret_key is not None:
            return Sealer(self.secret_key.get_secret_value())
        if not self.uses_embedded_redis():
            return None
        return key_file_sealer(self.state_dir, create=True)

    def uses_embedded_redis(self) -> bool:
        """Whether Redis is this project's embedded server: no URL, or the very URL the server
        under :attr:`redis_dir` recorded (what ``pitstop up`` hands its worker and Beat)."""
        if self.redis.url is None:
            return True
        try:
            raw = json.loads((self.redis_dir / SERVER_INFO_FILE).read_text())
            recorded = ServerInfo(pid=int(raw["pid"]), port=int(raw["port"]),
                                  password=str(raw["password"]))
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return recorded.url == self.redis.url.get_secret_value()

    @property
    def redis_dir(self) -> Path:
        return self.redis.embedded_dir or self.state_dir / "redis"


# Environment variable -> key path in Settings. Environment wins over the file.
ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "PITSTOP_REDIS_URL": ("redis", "url"),
    "PITSTOP_STATE_DIR": ("state_dir",),
    "PITSTOP_LOG_LEVEL": ("log_level",),
    "PITSTOP_SECRET_KEY": ("secret_key",),
    "PITSTOP_WEBHOOK_SECRET": ("server", "webhook_secret"),
    "PITSTOP_API_TOKEN": ("server", "api_token"),
    "PITSTOP_SERVER_PORT": ("server", "port"),
    "PITSTOP_FLOWER_BASIC_AUTH": ("flower", "basic_auth"),
    "PITSTOP_ALLOWED_ROOTS": ("scripts", "allowed_roots"),
    "PITSTOP_VISIBILITY_TIMEOUT": ("celery", "visibility_timeout"),
    "PITSTOP_LOST_AFTER_SECONDS": ("scripts", "lost_after_seconds"),
    "PITSTOP_QUEUE_TTL": ("scripts", "queue_ttl_seconds"),
    "PITSTOP_BEAT_LOCK_TTL": ("celery", "beat_lock_ttl"),
    "PITSTOP_TASK_EVENTS": ("celery", "task_events"),
    "PITSTOP_DEFAULT_QUEUE": ("scripts", "default_queue"),
    "PITSTOP_CALLER_ENV": ("scripts", "caller_env"),
}


def find_project_dir(environ: Mapping[str, str] | None = None, *,
                     cwd: Path | None = None) -> Path:
    """The project directory (absolute), found the way git finds its repository.

    ``PITSTOP_HOME`` when set; else the nearest of the working directory and its ancestors that
    holds ``config/pitstop.yaml`` or a ``.state/`` directory; else the working directory. So
    ``cd scripts && pitstop runs`` reads the same Redis and ``.state`` as the project root.
    """
    env = os.environ if environ is None else environ
    here = Path(os.path.abspath(cwd or Path.cwd()))
    home = env.get(HOME_ENV)
    if home:
        project = Path(os.path.abspath(here / Path(home).expanduser()))
        if not project.is_dir():
            raise ConfigError(f"{project} is not a directory", file=f"environment {HOME_ENV}")
        return project
    for candidate in (here, *here.parents):
        if ((candidate / CONFIG_DIR_NAME / SETTINGS_FILE).is_file()
                or (candidate / STATE_DIR_NAME).is_dir()):
            return candidate
    return here


def config_dir_from(environ: Mapping[str, str], project_dir: Path) -> Path:
    """``PITSTOP_CONFIG_DIR`` as given, else ``<project>/config``. A ``PITSTOP_CONFIG_DIR`` that
    is not a directory is a :class:`ConfigError` (a typo must not mean built-in defaults)."""
    explicit = environ.get("PITSTOP_CONFIG_DIR")
    if not explicit:
        return project_dir / CONFIG_DIR_NAME
    if not Path(explicit).is_dir():
        raise ConfigError(f"{explicit} is not a directory (unset it for <project>/config)",
                          file="environment PITSTOP_CONFIG_DIR")
    return Path(explicit)


def _shown(path: Path) -> str:
    """``path`` as errors name it: relative when it lies under the working directory."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_settings(config_dir: Path | None = None,
                  environ: Mapping[str, str] | None = None, *,
                  cwd: Path | None = None) -> Settings:
    """Read ``<config_dir>/pitstop.yaml`` (optional) and apply ``PITSTOP_*`` overrides.

    ``config_dir`` defaults to ``PITSTOP_CONFIG_DIR``, else ``<project>/config``, the project
    being :func:`find_project_dir` (from ``cwd``, default the working directory). Relative
    ``state_dir``, ``redis.embedded_dir`` and ``scripts.allowed_roots`` in the file are taken
    from the project directory; ``PITSTOP_*`` paths are used as given.

    Raises :class:`ConfigError` naming the file (or variable), the key path and the line.
    """
    env = dict(os.environ if environ is None else environ)
    project = find_project_dir(env, cwd=cwd)
    directory = config_dir or config_dir_from(env, project)
    path = directory / SETTINGS_FILE
    shown = _shown(path)
    doc = read_document(path, environ=env, shown_as=shown)
    if doc is not None and "project_dir" in doc.data:
        raise ConfigError("unknown key: the project directory is where config/ is, or "
                          f"{HOME_ENV}", file=shown, key_path="project_dir",
                          line=doc.line_of(("project_dir",)))
    from_file = Settings() if doc is None else validate_document(doc, Settings)
    data = from_file.model_dump(exclude_unset=True)
    data["project_dir"] = project
    data["config_dir"] = directory
    data["state_dir"] = project / data.get("state_dir", STATE_DIR_NAME)
    redis_section = data.get("redis")
    if isinstance(redis_section, dict) and redis_section.get("embedded_dir") is not None:
        redis_section["embedded_dir"] = project / redis_section["embedded_dir"]
    scripts_section = data.get("scripts")
    if isinstance(scripts_section, dict) and "allowed_roots" in scripts_section:
        # Like every path in the file: from the project, not from wherever the worker started.
        scripts_section["allowed_roots"] = [project / root
                                            for root in scripts_section["allowed_roots"]]
    for name, key_path in ENV_OVERRIDES.items():
        raw = env.get(name)
        if raw is None or raw == "":
            continue
        value: Any = raw
        if key_path == ("scripts", "allowed_roots"):
            value = [part for part in raw.split(os.pathsep) if part]
        elif key_path == ("scripts", "caller_env"):
            value = [part.strip() for part in raw.split(",") if part.strip()]
        target = data
        for key in key_path[:-1]:
            section = target.get(key)
            if isinstance(section, BaseModel):
                section = section.model_dump(exclude_unset=True)
            target[key] = dict(section or {})
            target = target[key]
        target[key_path[-1]] = value
    scripts = data.get("scripts")
    if scripts is None or (isinstance(scripts, dict) and "allowed_roots" not in scripts):
        data["scripts"] = {**(scripts or {}), "allowed_roots": [default_scripts_root(directory)]}
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:  # the file alone was valid: the environment made it wrong
        error = exc.errors()[0]
        at = error_key_path(error)
        source = next((name for name, key_path in ENV_OVERRIDES.items()
                       if at[:len(key_path)] == key_path and env.get(name)), None)
        raise ConfigError(error["msg"].removeprefix("Value error, "),
                          file=f"environment {source}" if source else shown,
                          key_path=format_key_path(at),
                          line=None if source or doc is None else doc.lines.get(at)) from None
