"""Every Redis key, stream, channel, queue and task name pitstop uses, in one place.

Nothing else in the code base spells a key prefix or a task name by hand: grep here first.
"""

from __future__ import annotations

from typing import Final

KEY_PREFIX: Final = "pitstop"

# --- event bus -------------------------------------------------------------------------------
EVENT_STREAM: Final = f"{KEY_PREFIX}:events"
"""Durable, MAXLEN-trimmed log of every accepted event (field ``event`` holds the JSON envelope)."""
DEAD_LETTER_STREAM: Final = f"{KEY_PREFIX}:events:dead"
"""Entries that a consumer group failed to process ``max_deliveries`` times."""
EVENT_CHANNEL_PREFIX: Final = f"{KEY_PREFIX}:ev:"
"""Pub/sub channel per event type: ``pitstop:ev:<type>``, for live fan-out."""
ROUTER_GROUP: Final = "router"
"""Consumer group of the event router."""
EVENT_STREAM_MAXLEN: Final = 100_000
EVENT_DATA_MAX_BYTES: Final = 64 * 1024
EVENT_DATA_MAX_DEPTH: Final = 64
"""Deepest nesting of objects and arrays accepted in event data (redaction and JSON recurse)."""
EVENT_MAX_HOPS: Final = 16
EVENT_SOURCE_MAX_CHARS: Final = 200
"""Longest accepted event ``source`` (printable characters only): it is stored with every event."""
DEDUPE_PREFIX: Final = f"{KEY_PREFIX}:dedupe:"
"""``SET NX`` keys that make redelivery idempotent (``pitstop:dedupe:<scope>:<key>``)."""
HTTP_EVENTS_DEDUPE_PREFIX: Final = f"{DEDUPE_PREFIX}http-events:"
"""``Idempotency-Key`` claims of ``POST /events`` (``<prefix><sha256 of the key>``)."""

# --- runs --------------------------------------------------------------------------------------
RUN_KEY_PREFIX: Final = f"{KEY_PREFIX}:run:"
"""One JSON document per run: ``pitstop:run:<run_id>``."""
RUN_INDEX: Final = f"{KEY_PREFIX}:runs"
"""Sorted set of run ids scored by creation time (epoch seconds)."""
RUN_OUTPUT_PREFIX: Final = f"{KEY_PREFIX}:run-output:"
"""Stream of a run's output lines: ``pitstop:run-output:<run_id>``."""
RUN_OUTPUT_END_PREFIX: Final = f"{KEY_PREFIX}:run-output-end:"
"""Set (``SET NX``, with the end entry) once a run's output stream has its one ``end`` entry."""
RUN_CANCEL_PREFIX: Final = f"{KEY_PREFIX}:run-cancel:"
"""Set while a cancellation of ``<run_id>`` has been requested."""
RUN_OUTPUT_MAXLEN: Final = 10_000
"""Entries kept per output stream; an entry packs many lines (see RUN_OUTPUT_ENTRY_MAX_BYTES)."""
RUN_OUTPUT_ENTRY_MAX_BYTES: Final = 64 * 1024
"""Most bytes of lines packed into one output stream entry (a single longer line goes alone)."""
RUN_TTL_SECONDS: Final = 30 * 24 * 3600

# --- webhooks ----------------------------------------------------------------------------------
WEBHOOK_DELIVERY_PREFIX: Final = f"{KEY_PREFIX}:webhook-delivery:"
WEBHOOK_BODY_PREFIX: Final = f"{KEY_PREFIX}:webhook-body:"
"""``pitstop:webhook-body:<sha256 of the body>``: a signed body is accepted once per dedupe window,
whatever delivery id or event name it comes with (the signature covers only the body)."""
WEBHOOK_DELIVERY_TTL_SECONDS: Final = 7 * 24 * 3600

# --- beat --------------------------------------------------------------------------------------
BEAT_LOCK_KEY: Final = f"{KEY_PREFIX}:beat:lock"
BEAT_HEARTBEAT_KEY: Final = f"{KEY_PREFIX}:beat:heartbeat"

