"""``config/alerts.yaml``: channels, receivers, the routing tree, inhibition, delivery, summary.

Loaded with :mod:`pitstop.kernel.configfile` (safe YAML, errors naming file, key path and line).
Secrets (webhook URLs, SMTP passwords, header values, Apprise URLs) must be ``${ENV_NAME}``
references: a literal value in one of those keys is refused, and an unset variable is an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, BeforeValidator, Field, field_validator, model_validator

from pitstop.alerts.fields import Duration, HeaderSafe, Patterns, Strict, as_list, parse_duration
from pitstop.alerts.routing import (
    LOG_RECEIVER,
    MatchModel,
    Route,
    RouteModel,
    compile_routes,
    walk_models,
)
from pitstop.kernel.configfile import (
    Document,
    FieldProblem,
    KeyPath,
    error_key_path,
    format_key_path,
    parse_yaml,
    validate_document,
)
from pitstop.kernel.constants import ALERTS_CONFIG_FILE
from pitstop.kernel.errors import ConfigError

__all__ = ["AlertsConfig", "Route", "load_alerts_config", "parse_alerts_config",
           "parse_duration"]

_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,64}\Z")
DEFAULT_SUBSCRIPTIONS = ("**.error", "**.critical", "**.failed", "alert.**")
DEFAULT_RESOLVE_ON = ("**.succeeded", "**.success", "**.completed", "**.passed", "**.ok",
                      "**.resolved", "**.recovered", "**.fixed")


class RateLimit(Strict):
    per_second: float = Field(1.0, gt=0)
    burst: int = Field(3, ge=1)


class _Channel(Strict):
    fallback: str | None = None
    """Channel that takes a notification this one could not deliver."""
    max_attempts: int | None = Field(None, ge=1, le=50)
    title: str | None = None
    """Jinja2 template (sandboxed) of the title / subject."""
    text: str | None = None
    """Jinja2 template (sandboxed) of the body."""
    timeout: Duration = 10.0


class SlackChannel(_Channel):
    type: Literal["slack"]
    webhook_url: str
    rate_limit: RateLimit | None = RateLimit()


class WebhookChannel(_Channel):
    type: Literal["webhook"]
    url: str
    headers: dict[str, HeaderSafe] = Field(default_factory=dict)
    rate_limit: RateLimit | None = None

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} must be letters, digits and '-'")
        return value


class EmailChannel(_Channel):
    type: Literal["email"]
    host: HeaderSafe
    port: int | None = Field(None, ge=1, le=65535)
    security: Literal["starttls", "ssl", "plain"]
    """Explicit: ``starttls`` (587), ``ssl`` (465, TLS from the start) or ``plain`` (25)."""
    username: HeaderSafe | None = None
    password: str | None = None
    sender: HeaderSafe = Field(alias="from")
    to: Annotated[list[HeaderSafe], BeforeValidator(as_list)]
    allow_plain_auth: bool = False
    """Log in over an unencrypted connection (``security: plain``): only for a local relay."""
    verify_tls: bool = True

    @field_validator("sender", "to")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        for address in value if isinstance(value, list) else [value]:
            if "@" not in address or any(c in address for c in ",;\t"):
                raise ValueError(f"{address!r} is not one e-mail address")
        if isinstance(value, list) and not value:
            raise ValueError("name at least one recipient")
        return value

    @model_validator(mode="after")
    def _auth_needs_tls(self) -> EmailChannel:
        if self.security == "plain" and self.password is not None and not self.allow_plain_auth:
            raise FieldProblem(("password",), "would be sent in the clear with security: plain "
                               "(use starttls or ssl, or set allow_plain_auth for a local relay)")
        if (self.username is None) != (self.password is None):
            raise FieldProblem(("username",), "username and password go together")
        return self

    @property
    def effective_port(self) -> int:
        return self.port or {"starttls": 587, "ssl": 465, "plain": 25}[self.security]


class AppriseChannel(_Channel):
    type: Literal["apprise"]
    urls: Annotated[list[str], BeforeValidator(as_list)]


ChannelModel = SlackChannel | EmailChannel | WebhookChannel | AppriseChannel
CHANNEL_TYPES: dict[str, type[BaseModel]] = {
    "slack": SlackChannel, "email": EmailChannel, "webhook": WebhookChannel,
    "apprise": AppriseChannel}


def _channel_models(value: Any) -> Any:
    """Validate each channel with the model its ``type`` names, so an error's key path is the
    channel's own (``channels.mail.to[0]``), not pydantic's union tag."""
    if not isinstance(value, dict):
        return value
    built: dict[str, Any] = {}
    for name, raw in value.items():
        if not isinstance(raw, dict):
            raise FieldProblem((name,), "a channel must be a mapping with a type")
        model = CHANNEL_TYPES.get(str(raw.get("type")))
        if model is None:
            raise FieldProblem((name, "type"), f"unknown channel type {raw.get('type')!r} "
                               f"(known: {', '.join(CHANNEL_TYPES)})")
        try:
            built[name] = model.model_validate(raw)
        except pydantic.ValidationError as exc:
            error = exc.errors()[0]
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key"
            elif error["type"] == "missing":
                message = "required key is missing"
            raise FieldProblem((name, *error_key_path(error)), message) from None
    return built

SECRET_KEYS: dict[str, tuple[str, ...]] = {
    "slack": ("webhook_url",), "webhook": ("url", "headers"), "email": ("password",),
    "apprise": ("urls",),
}
"""Per channel type, the keys whose values are secrets: ``${ENV}`` references only."""


class StormControl(Strict):
    max_messages: int = Field(10, ge=1)
    """Messages a receiver gets per window; past that, due groups wait for one digest."""
    window: Duration = 60.0


class ReceiverModel(Strict):
    channels: list[str] = Field(default_factory=list)
    storm: StormControl = StormControl()


class InhibitRule(Strict):
    source: MatchModel
    target: MatchModel
    equal: list[str] = Field(default_factory=list)


class AckSettings(Strict):
    base_url: str = "http://127.0.0.1:8787"
    """Where ``pitstop serve`` is reached; ack links in messages point there."""
    link_ttl: Duration = 7 * 86400


class DeliverySettings(Strict):
    max_attempts: int = Field(5, ge=1, le=50)
    backoff_base: Duration = 2.0
    backoff_max: Duration = 300.0
    lease: Duration = 60.0
    """How long a send may take before the sweeper looks at it (longer than any channel timeout)."""
    requeue_after: Duration = 30.0
    """A queued delivery no worker claimed this long is sent to the queue again."""


class SummarySettings(Strict):
    receiver: str | None = None
    at: str = "08:00"
    """UTC time of day after which yesterday's summary is sent."""

    @field_validator("at")
    @classmethod
    def _time_of_day(cls, value: str) -> str:
        if not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d", value):
            raise ValueError("must be HH:MM (UTC)")
        return value


