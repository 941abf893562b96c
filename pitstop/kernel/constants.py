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
API_EVENT_SOURCE: Final = "api:token"
"""The ``source`` of events published through ``POST /events`` (``api:token/<what the caller
says>``): an API event never passes for a verified webhook's (``github``) or a worker's."""
RESERVED_EVENT_ROOTS: Final = frozenset({
    "tool", "run", "github", "workstream", "triage", "patch", "deploy", "alerting", "schedule",
})
"""First segments of the event types only pitstop itself or a verified webhook publishes:
``POST /events`` refuses them (403). A component that publishes a new family adds its root here."""

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
UP_LOCK_FILE: Final = "up.lock"
"""Under the state dir: held (``flock``) by the one ``pitstop up`` of a project on the embedded
Redis, with its pid in it."""

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
    "CI_*", "BUILD_NUMBER", "BUILD_ID", "BUILD_TYPE", "BUILD_NAME", "BUILD_TAG", "BUILD_URL",
    "BUILD_MODE", "BUILD_LABEL", "GIT_SHA", "GIT_COMMIT", "GIT_BRANCH", "GIT_TAG", "*_SHA",
    "*_COMMIT", "*_BRANCH", "BRANCH", "TAG", "VERSION", "*_VERSION", "RELEASE", "GITHUB_REF",
    "GITHUB_REF_NAME", "GITHUB_HEAD_REF", "GITHUB_BASE_REF", "GITHUB_RUN_ID",
    "GITHUB_RUN_NUMBER", "GITHUB_RUN_ATTEMPT", "GITHUB_REPOSITORY", "GITHUB_WORKFLOW",
    "GITHUB_JOB", "GITHUB_EVENT_NAME", "GITHUB_ACTOR",
    # secrets handed to the script (sealed on their way, redacted from everything)
    "*_TOKEN", "*_SECRET", "*_PASSWORD", "*_API_KEY",
)
"""Names a caller may set with ``pitstop run --env`` (``scripts.caller_env``, case-sensitive
globs): plain CI data and secrets, never a name a tool reads to find code (``CC``, ``HOME``,
``MAKEFLAGS``, ``OPENSSL_CONF``, ``*_PROXY``, and so no ``BUILD_*``: ``BUILD_CC`` is glibc's
build compiler). ``PROTECTED_ENV`` is refused even if listed."""
QUEUE_NAME_PATTERN: Final = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
"""A queue ``pitstop run --queue`` accepts: letters, digits, ``.``, ``_``, ``-`` (Celery, Redis
keys and ``pitstop worker -Q a,b`` all take it as one name)."""
ENV_NAME_PATTERN: Final = r"[A-Za-z_][A-Za-z0-9_]*"
"""A variable name a caller may set with ``--env``: letters, digits and ``_``, no leading digit."""

# --- workstreams ----------------------------------------------------------------------------------
RUN_KIND_WORKSTREAM: Final = "workstream"
"""Run records of workstream runs (their steps, states, times, attempts and triggering event)."""
TASK_WORKSTREAM_STEP: Final = "pitstop.workstream_step"
"""One attempt of one workstream step, sent to the step's queue."""
TASK_REAP_WORKSTREAMS: Final = "pitstop.reap_workstreams"
"""Beat's repair of workstream runs: dead step workers, unsent steps, unfinished endings."""
WS_ACTIVE_RUNS: Final = f"{KEY_PREFIX}:ws:active"
"""Set of workstream run ids not yet finalized (what the reaper looks at)."""
WS_SLOT_PREFIX: Final = f"{KEY_PREFIX}:ws:slot:"
"""``<prefix><workstream>:<key hash>``: the run holding a concurrency slot."""
WS_SLOT_QUEUE_PREFIX: Final = f"{KEY_PREFIX}:ws:slot-queue:"
"""``<prefix><workstream>:<key hash>``: runs waiting for that slot (policy ``queue``), in order."""
WS_LAUNCH_PREFIX: Final = f"{DEDUPE_PREFIX}ws-launch:"
"""``<prefix><launch key>``: the first launch made with that key (idempotent launches)."""
WS_STEP_BEAT_PREFIX: Final = f"{KEY_PREFIX}:ws:beat:"
"""``<prefix><run>:<step>:<attempt>``: set (with a TTL) while a worker executes that attempt."""
WS_STEP_STOP_PREFIX: Final = f"{KEY_PREFIX}:ws:stop:"
"""``<prefix><run>:<step>``: set when one running step must stop (a sibling failed)."""
EVENT_WORKSTREAM_COMPLETED: Final = "workstream.{id}.completed"
EVENT_WORKSTREAM_FAILED: Final = "workstream.{id}.failed"
"""Published when a workstream run ends (failed, timed out or cancelled: ``data.status`` says)."""
PLANNED_STEP_KINDS: Final = ("validate_patch", "fix_lint", "triage", "alert", "deploy")
"""Step kinds other components register: a workstream using one not yet installed is loaded,
marked unavailable with the reason, instead of failing the whole file."""


