"""The run store: one JSON document per run in Redis, every change also appended to a state log.

Changes are atomic read-modify-writes (``WATCH``/``MULTI`` with retry), so concurrent workers and
API calls never lose each other's updates. A terminal status is final: a task redelivered after
its run finished, or a late update from a worker the reaper gave up on, changes nothing.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, ParamSpec, TypeVar, cast, get_args

import pydantic
import redis

from pitstop.kernel.constants import (
    RUN_INDEX,
    RUN_KEY_PREFIX,
    RUN_KIND_WORKSTREAM,
    RUN_TTL_SECONDS,
)
from pitstop.kernel.errors import PitstopError, RedisUnavailable, RunNotFound
from pitstop.kernel.ids import new_id, utc_iso
from pitstop.kernel.statelog import StateLog

RunStatus = Literal[
    "queued", "running", "succeeded", "failed", "timed_out", "cancelled", "lost", "expired"
]
"""``expired``: no worker took the run from its queue before its ``queue_deadline``."""
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"succeeded", "failed", "timed_out", "cancelled", "lost", "expired"}
)

_MAX_TX_RETRIES = 1000
_SCAN_PAGE = 200
_DATETIME_FIELDS = (
    "created_at", "updated_at", "started_at", "finished_at", "heartbeat_at", "queue_deadline"
)

P = ParamSpec("P")
R = TypeVar("R")


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Run(pydantic.BaseModel):
    """One run of a workstream or script; ``model_dump(mode="json")`` is what Redis holds."""

    model_config = pydantic.ConfigDict(extra="ignore")

    run_id: str
    kind: str
    status: RunStatus
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    workstream_id: str | None = None
    trace_id: str | None = None
    queue: str | None = None
    queue_deadline: datetime | None = None
    """When a still-queued run expires (the Redis server's clock); None: it waits forever."""
    host: str | None = None
    worker_pid: int | None = None
    heartbeat_at: datetime | None = None
    params: dict[str, Any] = pydantic.Field(default_factory=dict)
    executions: list[dict[str, Any]] = pydantic.Field(default_factory=list)
    exit_code: int | None = None
    error: str | None = None
    attempts: int = 0
    parent_run_id: str | None = None
    """The run this one is part of: a workstream step's script run, a sub-workstream's run."""
    event: dict[str, Any] | None = None
    """The event that launched the run (a workstream run), as its envelope."""
    steps: dict[str, dict[str, Any]] = pydantic.Field(default_factory=dict)
    """A workstream run's steps by id, in order: state, times, attempts, outputs."""
    orchestration: dict[str, Any] = pydantic.Field(default_factory=dict)
    """A workstream run's own bookkeeping (its definition as launched, phase, concurrency slot,
    trigger …), owned by :mod:`pitstop.workstreams`."""

    @pydantic.field_validator(*_DATETIME_FIELDS)
    @classmethod
    def _aware_utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish; None until the run has both."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def queue_timeout(self) -> float | None:
        """Seconds the run may wait in its queue for a worker; None without a deadline."""
        if self.queue_deadline is None:
            return None
        return (self.queue_deadline - self.created_at).total_seconds()


_UPDATABLE_FIELDS = frozenset(Run.model_fields) - {"run_id", "created_at", "updated_at", "status"}


def _redis_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Turn a lost Redis connection into :class:`RedisUnavailable` with a readable message."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RedisUnavailable(f"Redis is unreachable while accessing runs: {exc}") from exc

    return wrapper


def _run_key(run_id: str) -> str:
    return RUN_KEY_PREFIX + run_id


def _as_str(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RunStore:
    """Runs in Redis (``RUN_KEY_PREFIX + run_id``, indexed in ``RUN_INDEX``), with a TTL."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        state_log: StateLog | None = None,
        clock: Callable[[], datetime] | None = None,
        ttl_seconds: int = RUN_TTL_SECONDS,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError("ttl_seconds must be positive")
        self._client = client
        self._state_log = state_log
        self._clock = clock or _utc_now
        self._ttl = ttl_seconds

    def _now(self) -> datetime:
        now = self._clock()
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    def _log(self, op: str, run: Run) -> None:
        if self._state_log is not None:
            self._state_log.append({"op": op, "run": run.model_dump(mode="json")})

    # --- reading --------------------------------------------------------------------------------

    @_redis_errors
    def get_run(self, run_id: str) -> Run:
        raw = self._client.get(_run_key(run_id))
        if raw is None:
            raise RunNotFound(
                f"no run {run_id!r}: the id is wrong, or the run is older than its records "
                f"are kept ({self._ttl // 86400 or 1} day(s))"
            )
        return Run.model_validate_json(raw)

    @_redis_errors
    def list_runs(
        self, *, limit: int = 50, status: str | None = None, kind: str | None = None,
        workstream_id: str | None = None,
    ) -> list[Run]:
        """Runs newest first, optionally only those with ``status``, ``kind``, ``workstream_id``."""
        if status is not None and status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}: one of {', '.join(RUN_STATUSES)}")
        runs: list[Run] = []
        if limit <= 0:
            return runs
        for run in self._iter_runs():
            if ((status is None or run.status == status) and (kind is None or run.kind == kind)
                    and (workstream_id is None or run.workstream_id == workstream_id)):
                runs.append(run)
                if len(runs) >= limit:
                    break
        return runs

    def _iter_runs(self, *, needle: bytes | None = None) -> Iterator[Run]:
        """Every indexed run, newest first; ids whose key expired are dropped from the index.

        With ``needle``, documents not containing it are skipped before parsing.
        """
        start = 0
        while True:
            stop = start + _SCAN_PAGE - 1
            ids = cast("list[bytes | str]", self._client.zrevrange(RUN_INDEX, start, stop))
            if not ids:
                return
            raws = self._client.mget([_run_key(_as_str(i)) for i in ids])
            expired = [i for i, raw in zip(ids, raws, strict=True) if raw is None]
            for raw in raws:
                if raw is None:
                    continue
                data = raw if isinstance(raw, bytes) else str(raw).encode()
                if needle is not None and needle not in data:
                    continue
                yield Run.model_validate_json(data)
            if expired:
                self._client.zrem(RUN_INDEX, *expired)
            start += len(ids) - len(expired)

    def _load_existing(self, run_ids: list[str]) -> list[Run]:
        if not run_ids:
            return []
        raws = self._client.mget([_run_key(run_id) for run_id in run_ids])
        return [Run.model_validate_json(raw) for raw in raws if raw is not None]

    # --- changing -------------------------------------------------------------------------------

    @_redis_errors
    def create_run(
        self,
        *,
        kind: str,
        workstream_id: str | None = None,
        params: dict[str, Any] | None = None,
        trace_id: str | None = None,
        queue: str | None = None,
        run_id: str | None = None,
        queue_ttl: float | None = None,
        parent_run_id: str | None = None,
    ) -> Run:
        """A new ``queued`` run. With an explicit ``run_id`` that already exists, the existing run
        is returned unchanged (so a redelivered "create" is harmless).

        With ``queue_ttl`` (seconds), the run gets a ``queue_deadline`` that long from now: if no
        worker has claimed it by then, :meth:`expire_queued` ends it ``expired``.
        """
        if not kind:
            raise ValueError("a run needs a kind")
        if run_id is not None and (not run_id or any(c.isspace() for c in run_id)):
            raise ValueError(f"invalid run id {run_id!r}")
        if queue_ttl is not None and not (math.isfinite(queue_ttl) and 0 < queue_ttl <= self._ttl):
            raise ValueError(f"queue_ttl must be more than 0 and at most {self._ttl}s, "
                             f"got {queue_ttl!r}")
        now = self._now()
        run = Run(
            run_id=run_id or new_id(int(now.timestamp() * 1000)),
            kind=kind,
            status="queued",
            created_at=now,
            updated_at=now,
            workstream_id=workstream_id,
            trace_id=trace_id,
            queue=queue,
            queue_deadline=None if queue_ttl is None else now + timedelta(seconds=queue_ttl),
            params=json.loads(json.dumps(params or {}, default=str)),
            parent_run_id=parent_run_id,
        )
        pipe = self._client.pipeline(transaction=True)
        pipe.set(_run_key(run.run_id), run.model_dump_json(), ex=self._ttl, nx=True)
        pipe.zadd(RUN_INDEX, {run.run_id: now.timestamp()}, nx=True)
        pipe.zremrangebyscore(RUN_INDEX, "-inf", f"({now.timestamp() - self._ttl}")
        created, _, _ = pipe.execute()
        if not created:
            return self.get_run(run.run_id)
        self._log("create", run)
        return run

    @property
    def ttl_seconds(self) -> int:
        """How long run records are kept."""
        return self._ttl

    def with_clock(self, clock: Callable[[], datetime]) -> RunStore:
        """The same store telling time with ``clock`` (a cached reading of Redis's, say)."""
        return RunStore(self._client, state_log=self._state_log, clock=clock,
                        ttl_seconds=self._ttl)

    def note(self, op: str, run: Run) -> None:
        """Append ``run`` to the runs log under ``op`` (for records written outside this store,
        such as a workstream launch made in one Redis script)."""
        self._log(op, run)

    @_redis_errors
    def mutate(self, run_id: str, change: Callable[[Run, datetime], Run | None], *,
               op: str | Callable[[Run], str] = "update") -> Run:
        """A compare-and-set of one run: ``change(run, now)`` returns the new run, or None to
        leave it as is. It may be called more than once (another writer got there first), so it
        must not act outside its return value. ``op`` names the change in runs.jsonl (empty: not
        logged). Raises :class:`RunNotFound`."""
        return self._mutate(run_id, op, change)

    def _mutate(self, run_id: str, op: str | Callable[[Run], str],
                change: Callable[[Run, datetime], Run | None]) -> Run:
        """Apply ``change`` atomically; it returns the new run, or None to leave the run as is.
        ``op`` names the change in runs.jsonl (or tells it from the new run)."""
        key = _run_key(run_id)
        for _ in range(_MAX_TX_RETRIES):
            with self._client.pipeline(transaction=True) as pipe:
                try:
                    # redis-py leaves Pipeline.watch untyped
                    cast("Callable[[str], None]", pipe.watch)(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise RunNotFound(f"no run {run_id!r}: the id is wrong, or its record is gone")
                    current = Run.model_validate_json(raw)
                    new = change(current, self._now())
                    if new is None:
                        pipe.unwatch()
                        return current
                    pipe.multi()
                    pipe.set(key, new.model_dump_json(), ex=self._ttl)
                    pipe.execute()
                except redis.WatchError:
                    continue
            name = op(new) if callable(op) else op
            if name:
                self._log(name, new)
            return new
        raise PitstopError(f"run {run_id!r} is changed too often to update it; try again")

    @_redis_errors
    def update_run(self, run_id: str, *, status: str | None = None, **fields: Any) -> Run:
        """Set ``status`` and/or fields. A terminal run's status never changes: such an update is
        ignored whole and the run returned as it is. Unknown fields raise :class:`ValueError`."""
        unknown = set(fields) - _UPDATABLE_FIELDS
        if unknown:
            raise ValueError(
                f"cannot update run field(s) {', '.join(sorted(unknown))}: "
                f"updatable are {', '.join(sorted(_UPDATABLE_FIELDS))}"
            )
        if status is not None and status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}: one of {', '.join(RUN_STATUSES)}")
        if "executions" in fields or "params" in fields:
            fields = json.loads(json.dumps(fields, default=str))

        def change(run: Run, now: datetime) -> Run | None:
            if run.terminal and status is not None:
                return None
            data = run.model_dump()
            data.update(fields)
            if status is not None:
                data["status"] = status
                if status == "running" and data["started_at"] is None:
                    data["started_at"] = now
                if status in TERMINAL_STATUSES and data["finished_at"] is None:
                    data["finished_at"] = now
            data["updated_at"] = now
            return Run.model_validate(data)

        return self._mutate(run_id, "update", change)

    @_redis_errors
    def claim_run(
        self, run_id: str, *, host: str, worker_pid: int, allow_rerun: bool = False
    ) -> Run | None:
        """Move a queued run to running for this worker; None when it must not be executed.

        A terminal run is never executed again. A queued run past its ``queue_deadline`` is
        expired instead (whatever the clock of the worker that received the message). A run
        already ``running`` (its worker may have died and the task been redelivered) is taken
        over only with ``allow_rerun``. Claiming again from the same host and pid returns the
        run: a claim whose reply was lost on the way back can be retried safely.
        """
        claimed = False

        def change(run: Run, now: datetime) -> Run | None:
            nonlocal claimed
            claimed = False
            if run.status == "running" and (run.host, run.worker_pid) == (host, worker_pid):
                claimed = True
                return None
            if _overdue(run, now):
                return _expired(run, now)
            if run.terminal or (run.status == "running" and not allow_rerun):
                return None
            claimed = True
            return run.model_copy(
                update={
                    "status": "running",
                    "started_at": run.started_at or now,
                    "updated_at": now,
                    "heartbeat_at": now,
                    "host": host,
                    "worker_pid": worker_pid,
                    "attempts": run.attempts + 1,
                    "error": None,
                }
            )

        run = self._mutate(run_id, lambda new: "expire" if new.status == "expired" else "claim",
                           change)
        return run if claimed else None

    @_redis_errors
    def cancel_if_queued(self, run_id: str, *, reason: str) -> Run:
        """Cancel a run no worker has claimed yet; a claimed or finished run is left as it is
        (compare-and-set, so a claim racing with the cancel wins cleanly)."""

        def change(run: Run, now: datetime) -> Run | None:
            if run.status != "queued":
                return None
            return run.model_copy(update={"status": "cancelled", "finished_at": now,
                                          "updated_at": now, "error": reason})

        return self._mutate(run_id, "cancel", change)

    def is_stale(self, run: Run, *, stale_after: timedelta) -> bool:
        """True when a running run has shown no sign of life for ``stale_after``."""
        return run.status == "running" and _last_sign_of_life(run) < self._now() - stale_after

    def is_overdue(self, run: Run) -> bool:
        """True when a queued run's deadline has passed (it is due to be expired)."""
        return _overdue(run, self._now())

    @_redis_errors
    def heartbeat(self, run_id: str) -> None:
        """Mark a running run alive now (not logged: it happens every few seconds)."""

        def change(run: Run, now: datetime) -> Run | None:
            if run.status != "running":
                return None
            return run.model_copy(update={"heartbeat_at": now})

        self._mutate(run_id, "", change)

    @_redis_errors
    def record_cli_execution(self, run_id: str, execution: Mapping[str, Any]) -> Run:
        """Append one script execution record. A record whose ``execution_id`` (or ``id``) is
        already present is not added again, so a retried call is harmless."""
        record: dict[str, Any] = json.loads(json.dumps(dict(execution), default=str))
        ident_key = next((k for k in ("execution_id", "id") if record.get(k)), None)

        def change(run: Run, now: datetime) -> Run | None:
            if ident_key is not None and any(
                e.get(ident_key) == record[ident_key] for e in run.executions
            ):
                return None
            return run.model_copy(
                update={"executions": [*run.executions, record], "updated_at": now}
            )

        return self._mutate(run_id, "record", change)

    @_redis_errors
    def reap_lost(
        self, *, stale_after: timedelta, run_ids: Iterable[str] | None = None
    ) -> list[Run]:
        """Mark ``lost`` every running run whose last heartbeat is older than ``stale_after``.

        Without ``run_ids`` every indexed run is scanned; with it, only those (cheap enough to
        call every second while waiting for one run).
        """

        def due(run: Run, now: datetime) -> bool:
            # A workstream run has no worker of its own: its steps are watched by its reaper.
            return (run.status == "running" and run.kind != RUN_KIND_WORKSTREAM
                    and _last_sign_of_life(run) < now - stale_after)

        return self._transition_many("reap", b'"running"', run_ids, due,
                                     functools.partial(_lost, stale_after=stale_after))

    @_redis_errors
    def expire_queued(self, *, run_ids: Iterable[str] | None = None) -> list[Run]:
        """Mark ``expired`` every queued run whose ``queue_deadline`` has passed: no worker took
        it from its queue in time. Returns the runs this call expired.

        A compare-and-set like :meth:`claim_run`: of a worker's claim and the expiry, exactly one
        wins. Without ``run_ids`` every indexed run is scanned; with it, only those.
        """
        return self._transition_many("expire", b'"queued"', run_ids, _overdue, _expired)

    def _transition_many(self, op: str, needle: bytes, run_ids: Iterable[str] | None,
                         due: Callable[[Run, datetime], bool],
                         to: Callable[[Run, datetime], Run]) -> list[Run]:
        """Move every scanned run that is ``due`` with ``to``, each a compare-and-set that checks
        ``due`` again inside its transaction. Returns the runs this call moved."""
        now = self._now()
        candidates = [run.run_id for run in self._scan(needle, run_ids) if due(run, now)]
        changed: list[Run] = []
        for run_id in candidates:
            moved = False

            def change(run: Run, now: datetime) -> Run | None:
                nonlocal moved
                moved = due(run, now)
                return to(run, now) if moved else None

            try:
                run = self._mutate(run_id, op, change)
            except RunNotFound:
                continue
            if moved:
                changed.append(run)
        return changed

    def _scan(self, needle: bytes, run_ids: Iterable[str] | None) -> Iterable[Run]:
        """The runs named in ``run_ids``, or every indexed run whose document holds ``needle``."""
        if run_ids is None:
            return self._iter_runs(needle=needle)
        return self._load_existing(list(run_ids))


def redis_clock(client: redis.Redis) -> Callable[[], datetime]:
    """A clock reading the Redis server's time: every host that heart-beats or reaps runs then
    agrees on "now", however far the machines' own clocks drift apart."""

    def now() -> datetime:
        seconds, micros = client.time()
        return datetime.fromtimestamp(seconds + micros / 1_000_000, tz=UTC)

    return now


def _last_sign_of_life(run: Run) -> datetime:
    return run.heartbeat_at or run.started_at or run.updated_at


def _overdue(run: Run, now: datetime) -> bool:
    return run.status == "queued" and run.queue_deadline is not None and run.queue_deadline <= now


def _expired(run: Run, now: datetime) -> Run:
    waited = run.queue_timeout or 0.0
    return run.model_copy(update={
        "status": "expired", "finished_at": now, "updated_at": now,
        "error": f"no worker took it from queue {run.queue!r} within {waited:g}s",
    })


def _lost(run: Run, now: datetime, *, stale_after: timedelta) -> Run:
    last = _last_sign_of_life(run)
    where = f" on {run.host}" if run.host else ""
    pid = f" (pid {run.worker_pid})" if run.worker_pid is not None else ""
    return run.model_copy(update={
        "status": "lost", "finished_at": now, "updated_at": now,
        "error": (f"worker lost: no heartbeat from the worker{where}{pid} since {utc_iso(last)}, "
                  f"more than {stale_after.total_seconds():g}s ago; it was probably killed "
                  "(SIGKILL, out of memory) or its machine went away"),
    })
