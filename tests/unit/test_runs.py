"""Run store logic on fakeredis: transitions, terminal is final, claims, heartbeats, reaping."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from pitstop.kernel.constants import RUN_INDEX, RUN_KEY_PREFIX
from pitstop.kernel.errors import RedisUnavailable, RunNotFound
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.statelog import StateLog, read_log
from pitstop.runs.store import RUN_STATUSES, TERMINAL_STATUSES, Run, RunStore, redis_clock
from tests.support import FakeClock

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def client() -> redis.Redis:
    return fakeredis.FakeRedis()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


@pytest.fixture
def log(tmp_path: Path) -> StateLog:
    return StateLog("runs", tmp_path, redactor=Redactor())


@pytest.fixture
def store(client: redis.Redis, clock: FakeClock, log: StateLog) -> RunStore:
    return RunStore(client, state_log=log, clock=clock)


def ops(log: StateLog) -> list[str]:
    return [r["op"] for r in read_log(log.name, log.state_dir)]


def run_in(store: RunStore, status: str) -> Run:
    """A run brought to ``status`` through the public API."""
    run = store.create_run(kind="script")
    if status == "queued":
        return run
    if status == "running":
        claimed = store.claim_run(run.run_id, host="build-7", worker_pid=1)
        assert claimed is not None
        return claimed
    return store.update_run(run.run_id, status=status)


# --- model ---------------------------------------------------------------------------------------


def test_statuses() -> None:
    assert set(RUN_STATUSES) == {
        "queued",
        "running",
        "succeeded",
        "failed",
        "timed_out",
        "cancelled",
        "lost",
        "expired",
    }
    assert frozenset(
        {"succeeded", "failed", "timed_out", "cancelled", "lost", "expired"}
    ) == TERMINAL_STATUSES


def test_run_properties() -> None:
    run = Run(run_id="r", kind="k", status="running", created_at=T0, updated_at=T0, started_at=T0)
    assert not run.terminal
    assert run.duration is None
    done = run.model_copy(update={"status": "failed", "finished_at": T0 + timedelta(seconds=2.5)})
    assert done.terminal
    assert done.duration == 2.5


def test_naive_datetimes_are_taken_as_utc() -> None:
    run = Run.model_validate(
        {
            "run_id": "r",
            "kind": "k",
            "status": "queued",
            "created_at": T0.replace(tzinfo=None),
            "updated_at": "2024-05-01T14:00:00+02:00",
        }
    )
    assert run.created_at == T0
    assert run.updated_at == T0
    assert run.updated_at.utcoffset() == timedelta(0)


# --- create / get --------------------------------------------------------------------------------


def test_create_run(store: RunStore, client: redis.Redis, log: StateLog) -> None:
    run = store.create_run(
        kind="workstream",
        workstream_id="WS-1",
        params={"when": T0, "n": 1},
        trace_id="t-1",
        queue="linux",
    )
    assert run.status == "queued"
    assert run.created_at == run.updated_at == T0
    assert run.attempts == 0
    assert run.params == {"when": str(T0), "n": 1}  # JSON-normalized
    stored = client.get(RUN_KEY_PREFIX + run.run_id)
    assert stored is not None
    assert json.loads(stored) == run.model_dump(mode="json")
    assert store.get_run(run.run_id) == run
    assert client.zscore(RUN_INDEX, run.run_id) == T0.timestamp()
    assert 0 < client.ttl(RUN_KEY_PREFIX + run.run_id) <= 30 * 24 * 3600
    [entry] = list(read_log("runs", log.state_dir))
    assert entry["op"] == "create"
    assert entry["run"] == run.model_dump(mode="json")


def test_default_run_ids_are_unique_and_sortable(store: RunStore, clock: FakeClock) -> None:
    ids = []
    for _ in range(20):
        ids.append(store.create_run(kind="k").run_id)
        clock.advance(milliseconds=2)
    assert len(set(ids)) == 20
    assert ids == sorted(ids)


def test_create_with_existing_run_id_returns_the_existing_run(
    store: RunStore, clock: FakeClock, log: StateLog
) -> None:
    first = store.create_run(kind="k", run_id="fixed-1", params={"a": 1})
    store.update_run("fixed-1", status="running")
    clock.advance(minutes=5)
    again = store.create_run(kind="k", run_id="fixed-1", params={"a": 2})
    assert again.status == "running"
    assert again.params == {"a": 1}
    assert again.created_at == first.created_at
    assert ops(log) == ["create", "update"]


def test_create_validates(store: RunStore) -> None:
    with pytest.raises(ValueError, match="kind"):
        store.create_run(kind="")
    with pytest.raises(ValueError, match="run id"):
        store.create_run(kind="k", run_id="has space")
    with pytest.raises(ValueError, match="run id"):
        store.create_run(kind="k", run_id="")


def test_get_missing_run(store: RunStore) -> None:
    with pytest.raises(RunNotFound, match="nope"):
        store.get_run("nope")
    calls: list[Callable[[], object]] = [
        lambda: store.update_run("nope", status="running"),
        lambda: store.claim_run("nope", host="h", worker_pid=1),
        lambda: store.heartbeat("nope"),
        lambda: store.record_cli_execution("nope", {}),
    ]
    for call in calls:
        with pytest.raises(RunNotFound):
            call()


def test_works_with_decoded_responses(clock: FakeClock) -> None:
    store = RunStore(fakeredis.FakeRedis(decode_responses=True), clock=clock)
    run = store.create_run(kind="k")
    store.update_run(run.run_id, status="running")
    assert [r.run_id for r in store.list_runs()] == [run.run_id]
    assert store.get_run(run.run_id).status == "running"


# --- update --------------------------------------------------------------------------------------

TRANSITIONS = [(a, b) for a in RUN_STATUSES for b in RUN_STATUSES]


@pytest.mark.parametrize(("start", "target"), TRANSITIONS)
def test_status_transitions(store: RunStore, clock: FakeClock, start: str, target: str) -> None:
    before = run_in(store, start)
    clock.advance(seconds=10)
    after = store.update_run(before.run_id, status=target, exit_code=7)
    if start in TERMINAL_STATUSES:
        assert after == before  # terminal is final: the whole update is ignored
        assert store.get_run(before.run_id) == before
        return
    assert after.status == target
    assert after.exit_code == 7
    assert after.updated_at == clock.now
    if target == "running":
        assert after.started_at == (before.started_at or clock.now)
    if target in TERMINAL_STATUSES:
        assert after.finished_at == clock.now
    else:
        assert after.finished_at is None
    assert store.get_run(before.run_id) == after


def test_started_at_is_set_once(store: RunStore, clock: FakeClock) -> None:
    run = store.create_run(kind="k")
    first = store.update_run(run.run_id, status="running")
    clock.advance(seconds=5)
    store.update_run(run.run_id, status="queued")
    clock.advance(seconds=5)
    again = store.update_run(run.run_id, status="running")
    assert again.started_at == first.started_at == T0


def test_fields_without_status_still_apply_to_a_terminal_run(store: RunStore) -> None:
    run = run_in(store, "failed")
    updated = store.update_run(run.run_id, error="disk full")
    assert updated.status == "failed"
    assert updated.error == "disk full"


def test_explicit_timestamps_win(store: RunStore) -> None:
    run = store.create_run(kind="k")
    at = T0 - timedelta(hours=1)
    updated = store.update_run(run.run_id, status="running", started_at=at)
    assert updated.started_at == at


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bogus": 1}, "bogus"),
        ({"updated_at": T0}, "updated_at"),
        ({"created_at": T0}, "created_at"),
        ({"status": "exploded"}, "exploded"),
        ({"exit_code": "not a number"}, "exit_code"),
        ({"params": "not a dict"}, "params"),
    ],
)
def test_update_rejects_bad_input(store: RunStore, kwargs: dict[str, Any], message: str) -> None:
    run = store.create_run(kind="k")
    with pytest.raises(ValueError, match=message):
        store.update_run(run.run_id, **kwargs)
    assert store.get_run(run.run_id) == run


def test_every_change_is_logged_with_its_snapshot(
    store: RunStore, log: StateLog, clock: FakeClock
) -> None:
    run = store.create_run(kind="k", params={"token": "s3cr3t-value"})
    store.claim_run(run.run_id, host="h", worker_pid=9)
    store.heartbeat(run.run_id)
    store.record_cli_execution(run.run_id, {"execution_id": "e1", "exit_code": 0})
    store.update_run(run.run_id, status="succeeded", exit_code=0)
    store.update_run(run.run_id, status="failed")  # ignored: not logged
    clock.advance(hours=1)
    store.reap_lost(stale_after=timedelta(minutes=1))  # nothing to reap
    entries = list(read_log("runs", log.state_dir))
    assert [e["op"] for e in entries] == ["create", "claim", "record", "update"]
    final = store.get_run(run.run_id).model_dump(mode="json")
    assert entries[-1]["run"] == {**final, "params": {"token": "***"}}
    assert entries[0]["run"]["params"] == {"token": "***"}  # the log is redacted, Redis is not
    assert store.get_run(run.run_id).params == {"token": "s3cr3t-value"}


def test_store_without_state_log(client: redis.Redis, clock: FakeClock) -> None:
    store = RunStore(client, clock=clock)
    run = store.create_run(kind="k")
    assert store.update_run(run.run_id, status="succeeded").status == "succeeded"


# --- claim ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "allow_rerun", "claimed"),
    [
        ("queued", False, True),
        ("queued", True, True),
        ("running", False, False),
        ("running", True, True),
        *[(s, rerun, False) for s in sorted(TERMINAL_STATUSES) for rerun in (False, True)],
    ],
)
def test_claim(
    store: RunStore, clock: FakeClock, start: str, allow_rerun: bool, claimed: bool
) -> None:
    before = run_in(store, start)
    clock.advance(seconds=30)
    result = store.claim_run(
        before.run_id, host="build-7", worker_pid=4242, allow_rerun=allow_rerun
    )
    if not claimed:
        assert result is None
        assert store.get_run(before.run_id) == before
        return
    assert result is not None
    assert result.status == "running"
    assert result.attempts == before.attempts + 1
    assert result.heartbeat_at == clock.now
    assert result.host == "build-7"
    assert result.worker_pid == 4242
    assert result.started_at == (before.started_at or clock.now)
    assert store.get_run(before.run_id) == result


def test_redelivered_task_runs_once(store: RunStore) -> None:
    run = store.create_run(kind="script")
    assert store.claim_run(run.run_id, host="a", worker_pid=1) is not None
    assert store.claim_run(run.run_id, host="b", worker_pid=2) is None
    store.update_run(run.run_id, status="succeeded", exit_code=0)
    assert store.claim_run(run.run_id, host="b", worker_pid=2, allow_rerun=True) is None
    assert store.get_run(run.run_id).attempts == 1


# --- heartbeat -----------------------------------------------------------------------------------


def test_heartbeat_only_touches_running_runs(store: RunStore, clock: FakeClock) -> None:
    queued = store.create_run(kind="k")
    store.heartbeat(queued.run_id)
    assert store.get_run(queued.run_id) == queued
    running = run_in(store, "running")
    clock.advance(seconds=42)
    store.heartbeat(running.run_id)
    after = store.get_run(running.run_id)
    assert after.heartbeat_at == clock.now
    assert after.model_copy(update={"heartbeat_at": running.heartbeat_at}) == running


# --- executions ----------------------------------------------------------------------------------


def test_record_cli_execution(store: RunStore, clock: FakeClock) -> None:
    run = store.create_run(kind="workstream")
    clock.advance(seconds=1)
    first = store.record_cli_execution(run.run_id, {"execution_id": "e1", "at": T0, "rc": 0})
    assert first.executions == [{"execution_id": "e1", "at": str(T0), "rc": 0}]
    assert first.updated_at == clock.now
    again = store.record_cli_execution(run.run_id, {"execution_id": "e1", "rc": 1})
    assert again.executions == first.executions  # a retried record is not added twice
    store.record_cli_execution(run.run_id, {"id": "e2"})
    store.record_cli_execution(run.run_id, {"rc": 3})
    store.record_cli_execution(run.run_id, {"rc": 3})  # no id: nothing to dedupe on
    assert len(store.get_run(run.run_id).executions) == 4


def test_record_on_a_terminal_run_keeps_history(store: RunStore) -> None:
    run = run_in(store, "cancelled")
    after = store.record_cli_execution(run.run_id, {"execution_id": "late"})
    assert after.status == "cancelled"
    assert after.executions == [{"execution_id": "late"}]


# --- list ----------------------------------------------------------------------------------------


def test_list_runs_newest_first_with_filters(store: RunStore, clock: FakeClock) -> None:
    made = []
    for n in range(7):
        run = store.create_run(kind="script" if n % 2 else "workstream")
        if n % 3 == 0:
            store.update_run(run.run_id, status="failed")
        made.append(run.run_id)
        clock.advance(seconds=1)
    newest_first = list(reversed(made))
    assert [r.run_id for r in store.list_runs()] == newest_first
    assert [r.run_id for r in store.list_runs(limit=2)] == newest_first[:2]
    assert [r.run_id for r in store.list_runs(limit=0)] == []
    assert [r.run_id for r in store.list_runs(kind="script")] == [made[5], made[3], made[1]]
    assert [r.run_id for r in store.list_runs(status="failed")] == [made[6], made[3], made[0]]
    assert [r.run_id for r in store.list_runs(status="failed", kind="script")] == [made[3]]
    with pytest.raises(ValueError, match="status"):
        store.list_runs(status="weird")


def test_list_runs_pages_and_drops_expired_ids(
    store: RunStore, client: redis.Redis, clock: FakeClock
) -> None:
    ids = []
    for _ in range(450):  # more than one page
        ids.append(store.create_run(kind="k").run_id)
        clock.advance(milliseconds=1)
    for run_id in ids[100:300]:
        client.delete(RUN_KEY_PREFIX + run_id)  # as if their TTL ran out
    listed = [r.run_id for r in store.list_runs(limit=1000)]
    assert listed == list(reversed(ids[:100] + ids[300:]))
    assert client.zcard(RUN_INDEX) == 250


def test_create_trims_index_entries_older_than_the_ttl(
    client: redis.Redis, clock: FakeClock
) -> None:
    store = RunStore(client, clock=clock, ttl_seconds=3600)
    old = store.create_run(kind="k")
    clock.advance(hours=2)
    new = store.create_run(kind="k")
    assert client.zrange(RUN_INDEX, 0, -1) == [new.run_id.encode()]
    assert old.run_id not in [r.run_id for r in store.list_runs()]


# --- reap ----------------------------------------------------------------------------------------


def test_reap_lost_by_clock(store: RunStore, clock: FakeClock, log: StateLog) -> None:
    stale = run_in(store, "running")
    fresh = run_in(store, "running")
    queued = store.create_run(kind="k")
    done = run_in(store, "succeeded")
    clock.advance(minutes=10)
    store.heartbeat(fresh.run_id)
    clock.advance(minutes=1)
    reaped = store.reap_lost(stale_after=timedelta(minutes=5))
    assert [r.run_id for r in reaped] == [stale.run_id]
    lost = store.get_run(stale.run_id)
    assert lost == reaped[0]
    assert lost.status == "lost"
    assert lost.finished_at == clock.now
    assert lost.error is not None
    assert "no heartbeat" in lost.error and "h" in lost.error and "pid 1" in lost.error
    assert "on build-7 (pid 1)" in lost.error
    assert store.get_run(fresh.run_id).status == "running"
    assert store.get_run(queued.run_id).status == "queued"
    assert store.get_run(done.run_id).status == "succeeded"
    assert store.reap_lost(stale_after=timedelta(minutes=5)) == []
    assert ops(log).count("reap") == 1
    # a late report from the dead worker changes nothing
    assert store.update_run(stale.run_id, status="succeeded", exit_code=0) == lost


def test_reap_only_given_runs(store: RunStore, clock: FakeClock) -> None:
    one = run_in(store, "running")
    other = run_in(store, "running")
    clock.advance(hours=1)
    reaped = store.reap_lost(stale_after=timedelta(minutes=5), run_ids=[one.run_id, "gone"])
    assert [r.run_id for r in reaped] == [one.run_id]
    assert store.get_run(other.run_id).status == "running"
    assert store.reap_lost(stale_after=timedelta(minutes=5), run_ids=[]) == []


def test_reap_uses_started_at_when_there_was_never_a_heartbeat(
    store: RunStore, clock: FakeClock
) -> None:
    run = store.create_run(kind="k")
    store.update_run(run.run_id, status="running")  # no claim: no heartbeat_at
    clock.advance(seconds=59)
    assert store.reap_lost(stale_after=timedelta(seconds=60)) == []
    clock.advance(seconds=2)
    assert [r.run_id for r in store.reap_lost(stale_after=timedelta(seconds=60))] == [run.run_id]


# --- queue deadline / expire ---------------------------------------------------------------------


class InterleavingClock(FakeClock):
    """A FakeClock that, on its ``call``-th reading from now, first lets ``action`` run: a way to
    slip another process's change in between a transaction's read and its write."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self._pending: list[tuple[int, Callable[[], object]]] = []
        self.fired = 0

    def on_call(self, call: int, action: Callable[[], object]) -> None:
        self._pending.append((call, action))

    def __call__(self) -> datetime:
        due = [(n - 1, action) for n, action in self._pending]
        self._pending = [(n, action) for n, action in due if n > 0]
        for n, action in due:
            if n == 0:
                self.fired += 1
                action()
        return self.now


