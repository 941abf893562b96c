"""A task still running when the broker's visibility timeout runs out is delivered again (kombu's
Redis transport puts every message unacknowledged for that long back in its queue). Its body must
not run twice: a script run's claim, and a workstream step attempt's, find it running and do
nothing.

The test makes the timeout run out on purpose mid-task, the way kombu does it
(``QoS.restore_visible`` with a visibility timeout of 0: every unacknowledged message goes back),
with a second worker free to take the copy. pitstop's own guard, refusing a visibility timeout not
longer than the longest task time limit, is checked too: it is why a real deployment only meets
this when a worker is frozen or a clock jumps.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis
from kombu import Connection

from pitstop.bus.eventbus import EventBus
from pitstop.kernel.errors import ConfigError
from pitstop.kernel.serverinfo import ServerInfo
from pitstop.kernel.settings import load_settings
from tests.faults.harness import LEDGER_TRIGGERS, Project, ledger_workstreams, runs_of
from tests.faults.report import record
from tests.support import Proc, run_cli, wait_for, write_script

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(180)]

SLOW_EFFECT = """\
#!/usr/bin/env bash
# The side effect first, then the long part during which the message is delivered again.
printf '%s %s\\n' "$2" "$PITSTOP_RUN_ID" >> "$1"
sleep 4
"""


def expire_visibility(url: str) -> int:
    """What kombu does once the visibility timeout has passed: every unacknowledged message goes
    back to its queue. Returns how many were unacknowledged."""
    import workers.app  # noqa: F401 - installs pitstop's Redis transport

    with Connection(url, transport_options={"visibility_timeout": 0}) as connection:
        channel = connection.default_channel
        client = channel.client
        pending = int(client.hlen(channel.unacked_key))
        channel.qos.restore_visible(num=100, interval=1)
        return pending


def received(proc: Proc, task_id: str) -> bool:
    return f"[{task_id}] received" in proc.output()


def test_a_task_outliving_the_visibility_timeout_runs_its_body_once(
        private_redis: ServerInfo, tmp_path: Path) -> None:
    home = tmp_path / "home"
    ledger = tmp_path / "effects.log"
    (home / "scripts").mkdir(parents=True)
    script = write_script(home, "slow_effect.sh", SLOW_EFFECT)
    project = Project.create(home, private_redis.url, workstreams=ledger_workstreams(script, ledger),
                             triggers=LEDGER_TRIGGERS,
                             extra_env={"PITSTOP_ALLOWED_ROOTS": str(home / "scripts")})
    client = redis.Redis.from_url(private_redis.url)
    try:
        first = project.start_worker("vt1", concurrency=1)
        second = project.start_worker("vt2", concurrency=1)

        # 1. A script run (pitstop run): the copy's claim finds the run running.
        done = run_cli(["run", script, "--queue", "default", "--", str(ledger), "run"],
                       project.env)
        assert done.returncode == 0, done.stderr
        run_id = done.stdout.strip().split()[-1]
        wait_for(lambda: ledger.exists() and "run " in ledger.read_text(), 30,
                 message="the script to start")
        assert expire_visibility(private_redis.url) >= 1
        wait_for(lambda: received(first, run_id) and received(second, run_id), 20,
                 message="the message delivered to both workers")
        wait_for(lambda: json.loads(run_cli(["show", run_id, "--json"], project.env).stdout)
                 ["status"] == "succeeded", 30, interval=0.3, message="the run to succeed")

        # 2. A workstream step: the copy's attempt claim finds the attempt running.
        EventBus(client).publish("fault.tick", {"seq": "step"})
        wait_for(lambda: "step " in ledger.read_text(), 30, message="the step's script to start")
        [ws_run] = runs_of(client)
        step_task = f"{ws_run.run_id}:effect:1"
        assert expire_visibility(private_redis.url) >= 1
        wait_for(lambda: received(first, step_task) and received(second, step_task), 20,
                 message="the step message delivered to both workers")
        wait_for(lambda: runs_of(client)[0].terminal, 30, interval=0.3, message="the run to end")
        final = runs_of(client)[0]
    finally:
        project.stop()
        client.close()

    effects = ledger.read_text().splitlines()
    record("visibility_timeout", {"deliveries_each": 2, "effects": len(effects),
                                  "script_run": "succeeded", "workstream_run": final.status})
    assert [line.split()[0] for line in effects] == ["run", "step"]
    assert final.status == "succeeded" and final.steps["effect"]["attempt"] == 1


def test_a_visibility_timeout_not_longer_than_the_longest_time_limit_is_refused(
        tmp_path: Path) -> None:
    (tmp_path / "pitstop.yaml").write_text("celery: {visibility_timeout: 600}\n"
                                           "scripts: {max_timeout: 600}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={})
    assert "celery.visibility_timeout" in str(caught.value)
    assert "redelivers tasks that are still running" in str(caught.value)
