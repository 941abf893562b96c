"""redis-server SIGKILLed three times during a stream of events, restarted each time on the same
port from its append-only file, while a worker's router consumes the stream.

``appendfsync always``: Redis writes and fsyncs the AOF before it answers, so no event whose
``publish`` returned is lost, and every one is routed exactly once. ``everysec``: Redis still
writes the AOF before answering but fsyncs once a second, so a process kill (this test) loses
only what a postponed write held back, while a machine crash or power cut could lose up to about
a second of acknowledged events: the test reports the count; docs/operations.md says how to
choose. In both, the router resumes consuming within 5 s of each restart.

Short mode: 600 events; ``PITSTOP_FAULTS_LONG=1``: 5,000.
"""

from __future__ import annotations

import random
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest
import redis

from pitstop.bus.eventbus import EventBus
from pitstop.kernel.errors import RedisUnavailable
from tests.faults.harness import (
    RETRYING_WORKSTREAMS,
    Project,
    runs_of,
    runs_per_event,
    stream_event_ids,
)
from tests.faults.nodes import Node, data_node
from tests.faults.report import long_mode, record, scale
from tests.support import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration,
              pytest.mark.timeout(1800 if long_mode() else 180)]

RESUME_WITHIN = 5.0


class Publisher(threading.Thread):
    """Publishes ``total`` events as fast as Redis takes them, retrying through outages; keeps
    the ids ``publish`` returned (acknowledged) and how many tries failed."""

    def __init__(self, url: str, total: int) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
        self.bus = EventBus(self.client, source="fault-test")
        self.total = total
        self.acked: dict[int, str] = {}
        self.failures = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + (1500 if long_mode() else 150)
            for seq in range(self.total):
                while seq not in self.acked:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"gave up publishing at {seq}")
                    try:
                        self.acked[seq] = self.bus.publish("fault.tick", {"seq": seq}).id
                    except RedisUnavailable:
                        self.failures += 1
                        time.sleep(0.02)
                time.sleep(0.002)  # a stream, not one burst: the kills land mid-stream
        except BaseException as exc:
            self.error = exc
        finally:
            self.client.close()


def _first_decision_after(project: Project, moment: float) -> float | None:
    stamps = [datetime.fromisoformat(d["ts"].replace("Z", "+00:00")).timestamp()
              for d in project.decisions(rule="tick")]
    later = [stamp for stamp in stamps if stamp > moment]
    return min(later) - moment if later else None


@pytest.mark.parametrize("appendfsync", ["always", "everysec"])
def test_redis_sigkilled_three_times_mid_stream(appendfsync: str, tmp_path: Path) -> None:
    total = scale(600, 5000)
    rng = random.Random()
    node: Node = data_node(tmp_path / "redis", "aof", appendfsync=appendfsync)
    node.start()
    project = Project.create(tmp_path / "home", node.url, workstreams=RETRYING_WORKSTREAMS,
                             extra_env={"PITSTOP_LOST_AFTER_SECONDS": "4"})
    restarts: list[dict[str, float | None]] = []
    publisher = Publisher(node.url, total)
    try:
        project.start_worker("aof-w1", concurrency=2)
        publisher.start()
        for _ in range(3):
            target = len(publisher.acked) + rng.randrange(total // 8, total // 5)
            wait_for(lambda t=target: len(publisher.acked) >= t or not publisher.is_alive(),
                     120, interval=0.01, message="events to flow")
            node.kill()
            killed = time.time()
            node.start()  # the same port and files: the AOF is replayed
            back = time.time()
            # resumed: the router decided on an event after Redis answered again
            resumed = wait_for(lambda b=back: _first_decision_after(project, b), 30,
                               interval=0.05, message="the router to resume")
            restarts.append({"down_s": round(back - killed, 3), "back_at": back,
                             "router_resumed_s": round(resumed, 3)})
        publisher.join(1500 if long_mode() else 150)
        assert publisher.error is None, publisher.error
        client = node.client()
        in_stream = stream_event_ids(client)
        lost = sorted(seq for seq, event_id in publisher.acked.items() if event_id not in in_stream)
        surviving = {event_id for event_id in publisher.acked.values() if event_id in in_stream}
        wait_for(lambda: surviving <= {d["event_id"] for d in project.decisions(rule="tick")},
                 120, interval=0.5, message="every stored event to be routed")
        per_event = runs_per_event(client)
        ends = sorted(run.finished_at.timestamp() for run in runs_of(client) if run.finished_at)
        client.close()
    finally:
        project.stop()
        node.stop()

    for restart in restarts:  # the Celery worker: the first workstream run it ended after
        back_at = float(restart.pop("back_at") or 0)
        later = [end for end in ends if end > back_at]
        restart["worker_resumed_s"] = round(later[0] - back_at, 3) if later else None
    figures = {"appendfsync": appendfsync, "events": total, "acknowledged": len(publisher.acked),
               "acknowledged_lost": len(lost), "lost_seqs": lost[:20],
               "publish_failures": publisher.failures, "restarts": restarts,
               "events_launched_twice": sum(n > 1 for n in per_event.values())}
    record(f"redis_kills_{appendfsync}", figures)
    assert len(publisher.acked) == total
    if appendfsync == "always":
        assert lost == [], f"acknowledged events lost with appendfsync always: {lost[:10]}"
    assert all(r["router_resumed_s"] is not None and r["router_resumed_s"] < RESUME_WITHIN
               for r in restarts), restarts
    assert set(per_event.values()) <= {1}, "an event launched twice"
    assert surviving <= set(per_event), "a stored event was never launched"