def queued_with_deadline(store: RunStore, seconds: float = 60, queue: str = "gpu") -> Run:
    return store.create_run(kind="script", queue=queue, queue_ttl=seconds)


def test_create_with_queue_ttl_sets_a_deadline_on_the_store_clock(
    store: RunStore, clock: FakeClock
) -> None:
    clock.advance(seconds=3)
    run = queued_with_deadline(store, 600)
    assert run.queue_deadline == clock.now + timedelta(seconds=600)
    assert run.queue_timeout == 600
    assert store.get_run(run.run_id).queue_deadline == run.queue_deadline
    plain = store.create_run(kind="script")
    assert plain.queue_deadline is None
    assert plain.queue_timeout is None


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), 31 * 24 * 3600])
def test_create_refuses_a_queue_ttl_that_is_not_a_positive_span(store: RunStore, ttl: float) -> None:
    with pytest.raises(ValueError, match="queue_ttl"):
        store.create_run(kind="script", queue_ttl=ttl)
    assert store.list_runs() == []


def test_expire_queued_expires_only_runs_past_their_deadline(
    store: RunStore, clock: FakeClock, log: StateLog
) -> None:
    due = queued_with_deadline(store, 60)
    later = queued_with_deadline(store, 120)
    forever = store.create_run(kind="script")  # no deadline: waits for a worker forever
    clock.advance(seconds=59)
    assert not store.is_overdue(store.get_run(due.run_id))
    assert store.expire_queued() == []  # not yet due
    assert store.get_run(due.run_id).status == "queued"
    clock.advance(seconds=1)  # exactly at the deadline
    assert store.is_overdue(store.get_run(due.run_id))
    [expired] = store.expire_queued()
    assert expired.run_id == due.run_id
    assert expired.status == "expired"
    assert expired.terminal
    assert expired.finished_at == expired.updated_at == clock.now
    assert expired.started_at is None
    assert expired.attempts == 0
    assert expired.error == "no worker took it from queue 'gpu' within 60s"
    assert store.get_run(due.run_id) == expired
    assert store.get_run(later.run_id).status == "queued"
    assert store.expire_queued() == []  # done once
    clock.advance(days=20)
    assert [r.run_id for r in store.expire_queued()] == [later.run_id]
    assert store.get_run(forever.run_id).status == "queued"
    # runs.jsonl has one "expire" entry per expired run, with its snapshot
    entries = [e for e in read_log("runs", log.state_dir) if e["op"] == "expire"]
    assert [e["run"]["run_id"] for e in entries] == [due.run_id, later.run_id]
    assert entries[0]["run"] == expired.model_dump(mode="json")