class AlertsFile(Strict):
    enabled: bool = True
    subscriptions: Patterns = Field(default_factory=lambda: list(DEFAULT_SUBSCRIPTIONS))
    resolve_on: Patterns = Field(default_factory=lambda: list(DEFAULT_RESOLVE_ON))
    min_severity: Literal["debug", "info", "warning", "error", "critical"] = "warning"
    leader_ttl: Duration = 10.0
    ack: AckSettings = AckSettings()
    delivery: DeliverySettings = DeliverySettings()
    summary: SummarySettings = SummarySettings()
    channels: Annotated[dict[str, ChannelModel], BeforeValidator(_channel_models)] = \
        Field(default_factory=dict)
    receivers: dict[str, ReceiverModel] = Field(default_factory=dict)
    route: RouteModel = RouteModel()
    inhibit_rules: list[InhibitRule] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> AlertsFile:
        for name, receiver in self.receivers.items():
            for index, wanted in enumerate(receiver.channels):
                if wanted not in self.channels:
                    raise FieldProblem(("receivers", name, "channels", index),
                                       f"unknown channel {wanted!r} (defined: "
                                       f"{', '.join(self.channels) or 'none'})")
        for name, channel in self.channels.items():
            seen = {name}
            target = channel.fallback
            while target is not None:
                if target not in self.channels:
                    raise FieldProblem(("channels", name, "fallback"),
                                       f"unknown channel {target!r}")
                if target in seen:
                    raise FieldProblem(("channels", name, "fallback"),
                                       f"fallbacks loop back to {target!r}")
                seen.add(target)
                target = self.channels[target].fallback
        for path, route in walk_models(self.route, ("route",)):
            for key in ("receiver", "escalate_to"):
                value = getattr(route, key)
                if value is not None and value not in self.receivers and value != LOG_RECEIVER:
                    raise FieldProblem((*path, key), f"unknown receiver {value!r} (defined: "
                                       f"{', '.join(self.receivers) or 'none'})")
        if self.route.match is not None:
            raise FieldProblem(("route", "match"), "the root route matches every alert: "
                               "put matchers on its routes")
        if self.summary.receiver is not None and self.summary.receiver not in self.receivers:
            raise FieldProblem(("summary", "receiver"),
                               f"unknown receiver {self.summary.receiver!r}")
        return self