# --- triggers -------------------------------------------------------------------------------------
TRIGGERS_FILE: Final = "triggers.yaml"
"""The trigger rules, under the config directory (``config/triggers.yaml``)."""
WORKSTREAMS_FILE: Final = "workstreams.yaml"
"""The workstream definitions the triggers launch (``config/workstreams.yaml``)."""
TRIGGER_KEY_PREFIX: Final = f"{KEY_PREFIX}:triggers:"
TRIGGER_DISABLED_KEY: Final = f"{TRIGGER_KEY_PREFIX}disabled"
"""Hash rule id -> JSON ``{by, at, reason}`` of the rules disabled at run time (every router reads it)."""
TRIGGER_CONFIG_KEY: Final = f"{TRIGGER_KEY_PREFIX}config"
"""Hash: the config in force fleet-wide (``version``, the YAML texts, who loaded it and when)."""
TRIGGER_CONFIG_ERROR_KEY: Final = f"{TRIGGER_KEY_PREFIX}config-error"
"""Hash: the last refused config edit (``error``, ``at``, ``by``), cleared by the next good load."""
TRIGGER_DEDUPE_PREFIX: Final = f"{DEDUPE_PREFIX}trigger:"
"""``pitstop:dedupe:trigger:<rule>:<sha256 of the rendered dedupe key>`` -> the event id that won."""
TRIGGER_THROTTLE_PREFIX: Final = f"{TRIGGER_KEY_PREFIX}throttle:"
"""Sorted set per rule (and throttle key): launches in the window, scored by time."""
TRIGGER_DEBOUNCE_PREFIX: Final = f"{TRIGGER_KEY_PREFIX}debounce:"
"""``<prefix><rule>:<key hash>``: the last event of a debounced burst (JSON)."""
TRIGGER_DEBOUNCE_DUE_KEY: Final = f"{TRIGGER_KEY_PREFIX}debounce-due"
"""Sorted set of pending debounced launches (``<rule>:<key hash>``) scored by due time (ms)."""
TRIGGER_SLOT_PREFIX: Final = f"{TRIGGER_KEY_PREFIX}slot:"
"""``<prefix><rule>:<slot epoch>`` set NX by whoever fires a schedule slot: at most once."""
TRIGGER_CURSOR_KEY: Final = f"{TRIGGER_KEY_PREFIX}schedule-cursor"
"""Hash rule id -> epoch seconds up to which its schedule slots have been considered."""
TRIGGER_SLOT_TTL_SECONDS: Final = 8 * 24 * 3600
TRIGGER_DEDUPE_TTL_SECONDS: Final = 7 * 24 * 3600
"""How long a launched (event, rule) pair stays remembered when the rule sets no window."""
TASK_FIRE_SCHEDULES: Final = "pitstop.fire_schedules"
EVENT_SCHEDULE_FIRED: Final = "schedule.fired"
"""Published when a schedule slot fires; the launched run's trace starts at it."""
BEAT_ENTRY_SCHEDULES: Final = "trigger-schedules"
LOG_TRIGGER_EXECUTIONS: Final = "trigger_executions"
ROUTER_BLOCK_MS: Final = 500
"""Longest a router waits on XREADGROUP before it looks at due debounces and config changes."""
ROUTER_BATCH: Final = 100
ROUTER_ENV: Final = "PITSTOP_ROUTER"
"""Set to ``0`` to keep a worker out of the router group (it still runs tasks)."""