@pytest.mark.parametrize("status", ["running", *sorted(TERMINAL_STATUSES)])
def test_expire_leaves_runs_that_are_not_queued_alone(
    store: RunStore, clock: FakeClock, status: str
) -> None:
    run = queued_with_deadline(store, 60)
    if status == "running":
        store.claim_run(run.run_id, host="h", worker_pid=1)
    else:
        store.update_run(run.run_id, status=status)
    before = store.get_run(run.run_id)
    clock.advance(hours=1)
    assert not store.is_overdue(before)
    assert store.expire_queued() == []
    assert store.expire_queued(run_ids=[run.run_id]) == []
    assert store.get_run(run.run_id) == before


def test_expire_only_given_runs(store: RunStore, clock: FakeClock) -> None:
    one = queued_with_deadline(store, 60)
    other = queued_with_deadline(store, 60)
    clock.advance(minutes=2)
    expired = store.expire_queued(run_ids=[one.run_id, "gone"])
    assert [r.run_id for r in expired] == [one.run_id]
    assert store.get_run(other.run_id).status == "queued"
    assert store.expire_queued(run_ids=[]) == []


def test_once_expired_a_late_worker_cannot_claim_it(store: RunStore, clock: FakeClock) -> None:
    run = queued_with_deadline(store, 60)
    clock.advance(seconds=61)
    [expired] = store.expire_queued(run_ids=[run.run_id])
    assert store.claim_run(run.run_id, host="late", worker_pid=7) is None
    assert store.claim_run(run.run_id, host="late", worker_pid=7, allow_rerun=True) is None
    assert store.get_run(run.run_id) == expired
    # nor a late report from anywhere
    assert store.update_run(run.run_id, status="succeeded", exit_code=0) == expired