# --- celery ------------------------------------------------------------------------------------
DEFAULT_QUEUE: Final = "default"
SCRIPT_QUEUES: Final = ("linux", "pwsh", "windows", "macos")
DEFAULT_SCRIPT_QUEUE: Final = "linux"
"""Where ``pitstop run`` sends a script unless told otherwise (``scripts.default_queue``)."""
"""Well-known script queues; any other name given with ``--queue`` is declared on demand."""
TASK_RUN_SCRIPT: Final = "pitstop.run_script"
TASK_REAP_RUNS: Final = "pitstop.reap_lost_runs"
EXPIRES_SLACK_SECONDS: Final = 600
"""Added to a run's queue deadline for Celery's ``expires``, which the sender's clock stamps and
the worker's checks: skewed clocks must not drop a message that is still in time (the run
record's deadline, on Redis's clock, is what decides)."""

# --- state logs --------------------------------------------------------------------------------
LOG_RUNS: Final = "runs"
LOG_CLI_EXECUTIONS: Final = "cli_executions"
LOG_WEBHOOKS: Final = "webhooks"

# --- runs and the events they publish ----------------------------------------------------------
RUN_KIND_SCRIPT: Final = "script"
EVENT_TOOL_INVOKED: Final = "tool.invoked"
EVENT_TOOL_SUCCEEDED: Final = "tool.succeeded"
EVENT_TOOL_FAILED: Final = "tool.failed"

DEFAULT_ENV_ALLOWLIST: tuple[str, ...] = (
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "LC_*", "TZ", "TERM",
    "TMPDIR", "TEMP", "TMP", "SHELL", "SYSTEMROOT", "COMSPEC", "PATHEXT", "WINDIR",
    "VIRTUAL_ENV", "PYTHONPATH", "PYTHONIOENCODING",
)
"""Parent environment names passed to scripts; a trailing ``*`` matches a prefix."""

DEFAULT_CALLER_ENV: tuple[str, ...] = (
    # build data: versions, SHAs, branches, tags, build names and numbers
    "CI_*", "BUILD_*", "GIT_SHA", "GIT_COMMIT", "GIT_BRANCH", "GIT_TAG", "*_SHA", "*_COMMIT",
    "*_BRANCH", "BRANCH", "TAG", "VERSION", "*_VERSION", "RELEASE", "GITHUB_REF",
    "GITHUB_REF_NAME", "GITHUB_HEAD_REF", "GITHUB_BASE_REF", "GITHUB_RUN_ID",
    "GITHUB_RUN_NUMBER", "GITHUB_RUN_ATTEMPT", "GITHUB_REPOSITORY", "GITHUB_WORKFLOW",
    "GITHUB_JOB", "GITHUB_EVENT_NAME", "GITHUB_ACTOR",
    # secrets handed to the script (sealed on their way, redacted from everything)
    "*_TOKEN", "*_SECRET", "*_PASSWORD", "*_API_KEY",
)
"""Names a caller may set with ``pitstop run --env`` (``scripts.caller_env``, case-sensitive
globs): plain CI data and secrets, never a name a tool reads to find code (``CC``, ``HOME``,
``MAKEFLAGS``, ``OPENSSL_CONF``, ``*_PROXY`` …). ``PROTECTED_ENV`` is refused even if listed."""
QUEUE_NAME_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
"""A queue ``pitstop run --queue`` accepts: letters, digits, ``.``, ``_``, ``-`` (Celery, Redis
keys and ``pitstop worker -Q a,b`` all take it as one name)."""
ENV_NAME_PATTERN: Final = r"[A-Za-z_][A-Za-z0-9_]*"
"""A variable name a caller may set with ``--env``: letters, digits and ``_``, no leading digit."""

# --- workstreams ----------------------------------------------------------------------------------

# --- triggers -------------------------------------------------------------------------------------

# --- triage ---------------------------------------------------------------------------------------

# --- patches --------------------------------------------------------------------------------------

# --- alerts ---------------------------------------------------------------------------------------

# --- deploy ---------------------------------------------------------------------------------------