# --- triage ---------------------------------------------------------------------------------------
TRIAGE_CONFIG_FILE: Final = "triage.yaml"
"""Known-flaky tests, flaky history window, action overrides (``config/triage.yaml``, optional)."""
TASK_TRIAGE: Final = "pitstop.triage"
TRIAGE_QUEUE: Final = DEFAULT_QUEUE
"""Where ``triage`` tasks go (every worker consumes it)."""
STEP_KIND_TRIAGE: Final = "triage"
LOG_TEST_TRIAGE: Final = "test_triage"
EVENT_TRIAGE_AUTO_FIXABLE: Final = "triage.auto_fixable"
"""One per auto-fixable group of a batch: what error recovery needs (test id, file, line, error)."""
EVENT_TRIAGE_COMPLETED: Final = "triage.completed"
TRIAGE_HISTORY_PREFIX: Final = f"{KEY_PREFIX}:triage:history:"
"""List per test (canonical id): its latest results as compact JSON, newest first."""
TRIAGE_FLAKY_INDEX: Final = f"{KEY_PREFIX}:triage:flaky"
"""Sorted set of test ids seen both passing and failing on one commit, scored by last time."""
TRIAGE_MAX_EVENT_TESTS: Final = 50
"""Test ids listed in one ``triage.auto_fixable`` event (the count says how many there were)."""

# --- patches --------------------------------------------------------------------------------------
PATCHES_FILE: Final = "patches.yaml"
"""Repositories, checks, weights and thresholds of patch validation (``config/patches.yaml``)."""
PATCH_QUEUE: Final = "patches"
"""Where ``validate_patch`` tasks go: run a worker with ``-Q patches`` on machines that validate."""
TASK_VALIDATE_PATCH: Final = "pitstop.validate_patch"
PATCH_KEY_PREFIX: Final = f"{KEY_PREFIX}:patches:"
PATCH_LANE_PREFIX: Final = f"{PATCH_KEY_PREFIX}lane:"
"""``<prefix><repo>:<branch>``: the merge-lane lock of one target branch (one landing at a time)."""
PATCH_REVIEW_PREFIX: Final = f"{PATCH_KEY_PREFIX}review:"
"""``<prefix><review id>``: one JSON document per patch waiting for (or past) manual review."""
PATCH_REVIEW_INDEX: Final = f"{PATCH_KEY_PREFIX}reviews"
"""Sorted set of review ids scored by creation time (epoch seconds)."""
PATCH_REVIEW_TTL_SECONDS: Final = 90 * 24 * 3600
LOG_PATCH_DECISIONS: Final = "patch_decisions"
EVENT_PATCH_MERGED: Final = "patch.merged"
EVENT_PATCH_PR_OPENED: Final = "patch.pr_opened"
EVENT_PATCH_REVIEW_QUEUED: Final = "patch.review_queued"
EVENT_PATCH_REJECTED: Final = "patch.rejected"
PATCH_BRANCH_PREFIX: Final = "pitstop/patch/"
"""Branches pitstop creates for a patch's commit (kept while it waits for review or a PR)."""
PATCH_WORKTREES_DIR: Final = "patches/worktrees"
"""Under the state directory: the throw-away worktrees, each with an owner marker."""
PATCH_MIRRORS_DIR: Final = "patches/mirrors"
"""Under the state directory: bare clones of repositories declared by URL."""
PATCH_MIN_GIT_VERSION: Final = (2, 39, 2)
"""Older ``git apply`` follows symlinks out of the tree (CVE-2023-23946)."""
PATCH_MAX_BYTES: Final = 5 * 1024 * 1024
PATCH_GITHUB_LABEL: Final = "pitstop"

