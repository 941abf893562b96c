"""pitstop: event-driven automation for build and CI fleets, on Celery + Redis.

The public API; everything else is internal.

    from pitstop import EventBus, CLIWrapper, load_settings, connect
    bus = EventBus(connect(load_settings()))
    bus.publish("phase.1.completed", {"x": 1})
    result = CLIWrapper(timeout=300).wrap("scripts/my_script.py", args=["--flag"])
    # inside a project: logged to .state/cli_executions.jsonl, tool.* events while Redis is up
"""

from pitstop.bus.consumer import GroupConsumer
from pitstop.bus.eventbus import EventBus, Subscription
from pitstop.bus.events import Event, make_event
from pitstop.bus.patterns import PatternIndex, compile_pattern, matches, normalize_type
from pitstop.connection.connect import connect
from pitstop.kernel.errors import (
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
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.settings import Settings, load_settings
from pitstop.kernel.statelog import StateLog, read_log
from pitstop.runs.store import Run, RunStore
from pitstop.scripts.cliwrapper import CLIWrapper
from pitstop.scripts.result import ExecutionResult
from pitstop.triggers.engine import TriggerEngine

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
    "TriggerEngine",
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
