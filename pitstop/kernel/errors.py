"""The one error tree of pitstop.

Every error a user can cause derives from :class:`PitstopError`; the CLI turns it into one clear
message and an exit code (``exit_code``, from the one table :class:`ExitCode`) instead of a
traceback.

    PitstopError
    ├── ConfigError            a config file or setting is invalid (file, key path, line)
    │   └── WorkstreamUnavailable  a workstream waits for a step kind not installed yet
    ├── ValidationError        an input value is invalid (event type, pattern, payload, argument)
    │   ├── InvalidEventType
    │   ├── InvalidPattern
    │   ├── PayloadTooLarge
    │   ├── HopLimitExceeded
    │   └── TriageInputError   a file to triage is binary, too large, or bad/unsafe XML
    ├── ScriptError            a script cannot be run at all
    │   ├── PathNotAllowed     outside the allowed roots, or not a script
    │   └── InterpreterNotFound
    ├── ScriptFailed           a script ran and did not succeed (exit code, timeout, cancel, lost)
    ├── RedisUnavailable       no Redis could be reached or started
    ├── RunNotFound
    ├── NothingToCancel        the run has already ended
    ├── WebhookError           a webhook delivery was refused
    │   └── SignatureMismatch
    └── PatchError             a patch cannot be validated or landed
        ├── UnsafePatch        refused before anything was written (paths, modes, sizes)
        ├── GitTooOld          git is missing or older than 2.39.2
        ├── LandingFailed      a validated patch could not be merged or pushed
        └── ReviewNotFound
    DeployError                a deployment cannot start or go on
        ├── DeployLocked       another deployment holds the environment's lock
        ├── FencedOut          this deployment lost its lock to a newer one (stale writer)
        ├── ApprovalRefused    not an approver, approving one's own, or nothing to approve
        └── DeploymentNotFound
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes of every ``pitstop`` command: this table, and only it (the README prints
    it). ``run --wait`` and ``show --follow`` otherwise exit with the script's own code."""

    OK = 0
    FAILURE = 1
    """A check or an operation failed: ``doctor`` found a problem, the run had already ended."""
    USAGE = 2
    """Bad option, argument, input or configuration; a script that cannot start."""
    REDIS_UNAVAILABLE = 3
    """Redis cannot be reached (or the embedded one started)."""
    NOT_FOUND = 4
    """No such thing: no run (or review) has that id."""
    INTERNAL = 70
    """A bug of pitstop's (EX_SOFTWARE): the message asks to report it."""
    TEMPFAIL = 75
    """A run was lost with its worker, or expired in its queue (EX_TEMPFAIL): try again."""
    TIMEOUT = 124
    """A script timed out (as timeout(1) exits)."""
    INTERRUPTED = 130
    """Cancelled or interrupted (Ctrl-C, SIGTERM/SIGHUP from a cancelled CI job)."""


class PitstopError(Exception):
    """Base class of every error pitstop raises on purpose."""

    exit_code: int = ExitCode.FAILURE


class ConfigError(PitstopError):
    """A configuration file or setting is invalid.

    The message names the file, the key path and, when known, the line.
    """

    exit_code = ExitCode.USAGE

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        key_path: str | None = None,
        line: int | None = None,
    ) -> None:
        self.file = file
        self.key_path = key_path
        self.line = line
        self.detail = message
        where = ""
        if file:
            where = file + (f":{line}" if line else "")
        if key_path:
            where = f"{where} at {key_path}" if where else key_path
        super().__init__(f"{where}: {message}" if where else message)


class WorkstreamUnavailable(ConfigError):
    """A workstream uses a step kind that is not installed yet: it is loaded, but cannot run."""


class ValidationError(PitstopError):
    """An input value is invalid."""

    exit_code = ExitCode.USAGE


class InvalidEventType(ValidationError):
    """An event type is empty, has an empty segment, or uses characters outside ``[a-z0-9_-]``."""


class InvalidPattern(ValidationError):
    """An event pattern is malformed."""


class PayloadTooLarge(ValidationError):
    """An event's ``data`` is larger than the configured cap."""


class HopLimitExceeded(ValidationError):
    """An event chain went deeper than the hop limit: most likely a trigger loop."""


class ScriptError(PitstopError):
    """A script cannot be run at all (nothing was started)."""

    exit_code = ExitCode.USAGE


class PathNotAllowed(ScriptError):
    """A script path resolves outside the allowed roots, or is not an allowed script."""


class InterpreterNotFound(ScriptError):
    """The interpreter a script needs (``pwsh``, ``bash``) is not installed."""


class ScriptFailed(PitstopError):
    """A script ran (or was claimed) and did not succeed.

    The ``run_script`` task raises it after recording the run, so Celery and Flower show the
    task as FAILURE; the run record stays the full account. Its only argument is the message,
    so Celery's JSON result backend can rebuild it.
    """


class RedisUnavailable(PitstopError):
    """Redis cannot be reached (or the embedded server cannot be started)."""

    exit_code = ExitCode.REDIS_UNAVAILABLE


class RunNotFound(PitstopError):
    """No run has the given id."""

    exit_code = ExitCode.NOT_FOUND


class NothingToCancel(PitstopError):
    """The run to cancel has already ended."""


class WebhookError(PitstopError):
    """A webhook delivery was refused."""


class SignatureMismatch(WebhookError):
    """A webhook signature is missing, malformed or wrong."""


class TriageInputError(ValidationError):
    """A file given to triage cannot be read as test output: binary, too large, not
    well-formed XML, or XML that declares entities (a possible XML bomb)."""


class PatchError(PitstopError):
    """A patch cannot be validated or landed (see :mod:`pitstop.patches`)."""


class UnsafePatch(PatchError):
    """A patch was refused before anything was written: it names paths outside the tree, into
    ``.git/``, symlink or submodule modes, a binary over the cap, or cannot be parsed safely."""

    exit_code = ExitCode.USAGE


class GitTooOld(PatchError):
    """git is missing, or older than the version whose ``git apply`` is safe to run."""

    exit_code = ExitCode.USAGE


class LandingFailed(PatchError):
    """A validated patch could not be merged or pushed (conflict with the moved target, push
    refused, lane busy)."""


class ReviewNotFound(PatchError):
    """No patch review has the given id."""

    exit_code = ExitCode.NOT_FOUND


class DeployError(PitstopError):
    """A deployment cannot start or go on (see :mod:`pitstop.deploy`)."""


class DeployLocked(DeployError):
    """Another deployment holds the environment (its fenced lock): refused, not interleaved."""


class FencedOut(DeployError):
    """This deployment's lock expired and a newer deployment took the environment: its writes
    are refused (the fencing token is stale)."""


class ApprovalRefused(DeployError):
    """An approval was refused: not a listed approver, the requester approving their own
    deployment, or the deployment is not awaiting approval."""

    exit_code = ExitCode.USAGE


class DeploymentNotFound(DeployError):
    """No deployment has the given id."""

    exit_code = ExitCode.NOT_FOUND
