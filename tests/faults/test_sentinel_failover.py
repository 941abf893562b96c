"""Redis behind Sentinel: a real primary, a replica and three sentinels on 127.0.0.1; a worker (its
router, its Celery consumer and results) and this test's publisher all on one ``sentinel://`` URL.
The primary is SIGKILLed mid-stream; the test measures how long until the sentinels promote the
replica, the publisher's writes succeed again, the router launches again and the worker completes
workstreams again, and counts what was lost. Replication is asynchronous: an event the old primary
acknowledged in its last moments may never have reached the replica. That loss is reported (and
bounded here), not hidden; docs/operations.md explains the trade-off."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from pitstop.bus.eventbus import EventBus
from pitstop.connection.connect import client_for_url
from pitstop.kernel.errors import RedisUnavailable
from tests.faults.harness import (
    RETRYING_WORKSTREAMS,
    Project,
    runs_of,
    runs_per_event,
    stream_event_ids,
    unfinished,
)
from tests.faults.nodes import SentinelSet, sentinel_set
from tests.faults.report import record, scale
from tests.support import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(240)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelSet]:
    with sentinel_set(tmp_path / "redis") as nodes:
        yield nodes


class PromotionWatch(threading.Thread):
    """Polls the sentinels (every 50 ms, for at most a minute) for the moment the replica is the
    primary a majority of them name."""

    def __init__(self, cluster: SentinelSet) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.promoted_at: float | None = None

    def run(self) -> None:
        with contextlib.suppress(AssertionError):  # never promoted: promoted_at stays None
            wait_for(lambda: self.cluster.master_port() == self.cluster.replica.port, 60,
                     interval=0.05, message="the replica's promotion")
            self.promoted_at = time.time()


def _since(start: float, stamp: str | datetime | None) -> float | None:
    if stamp is None:
        return None
    moment = stamp if isinstance(stamp, datetime) else datetime.fromisoformat(stamp)
    return round(moment.timestamp() - start, 3)


def test_a_primary_killed_mid_stream_fails_over_and_work_goes_on(
        cluster: SentinelSet, tmp_path: Path) -> None:
    # Beat's reaper (every 5 s here) mends what the failover cut: a step message the old
    # primary took but never passed on is sent again. Steps retry: one that could not publish
    # during the failover is tried again.
    project = Project.create(tmp_path / "home", cluster.url(), workstreams=RETRYING_WORKSTREAMS,
                             extra_env={"PITSTOP_LOST_AFTER_SECONDS": "4"})
    client = client_for_url(cluster.url(), socket_connect_timeout=2, socket_timeout=5)
    bus = EventBus(client, source="fault-test")
    before, after = scale(60, 600), scale(120, 1200)
    accepted: dict[int, str] = {}
    failed_tries = 0
    try:
        project.start_worker("sentinel-w1", concurrency=2)
        project.start_beat()
        killed_at = 0.0
        resumed_at: float | None = None
        watch = PromotionWatch(cluster)
        for seq in range(before + after):
            if seq == before:
                killed_at = time.time()
                cluster.primary.kill()
                watch.start()
            deadline = time.monotonic() + 60
            while seq not in accepted:
                try:
                    accepted[seq] = bus.publish("fault.tick", {"seq": seq}).id
                except RedisUnavailable:
                    failed_tries += 1
                    assert time.monotonic() < deadline, "Redis never took an event after failover"
                    time.sleep(0.05)
            if seq >= before and resumed_at is None:
                resumed_at = time.time()
            time.sleep(0.005)  # a steady stream, not a burst
        watch.join(60)
        assert watch.promoted_at is not None, "the sentinels never promoted the replica"

        in_stream = stream_event_ids(client)
        lost_events = sorted(seq for seq, event_id in accepted.items() if event_id not in in_stream)
        surviving = {event_id for event_id in accepted.values() if event_id in in_stream}

        def all_routed() -> bool:
            routed = {d["event_id"] for d in project.decisions(rule="tick")}
            return surviving <= routed

        wait_for(all_routed, 90, interval=0.5, message="every surviving event to be routed")

        try:
            wait_for(lambda: not unfinished(client), 60, interval=0.5, message="every run to end")
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {unfinished(client)[:10]}") from None
        runs = runs_of(client)
        per_event = runs_per_event(client)
        launched = {d["event_id"]: d for d in project.decisions(rule="tick", decision="launched")}
        run_ids = {run.run_id for run in runs}
        runs_lost = sorted(d["run_id"] for d in launched.values() if d.get("run_id") not in run_ids)
        duplicates = {event_id: n for event_id, n in per_event.items() if n > 1}
        # Resumed: the first launch, and the first completed run, once the replica is primary
        # (nothing can be written before); and those of the first event published after the kill
        # (which waits behind the backlog the outage left).
        promoted = watch.promoted_at - killed_at
        published_after = {accepted[seq] for seq in range(before, before + after)}
        launches = sorted((_since(killed_at, d["ts"]) or 0.0, d["event_id"])
                          for d in launched.values())
        ends = sorted((_since(killed_at, run.finished_at) or 0.0, str((run.event or {}).get("id")))
                      for run in runs if run.status == "succeeded")
        relaunched = [at for at, _ in launches if at > promoted]
        completed = [at for at, _ in ends if at > promoted]
        new_launched = [at for at, event_id in launches if event_id in published_after]
        new_completed = [at for at, event_id in ends if event_id in published_after]
        figures = {
            "events_accepted": len(accepted),
            "events_lost": len(lost_events),
            "lost_seqs": lost_events[:20],
            "runs_launched": len(launched),
            "runs_lost": len(runs_lost),
            "runs_not_succeeded": sum(run.status != "succeeded" for run in runs),
            "events_launched_twice": len(duplicates),
            "publish_failures_during_failover": failed_tries,
            "promotion_s": round(promoted, 3),
            "publish_resumed_s": round(resumed_at - killed_at, 3) if resumed_at else None,
            "router_resumed_s": relaunched[0] if relaunched else None,
            "worker_resumed_s": completed[0] if completed else None,
            "first_new_event_launched_s": new_launched[0] if new_launched else None,
            "first_new_event_completed_s": new_completed[0] if new_completed else None,
        }
        record("sentinel_failover", figures)
        # Work goes on: every event that survived was routed once, every run ended, the router
        # and the worker came back within half a minute of the kill.
        assert figures["router_resumed_s"] is not None and figures["router_resumed_s"] < 30
        assert figures["worker_resumed_s"] is not None and figures["worker_resumed_s"] < 30
        assert duplicates == {} or len(duplicates) <= len(lost_events) + 5, duplicates
        assert figures["runs_not_succeeded"] == 0, [(r.run_id, r.status, r.error) for r in runs
                                                    if r.status != "succeeded"]
        # What asynchronous replication may lose: the old primary's last moments.
        assert len(lost_events) <= 25, lost_events
    finally:
        project.stop()
        client.close()
