"""The shared kernel every component stands on: names, errors, settings, state logs, redaction,
process facts, time parsing and sealing. It imports no other pitstop package."""

from pitstop.kernel.errors import (
    ConfigError,
    HopLimitExceeded,
    InterpreterNotFound,
    InvalidEventType,
    InvalidPattern,
    NothingToCancel,
    PathNotAllowed,
    PayloadTooLarge,
    PitstopError,
    RedisUnavailable,
    RunNotFound,
    ScriptError,
    ScriptFailed,
    SignatureMismatch,
    ValidationError,
    WebhookError,
)
from pitstop.kernel.ids import compact_json, new_id, utc_iso
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.sealing import Sealer
from pitstop.kernel.settings import Settings, load_settings
from pitstop.kernel.statelog import StateLog, read_log
from pitstop.kernel.timeparse import parse_since

__all__ = [
    "ConfigError",
    "HopLimitExceeded",
    "InterpreterNotFound",
    "InvalidEventType",
    "InvalidPattern",
    "NothingToCancel",
    "PathNotAllowed",
    "PayloadTooLarge",
    "PitstopError",
    "Redactor",
    "RedisUnavailable",
    "RunNotFound",
    "ScriptError",
    "ScriptFailed",
    "Sealer",
    "Settings",
    "SignatureMismatch",
    "StateLog",
    "ValidationError",
    "WebhookError",
    "compact_json",
    "load_settings",
    "new_id",
    "parse_since",
    "read_log",
    "utc_iso",
]