# --- alerts ---------------------------------------------------------------------------------------
ALERTS_GROUP: Final = "alerts"
"""Consumer group of the alert manager on the event stream."""
ALERTS_CONFIG_FILE: Final = "alerts.yaml"
ALERTS_PREFIX: Final = f"{KEY_PREFIX}:alerts:"
ALERTS_LEADER_KEY: Final = f"{ALERTS_PREFIX}leader"
"""Held (SET NX PX, renewed) by the one alert manager that processes events; others stand by."""
ALERT_KEY_PREFIX: Final = f"{ALERTS_PREFIX}alert:"
"""One JSON document per alert (an open group and its occurrences): ``...alert:<id>``."""
ALERTS_OPEN: Final = f"{ALERTS_PREFIX}open"
"""Hash: group key -> id of the open (firing, or resolved and not yet told) alert."""
ALERTS_INDEX: Final = f"{ALERTS_PREFIX}index"
"""Sorted set of alert ids scored by creation time (epoch seconds)."""
ALERTS_SEEN: Final = f"{ALERTS_PREFIX}seen"
"""Sorted set of handled event ids scored by when (redelivery is not counted twice)."""
ALERT_ACK_PREFIX: Final = f"{ALERTS_PREFIX}ack:"
"""``...ack:<alert id>`` (SET NX): who acknowledged the alert and when."""
ALERT_DELIVERED_PREFIX: Final = f"{ALERTS_PREFIX}delivered:"
"""``...delivered:<alert id>`` (SET NX): when a notification of the alert was first delivered."""
ALERT_NOTIFICATION_PREFIX: Final = f"{ALERTS_PREFIX}notification:"
ALERT_DELIVERY_PREFIX: Final = f"{ALERTS_PREFIX}delivery:"
"""The delivery ledger: one hash per (notification, channel)."""
ALERT_DELIVERIES_DUE: Final = f"{ALERTS_PREFIX}deliveries-due"
"""Sorted set of unfinished deliveries scored by when the sweeper should look at them again."""
ALERT_RATE_PREFIX: Final = f"{ALERTS_PREFIX}rate:"
"""Per webhook (``...rate:<sha256 of the URL, 16 hex>``): the shared rate limit and 429 block."""
ALERT_SILENCES: Final = f"{ALERTS_PREFIX}silences"
ALERTS_STORM: Final = f"{ALERTS_PREFIX}storm"
"""Hash receiver -> JSON: when it was last sent messages, and the alerts waiting for its digest."""
ALERT_STATS_PREFIX: Final = f"{ALERTS_PREFIX}stats:"
"""``...stats:<YYYY-MM-DD>``: counters of the alerting pipeline's own health that day."""
ALERT_SUMMARY_SENT_PREFIX: Final = f"{ALERTS_PREFIX}summary-sent:"
ALERT_ACK_SIGNING_KEY: Final = f"{ALERTS_PREFIX}ack-signing-key"
"""Random key (SET NX once) that signs ack links: whoever reads it could ack in Redis anyway."""
ALERTS_TTL_SECONDS: Final = 30 * 24 * 3600
TASK_SEND_ALERT: Final = "pitstop.send_alert"
TASK_ALERTS_SUMMARY: Final = "pitstop.alerts_daily_summary"
LOG_ALERTS: Final = "alerts"
"""``.state/alerts.jsonl``: one line per alerting event (and per resolution), written first."""
LOG_ALERT_ACTIVITY: Final = "alert_activity"
"""Notifications, delivery outcomes, acks, escalations, silences and summaries."""
EVENT_ALERTING_DEGRADED: Final = "alerting.degraded"
ALERT_STEP_DEDUPE_PREFIX: Final = f"{DEDUPE_PREFIX}alert-step:"
"""``...alert-step:<run>:<step>:<attempt>`` -> the event an ``alert`` step published (once)."""
STEP_KIND_ALERT: Final = "alert"

