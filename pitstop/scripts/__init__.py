"""Script execution: the confined, timed, redacted wrapper, its policy, and the run's two ends
(dispatching from the CLI, running on a worker)."""

from pitstop.scripts.cliwrapper import CLIWrapper
from pitstop.scripts.dispatch import ScriptDispatcher
from pitstop.scripts.policy import ScriptPolicy, check_caller_env
from pitstop.scripts.result import ExecutionResult
from pitstop.scripts.runner import ScriptRequest, ScriptRunner

__all__ = ["CLIWrapper", "ExecutionResult", "ScriptDispatcher", "ScriptPolicy", "ScriptRequest",
           "ScriptRunner", "check_caller_env"]