def test_a_claim_past_the_deadline_expires_the_run_even_before_the_reaper(
    store: RunStore, clock: FakeClock, log: StateLog
) -> None:
    run = queued_with_deadline(store, 60)
    clock.advance(seconds=61)  # the worker's own clock may say otherwise: the store's decides
    assert store.claim_run(run.run_id, host="late", worker_pid=7) is None
    final = store.get_run(run.run_id)
    assert (final.status, final.attempts, final.host) == ("expired", 0, None)
    assert ops(log)[-1] == "expire"


def test_claiming_again_from_the_same_process_is_the_same_claim(
    store: RunStore, clock: FakeClock, log: StateLog
) -> None:
    """A claim whose reply was lost (Redis committed it) can be retried by its worker."""
    run = store.create_run(kind="script")
    first = store.claim_run(run.run_id, host="h", worker_pid=10)
    clock.advance(seconds=1)
    again = store.claim_run(run.run_id, host="h", worker_pid=10)
    assert first is not None and again == first
    assert ops(log).count("claim") == 1
    assert store.claim_run(run.run_id, host="h", worker_pid=11) is None  # another process


def test_once_claimed_the_deadline_no_longer_matters(store: RunStore, clock: FakeClock) -> None:
    run = queued_with_deadline(store, 60)
    clock.advance(seconds=59)
    claimed = store.claim_run(run.run_id, host="h", worker_pid=1)
    assert claimed is not None
    clock.advance(seconds=2)
    store.heartbeat(run.run_id)
    assert store.expire_queued() == []
    assert store.get_run(run.run_id).status == "running"


