"""pitstop: event-driven automation for build and CI fleets, on Celery + Redis.

The public API; everything else is internal.

    from pitstop import EventBus, CLIWrapper, load_settings, connect
    bus = EventBus(connect(load_settings()))
    bus.publish("phase.1.completed", {"x": 1})
    result = CLIWrapper(timeout=300).wrap("scripts/my_script.py", args=["--flag"])
"""

from pitstop.bus import EventBus, Subscription
from pitstop.cliwrapper import CLIWrapper, ExecutionResult
from pitstop.connection import connect
from pitstop.consumer import GroupConsumer
from pitstop.errors import (
    ConfigError,
    HopLimitExceeded,
    InterpreterNotFound,
    InvalidEventType,
    InvalidPattern,
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
from pitstop.events import Event, make_event
from pitstop.patterns import PatternIndex, compile_pattern, matches, normalize_type
from pitstop.redaction import Redactor
from pitstop.runs import Run, RunStore
from pitstop.settings import Settings, load_settings
from pitstop.statelog import StateLog, read_log

__all__ = [
    "CLIWrapper",
    "ConfigError",
    "Event",
    "EventBus",
    "ExecutionResult",
    "GroupConsumer",
    "HopLimitExceeded",
    "InterpreterNotFound",
    "InvalidEventType",
    "InvalidPattern",
    "PathNotAllowed",
    "PatternIndex",
    "PayloadTooLarge",
    "PitstopError",
    "Redactor",
    "RedisUnavailable",
    "Run",
    "RunNotFound",
    "RunStore",
    "ScriptError",
    "ScriptFailed",
    "Settings",
    "SignatureMismatch",
    "StateLog",
    "Subscription",
    "ValidationError",
    "WebhookError",
    "compile_pattern",
    "connect",
    "load_settings",
    "make_event",
    "matches",
    "normalize_type",
    "read_log",
]
