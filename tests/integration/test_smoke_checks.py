"""The checks of ``pitstop smoke`` one by one on a real Redis, with a stand-in for the Celery
half: what each one says when it fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from pitstop.fleet.smoke import run_smoke
from pitstop.kernel.constants import BEAT_HEARTBEAT_KEY, BEAT_LOCK_KEY, EVENT_STREAM, ROUTER_GROUP
from pitstop.kernel.errors import ConfigError
from pitstop.triggers.source import ConfigSource
from pitstop.triggers.state import TriggerState

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


class Probe:
    def __init__(self, workers: dict[str, list[str]], answer: bool = True) -> None:
        self.workers = workers
        self.answer = answer
        self.sent: list[str] = []

    def queues_by_worker(self, timeout: float) -> dict[str, list[str]]:
        return self.workers

    def canary(self, queue: str, nonce: str, timeout: float) -> dict[str, Any]:
        self.sent.append(queue)
        if not self.answer:
            raise TimeoutError(queue)
        return {"nonce": nonce, "worker": "w1@h"}


def healthy_beat(client: redis.Redis) -> None:
    seconds, micros = client.time()
    client.set(BEAT_HEARTBEAT_KEY, f"{seconds}.{micros:06d} beat@h/1/x 30")
    client.set(BEAT_LOCK_KEY, "beat@h/1/x")


def report(client: redis.Redis, config: Path, probe: Probe) -> dict[str, Any]:
    result = run_smoke(client, probe, queues=["default", "linux"], config_dir=config,
                       beat_lock_ttl=30, timeout=0.1, stuck_after=5)
    return {check.name: check for check in result.checks}


def test_each_check_names_what_it_saw(redis_client: redis.Redis, tmp_path: Path) -> None:
    healthy_beat(redis_client)
    probe = Probe({"w1@h": ["default"], "w2@h": ["pwsh"]})
    checks = report(redis_client, tmp_path, probe)
    assert checks["workers"].detail.startswith("no worker answering consumes queue linux")
    assert "w2@h [pwsh]" in checks["workers"].detail
    assert checks["canary"].skipped and probe.sent == []
    assert "consumer group 'router' does not exist" in checks["router"].detail
    assert checks["alerts"].ok and checks["alerts"].skipped
    assert checks["triggers"].ok and "no trigger config" in checks["triggers"].detail

    probe = Probe({"w1@h": ["default", "linux"]}, answer=False)
    checks = report(redis_client, tmp_path, probe)
    assert checks["workers"].ok and "default: 1, linux: 1" in checks["workers"].detail
    assert checks["canary"].detail == "no answer from queue default within 0.5s"

    # An event waiting undelivered for long (its id is its time: 1970) is a stuck backlog.
    redis_client.xgroup_create(EVENT_STREAM, ROUTER_GROUP, id="0", mkstream=True)
    redis_client.xadd(EVENT_STREAM, {"event": "{}"}, id="1000-0")
    checks = report(redis_client, tmp_path, Probe({"w1@h": ["default", "linux"]}))
    assert checks["canary"].ok and "via w1@h" in checks["canary"].detail
    assert "1 entries not delivered" in checks["router"].detail
    assert "nothing consumes the group" in checks["router"].detail


def test_the_trigger_config_in_force_must_be_the_last_good_one(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    healthy_beat(redis_client)
    probe = Probe({"w1@h": ["default", "linux"]})
    (tmp_path / "triggers.yaml").write_text("triggers: []\n")
    checks = report(redis_client, tmp_path, probe)
    assert "exists but no trigger config is in force" in checks["triggers"].detail

    source = ConfigSource(tmp_path, TriggerState(redis_client))
    loaded = source.reload(by="test")
    checks = report(redis_client, tmp_path, probe)
    assert checks["triggers"].ok and loaded.config.version in checks["triggers"].detail

    (tmp_path / "triggers.yaml").write_text("triggers: []\n# edited\n")
    checks = report(redis_client, tmp_path, probe)
    assert "is not the one in force" in checks["triggers"].detail

    (tmp_path / "triggers.yaml").write_text("triggers: {not: [a list\n")
    with pytest.raises(ConfigError, match=r"triggers\.yaml"):
        source.reload(by="test")
    checks = report(redis_client, tmp_path, probe)
    assert "an edit was refused" in checks["triggers"].detail
    assert f"config {loaded.config.version} stays in force" in checks["triggers"].detail


def test_beat_with_a_stale_heartbeat_is_down(redis_client: redis.Redis, tmp_path: Path) -> None:
    seconds, micros = redis_client.time()
    redis_client.set(BEAT_HEARTBEAT_KEY, f"{seconds - 100}.{micros:06d} beat@h/1/x 30")
    checks = report(redis_client, tmp_path, Probe({}))
    assert checks["beat"].detail.startswith("Beat is down: its last heartbeat (from beat@h) "
                                            "is 100s old, over its lock TTL of 30s")