def test_a_claim_slipping_in_during_the_expiry_wins(
    client: redis.Redis, log: StateLog
) -> None:
    clock = InterleavingClock(T0)
    store = RunStore(client, state_log=log, clock=clock)
    worker = RunStore(client, state_log=log, clock=FakeClock(T0))  # another process
    run = queued_with_deadline(store, 60)
    clock.advance(seconds=61)
    claims: list[Run | None] = []
    # expire_queued reads the clock once to pick candidates, then once inside the transaction,
    # after it has read the run: the worker claims it right there.
    clock.on_call(2, lambda: claims.append(worker.claim_run(run.run_id, host="h", worker_pid=1)))
    assert store.expire_queued() == []
    assert clock.fired == 1
    assert claims[0] is not None
    final = store.get_run(run.run_id)
    assert final.status == "running"
    assert final.attempts == 1
    assert "expire" not in ops(log)


def test_an_expiry_slipping_in_during_a_claim_wins(client: redis.Redis, log: StateLog) -> None:
    clock = InterleavingClock(T0)
    worker = RunStore(client, state_log=log, clock=clock)
    reaper = RunStore(client, state_log=log, clock=FakeClock(T0 + timedelta(seconds=61)))
    run = queued_with_deadline(worker, 60)
    expired: list[Run] = []
    # claim_run reads the clock inside its transaction, after it has read the run (still
    # queued): the reaper expires it right there.
    clock.on_call(1, lambda: expired.extend(reaper.expire_queued()))
    assert worker.claim_run(run.run_id, host="h", worker_pid=1) is None
    assert clock.fired == 1
    assert [r.run_id for r in expired] == [run.run_id]
    final = worker.get_run(run.run_id)
    assert final.status == "expired"
    assert final.attempts == 0
    assert "claim" not in ops(log)