# --- deploy ---------------------------------------------------------------------------------------
DEPLOYMENTS_FILE: Final = "deployments.yaml"
"""Environments, their deploy/rollback commands, smoke checks and approvals."""
DEPLOY_PREFIX: Final = f"{KEY_PREFIX}:deploy:"
DEPLOY_LOCK_PREFIX: Final = f"{DEPLOY_PREFIX}lock:"
"""``<prefix><env>``: the token of the deployment holding the environment (SET NX PX, renewed)."""
DEPLOY_FENCE_PREFIX: Final = f"{DEPLOY_PREFIX}fence:"
"""``<prefix><env>``: INCR'd by every lock acquisition; state writes carry it (a fencing token)."""
DEPLOY_ENV_PREFIX: Final = f"{DEPLOY_PREFIX}env:"
"""Hash per environment: ``current``, ``previous`` (good versions), ``status``, ``fence`` …"""
DEPLOY_GOOD_PREFIX: Final = f"{DEPLOY_PREFIX}good:"
"""List per environment: versions known good, newest first (current, then previous …)."""
DEPLOY_RECORD_PREFIX: Final = f"{DEPLOY_PREFIX}record:"
"""One JSON document per deployment: ``<prefix><deployment id>``."""
DEPLOY_HISTORY_PREFIX: Final = f"{DEPLOY_PREFIX}history:"
"""Sorted set per environment: deployment ids scored by request time (epoch seconds)."""
DEPLOY_PENDING: Final = f"{DEPLOY_PREFIX}pending"
"""Sorted set of deployments awaiting approval, scored by when their approval expires."""
DEPLOY_WAITER_PREFIX: Final = f"{DEPLOY_PREFIX}waiter:"
"""``<prefix><id>``: set (short TTL, refreshed) while the requester waits to run it itself."""
DEPLOY_CLAIM_PREFIX: Final = f"{DEPLOY_PREFIX}claim:"
"""``<prefix><id>`` (SET NX): who executes an approved deployment (exactly one process)."""
DEPLOY_GOOD_KEEP: Final = 50
DEPLOY_TTL_SECONDS: Final = 180 * 24 * 3600
LOG_DEPLOYMENTS: Final = "deployments"
TASK_DEPLOY: Final = "pitstop.deploy"
DEPLOY_QUEUE: Final = DEFAULT_QUEUE
"""Where ``deploy`` tasks and steps go unless told otherwise (every worker consumes it)."""
STEP_KIND_DEPLOY: Final = "deploy"
EVENT_DEPLOY: Final = "deploy.{env}.{what}"
"""``started``, ``awaiting_approval``, ``succeeded``, ``failed``, ``rolled_back``, ``critical``."""
CANARY_TASK: Final = "pitstop.smoke_canary"
"""``pitstop smoke``'s round trip through a worker (a no-op that echoes its argument)."""
SMOKE_STUCK_AFTER_SECONDS: Final = 120
"""A consumer group whose oldest undelivered or unacknowledged entry is older is stuck."""

# --- web ------------------------------------------------------------------------------------------
WEB_CONFIG_FILE: Final = "web.yaml"
"""Who may log in to the web view, cookie and link settings (``config/web.yaml``, optional)."""
WEB_MOUNT: Final = "/ui"
"""Where ``pitstop serve`` mounts the web view."""
WEB_PREFIX: Final = f"{KEY_PREFIX}:web:"
WEB_SESSION_PREFIX: Final = f"{WEB_PREFIX}session:"
"""``...session:<sha256 of the session id>`` -> JSON ``{user, via, csrf, created}`` (with a TTL)."""
WEB_SIGNING_KEY: Final = f"{WEB_PREFIX}signing-key"
"""Random key (SET NX once) that signs session and login cookies."""
WEB_LOGIN_FAILURES_PREFIX: Final = f"{WEB_PREFIX}login-failures:"
"""``...login-failures:<client address>``: failed logins in the current window (INCR, TTL)."""
LOG_WEB_ACTIONS: Final = "web_actions"
"""``.state/web_actions.jsonl``: logins, logouts and every action taken from the web view."""