@dataclass(frozen=True)
class AlertsConfig:
    """The validated file plus what is derived from it (the compiled tree, the secrets)."""

    file: AlertsFile
    root: Route
    path: str = ""
    secrets: tuple[str, ...] = ()
    """Every value resolved into a secret key: the redactor must know them."""
    routes: dict[str, Route] = field(default_factory=dict)

    @classmethod
    def build(cls, file: AlertsFile, *, path: str = "", secrets: tuple[str, ...] = ()
              ) -> AlertsConfig:
        root = compile_routes(file.route, None, "root")
        return cls(file=file, root=root, path=path, secrets=secrets,
                   routes={route.id: route for route in root.walk()})

    def receiver_channels(self, receiver: str) -> list[str]:
        model = self.file.receivers.get(receiver)
        return list(model.channels) if model is not None else []

    def storm(self, receiver: str) -> StormControl:
        model = self.file.receivers.get(receiver)
        return model.storm if model is not None else StormControl()


class _Probe(Mapping[str, str]):
    """An environment in which every variable is set, to a marker: it shows which values came
    from ``${ENV}`` references."""

    def __getitem__(self, name: str) -> str:
        return f"\x00{name}\x00"

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _check_secret_references(probe: Document) -> None:
    channels = probe.data.get("channels") if isinstance(probe.data, dict) else None
    if not isinstance(channels, dict):
        return
    for name, channel in channels.items():
        if not isinstance(channel, dict):
            continue
        for key in SECRET_KEYS.get(str(channel.get("type")), ()):
            value = channel.get(key)
            items: list[tuple[KeyPath, Any]]
            if isinstance(value, dict):
                items = [(("channels", name, key, k), v) for k, v in value.items()]
            elif isinstance(value, list):
                items = [(("channels", name, key, i), v) for i, v in enumerate(value)]
            else:
                items = [(("channels", name, key), value)] if value is not None else []
            for path, item in items:
                if isinstance(item, str) and "\x00" not in item:
                    raise ConfigError("is a secret: write it as a ${ENV_NAME} reference and "
                                      "set the variable, never the value in the file",
                                      file=probe.file, key_path=format_key_path(path),
                                      line=probe.line_of(path))


def _secret_values(file: AlertsFile) -> tuple[str, ...]:
    values: list[str] = []
    for channel in file.channels.values():
        if isinstance(channel, SlackChannel):
            values.append(channel.webhook_url)
        elif isinstance(channel, WebhookChannel):
            values += [channel.url, *channel.headers.values()]
        elif isinstance(channel, EmailChannel) and channel.password:
            values.append(channel.password)
        elif isinstance(channel, AppriseChannel):
            values += channel.urls
    return tuple(v for v in values if v)


def parse_alerts_config(text: str, *, file: str,
                        environ: Mapping[str, str] | None = None) -> AlertsConfig:
    """Validate the text of an alerts file; ConfigError names file, key path and line."""
    probe = parse_yaml(text, file=file, environ=_Probe())
    _check_secret_references(probe)
    doc = parse_yaml(text, file=file, environ=environ)
    if doc.data is None:
        doc.data = {}
    if not isinstance(doc.data, dict):
        raise ConfigError("the top level must be a mapping of keys", file=file, line=1)
    model = validate_document(doc, AlertsFile)
    config = AlertsConfig.build(model, path=file, secrets=_secret_values(model))
    from pitstop.alerts.templates import check_templates

    check_templates(config, doc)
    return config


def alerts_config_path(config_dir: Path) -> Path:
    return config_dir / ALERTS_CONFIG_FILE


def load_alerts_config(config_dir: Path, *, environ: Mapping[str, str] | None = None,
                       missing_ok: bool = True) -> AlertsConfig | None:
    """``<config_dir>/alerts.yaml`` validated; None when it does not exist (and ``missing_ok``)."""
    path = alerts_config_path(config_dir)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return None
        raise ConfigError("file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read: {exc}", file=str(path)) from None
    return parse_alerts_config(text, file=_shown(path), environ=environ)


def _shown(path: Path) -> str:
    """``path`` as errors name it: relative when it lies under the working directory."""
    try:
        return str(path.absolute().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def default_config() -> AlertsConfig:
    """What applies with an empty file: default subscriptions, everything to the log only."""
    return AlertsConfig.build(AlertsFile())
