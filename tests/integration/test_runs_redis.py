"""The run store against a real redis-server: concurrent writers never lose each other's changes."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from pitstop.kernel.constants import RUN_KEY_PREFIX
from pitstop.kernel.statelog import StateLog, read_log
from pitstop.runs.store import TERMINAL_STATUSES, RunStore, redis_clock

pytestmark = pytest.mark.integration


def in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run ``work(i)`` for i in range(count) on ``count`` threads released together."""
    barrier = threading.Barrier(count)

    def start(i: int) -> Any:
        barrier.wait(timeout=10)
        return work(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(start, range(count)))


@pytest.mark.timeout(60)
def test_concurrent_records_and_updates_lose_nothing(
    redis_client: redis.Redis, tmp_path: Path
) -> None:
    log = StateLog("runs", tmp_path)
    store = RunStore(redis_client, state_log=log)
    run = store.create_run(kind="workstream")
    threads, per_thread = 8, 25

    def work(i: int) -> None:
        for n in range(per_thread):
            store.record_cli_execution(run.run_id, {"execution_id": f"{i}-{n}", "rc": n})
            store.update_run(run.run_id, error=f"thread {i} step {n}")
            store.heartbeat(run.run_id)

    in_threads(threads, work)
    final = store.get_run(run.run_id)
    ids = [e["execution_id"] for e in final.executions]
    assert Counter(ids) == Counter(f"{i}-{n}" for i in range(threads) for n in range(per_thread))
    # per thread, its own records are in its order
    for i in range(threads):
        mine = [int(x.split("-")[1]) for x in ids if x.startswith(f"{i}-")]
        assert mine == list(range(per_thread))
    # the state log saw every change, each snapshot growing by one execution at a time
    records = [e for e in read_log("runs", tmp_path) if e["op"] == "record"]
    assert sorted(len(e["run"]["executions"]) for e in records) == list(
        range(1, threads * per_thread + 1)
    )


@pytest.mark.timeout(60)
def test_exactly_one_worker_claims_a_run(redis_client: redis.Redis) -> None:
    store = RunStore(redis_client)
    runs = [store.create_run(kind="script") for _ in range(20)]

    def work(i: int) -> list[bool]:
        return [
            store.claim_run(run.run_id, host=f"host-{i}", worker_pid=i) is not None for run in runs
        ]

    results = in_threads(6, work)
    for index, run in enumerate(runs):
        winners = [i for i, claims in enumerate(results) if claims[index]]
        assert len(winners) == 1
        final = store.get_run(run.run_id)
        assert final.attempts == 1
        assert final.host == f"host-{winners[0]}"


@pytest.mark.timeout(60)
def test_racing_terminal_updates_settle_on_one(redis_client: redis.Redis) -> None:
    store = RunStore(redis_client)
    run = store.create_run(kind="script")
    store.claim_run(run.run_id, host="h", worker_pid=1)
    statuses = sorted(TERMINAL_STATUSES)

    def work(i: int) -> str:
        status = statuses[i % len(statuses)]
        return store.update_run(run.run_id, status=status, exit_code=i).status

    seen = in_threads(10, work)
    final = store.get_run(run.run_id)
    assert final.terminal
    # every caller got back the one status that won, never a status that was overwritten
    assert set(seen) == {final.status}
    assert final.exit_code is not None and statuses[final.exit_code % len(statuses)] == final.status


@pytest.mark.timeout(60)
def test_a_claim_and_an_expiry_racing_never_both_win(redis_client: redis.Redis,
                                                      tmp_path: Path) -> None:
    log = StateLog("runs", tmp_path)
    store = RunStore(redis_client, state_log=log, clock=redis_clock(redis_client))
    runs = [store.create_run(kind="script", queue="q", queue_ttl=30) for _ in range(30)]
    ids = [run.run_id for run in runs]
    # Half of them pass their deadline (the ones a claim must never win), half do not.
    for run_id in ids[::2]:
        raw = redis_client.get(RUN_KEY_PREFIX + run_id)
        assert raw is not None
        doc = json.loads(raw)
        doc["queue_deadline"] = doc["created_at"]
        redis_client.set(RUN_KEY_PREFIX + run_id, json.dumps(doc))
    overdue = set(ids[::2])

    def work(i: int) -> set[str]:
        if i % 2:
            return {r.run_id for r in store.expire_queued(run_ids=ids)}
        return {run_id for run_id in ids
                if store.claim_run(run_id, host=f"host-{i}", worker_pid=i) is not None}

    won = in_threads(8, work)
    claimed = [run_id for i, ids_won in enumerate(won) if i % 2 == 0 for run_id in ids_won]
    assert sorted(claimed) == sorted(set(ids) - overdue)  # each in time claimed exactly once
    for run_id in ids:
        final = store.get_run(run_id)
        assert final.status == ("expired" if run_id in overdue else "running")
        assert final.attempts == (0 if run_id in overdue else 1)
    logged = Counter(e["op"] for e in read_log("runs", tmp_path))
    assert logged["claim"] == len(ids) - len(overdue)
    assert logged["expire"] == len(overdue)  # whoever expired it, once


def test_keys_expire_on_a_real_server(redis_client: redis.Redis) -> None:
    store = RunStore(redis_client, ttl_seconds=120)
    run = store.create_run(kind="k")
    store.update_run(run.run_id, status="running")
    assert 100 < redis_client.ttl(RUN_KEY_PREFIX + run.run_id) <= 120
    redis_client.delete(RUN_KEY_PREFIX + run.run_id)
    assert store.list_runs() == []
    assert store.reap_lost(stale_after=timedelta(seconds=0)) == []