# --- failures ------------------------------------------------------------------------------------


def test_unreachable_redis_is_a_clear_error() -> None:
    client = redis.Redis(
        host="127.0.0.1", port=1, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    store = RunStore(client)
    with pytest.raises(RedisUnavailable, match="unreachable"):
        store.get_run("x")
    with pytest.raises(RedisUnavailable):
        store.create_run(kind="k")
    with pytest.raises(RedisUnavailable):
        store.update_run("x", status="failed")


def test_ttl_must_be_positive(client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="ttl"):
        RunStore(client, ttl_seconds=0)


def test_cancel_if_queued_only_cancels_unclaimed_runs() -> None:
    store = RunStore(fakeredis.FakeRedis())
    queued = store.create_run(kind="script")
    assert store.cancel_if_queued(queued.run_id, reason="r").status == "cancelled"
    claimed = store.create_run(kind="script")
    store.claim_run(claimed.run_id, host="h", worker_pid=1)
    assert store.cancel_if_queued(claimed.run_id, reason="r").status == "running"


def test_redis_clock_reads_the_server_time() -> None:
    now = redis_clock(fakeredis.FakeRedis())()
    assert now.tzinfo is not None
    assert abs((now - datetime.now(UTC)).total_seconds()) < 5


def test_redis_clock_uses_the_servers_answer_not_the_local_clock() -> None:
    class StubClient:
        def time(self) -> tuple[int, int]:
            return (1_700_000_000, 250_000)

    now = redis_clock(StubClient())()  # type: ignore[arg-type]
    assert now == datetime(2023, 11, 14, 22, 13, 20, 250_000, tzinfo=UTC)
