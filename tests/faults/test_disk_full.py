"""``.state`` full: the worker (its alert manager writes ``.state/alerts.jsonl`` first) runs with a
file-size limit (RLIMIT_FSIZE, set in the child only) just above what the log already holds, so
its next lines cannot be written, as on a full disk. Expected: one clear error line (no traceback
per event), one ``alerting.degraded`` event, no crash loop (the same worker keeps running and
keeps delivering), and every line written before intact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from pitstop import components
from pitstop.kernel.constants import EVENT_ALERTING_DEGRADED
from pitstop.kernel.settings import Settings
from pitstop.kernel.statelog import StateLog
from tests.faults.harness import stream_event_ids
from tests.faults.report import record
from tests.integration.test_alerts_support import AlertsProject, alerts_project
from tests.support import Proc, wait_for

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(120),
              pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")]

ALERTS_YAML = """
leader_ttl: 1s
channels:
  slack:
    type: slack
    webhook_url: ${TEST_SLACK_BASE}/full
    rate_limit: null
receivers:
  team: {channels: [slack]}
route: {receiver: team, group_wait: 0s, group_by: [type]}
"""
LIMIT = 512 * 1024
"""Bytes any file the worker writes may reach: its own log stays far below; alerts.jsonl is
filled to just under it."""

_LIMITED = ("import os, resource, sys; n = int(sys.argv[1]); "
            "resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
            "os.execv(sys.executable, [sys.executable, '-m', 'pitstop', *sys.argv[2:]])")


class LimitedWorker(Proc):
    """A pitstop worker whose files may not grow past ``limit`` bytes (Python ignores SIGXFSZ:
    a write past it fails with EFBIG, as one on a full disk fails with ENOSPC)."""

    def __init__(self, env: dict[str, str], log: Path, limit: int) -> None:
        self.log = log
        self._handle = log.open("wb")
        self.popen = subprocess.Popen(
            [sys.executable, "-c", _LIMITED, str(limit), "worker", "-Q", "default", "-c", "1",
             "-n", "full@%h"], env=env, stdout=self._handle, stderr=subprocess.STDOUT,
            start_new_session=True)


def test_a_full_state_dir_degrades_alerting_clearly_without_a_crash_loop(tmp_path: Path) -> None:
    with alerts_project(tmp_path, ALERTS_YAML) as project:
        _run(project)


def _run(project: AlertsProject) -> None:
    alerts_log = project.state / "alerts.jsonl"
    earlier = StateLog("alerts", project.state)
    record_line = {"kind": "alert", "note": "written before the disk filled", "pad": "x" * 900}
    while not alerts_log.exists() or alerts_log.stat().st_size < LIMIT - 600:
        earlier.append(record_line)
    before = alerts_log.read_bytes()
    worker = LimitedWorker(project.env, project.home / "full-worker.log", LIMIT)
    project.worker = worker
    worker.wait_for_output("ready.", 60)
    client = redis.Redis.from_url(project.redis.url)
    try:
        bus = components.event_bus(client, Settings(), source="test")
        for n in range(5):
            bus.publish(f"build.n{n}.failed", {"n": n})
        wait_for(lambda: len(project.slack.to("/full")) >= 5, 30,
                 message="the alerts delivered all the same")
        degraded = wait_for(lambda: stream_event_ids(client, EVENT_ALERTING_DEGRADED), 10,
                            message="an alerting.degraded event")
        output = worker.output()
    finally:
        client.close()

    errors = [line for line in output.splitlines() if "cannot write" in line]
    after = alerts_log.read_bytes()
    record("disk_full", {"limit_bytes": LIMIT, "alerts_delivered": len(project.slack.to("/full")),
                         "error_lines": len(errors), "degraded_events": len(degraded),
                         "log_bytes_before": len(before), "log_bytes_after": len(after)})
    assert worker.popen.poll() is None, "the worker died"
    assert output.count("ready.") == 1, "the worker restarted"
    assert len(errors) == 1, errors
    assert "alerts.jsonl" in errors[0] and "File too large" in errors[0], errors[0]
    assert "Traceback" not in output
    assert len(degraded) == 1
    assert after.startswith(before), "a line written before the disk filled was changed"
    assert all(json.loads(line)["note"] == record_line["note"]
               for line in before.decode().splitlines())
