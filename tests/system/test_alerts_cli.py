"""``pitstop alerts`` in subprocesses: test each channel, dry-run, silences, ack, list."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import redis

from pitstop.alerts.model import Alert
from pitstop.connection.server import RedisServer, free_port
from pitstop.kernel.serverinfo import ServerInfo
from tests.integration.test_alerts_support import SlackStandIn
from tests.support import ROOT, run_cli

pytestmark = pytest.mark.system


class _Result:
    def __init__(self, code: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = code, stdout, stderr


def in_process(args: list[str], env: dict[str, str]) -> _Result:
    """``pitstop ARGS`` through :func:`pitstop.cli.main` in this process (errors as exit codes,
    as in a subprocess), with ``env`` as the whole environment."""
    from click.testing import CliRunner

    from pitstop.cli import main

    def entry() -> None:
        main(args)

    import click

    command = click.Command("pitstop", callback=entry)
    saved = dict(os.environ)
    os.environ.clear()
    try:
        result = CliRunner().invoke(command, [], env=env, catch_exceptions=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return _Result(result.exit_code, result.stdout, result.stderr)

CONFIG = """
channels:
  slack: {type: slack, webhook_url: "${SLACK_URL}"}
  dead: {type: webhook, url: "${DEAD_URL}"}
receivers:
  team: {channels: [slack, dead]}
route:
  receiver: team
"""


def test_alerts_commands(tmp_path: Path, own_redis: tuple[RedisServer, ServerInfo]) -> None:
    _, info = own_redis
    slack = SlackStandIn()
    dead_url = f"http://127.0.0.1:{free_port()}/hooks/deadbeefsecret"
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "alerts.yaml").write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
    env.update({"PITSTOP_HOME": str(tmp_path), "PITSTOP_REDIS_URL": info.url,
                "PYTHONPATH": str(ROOT), "SLACK_URL": slack.url("/services/T/B/x"),
                "DEAD_URL": dead_url})
    try:
        tested = run_cli(["alerts", "test"], env)
        assert tested.returncode == 1
        assert "slack: ok" in tested.stdout
        assert "dead: FAILED: request failed" in tested.stdout
        assert "deadbeefsecret" not in tested.stdout + tested.stderr
        (post,) = slack.to("/services/T/B/x")
        assert post.body["text"].startswith("[TEST]")

        silenced = in_process(["alerts", "silence", "build.**", "--for", "1h", "--reason",
                            "maintenance window", "--match", "source=ci*"], env)
        assert silenced.returncode == 0, silenced.stderr
        silence_id = silenced.stdout.split()[1].rstrip(":")
        dry = in_process(["alerts", "dry-run", "build.linux.failed", "--source", "ci-7",
                       "--json"], env)
        report = json.loads(dry.stdout)
        assert report["decisions"][0]["outcome"] == "silenced"
        assert "maintenance window" in report["decisions"][0]["detail"]
        other = in_process(["alerts", "dry-run", "build.linux.failed", "--source", "laptop"], env)
        assert "route root -> team (slack, dead): new" in other.stdout
        quiet = in_process(["alerts", "dry-run", "deploy.staging.info"], env)
        assert "no alert" in quiet.stdout and "not subscribed" in quiet.stdout
        assert in_process(["alerts", "unsilence", silence_id], env).returncode == 0
        assert in_process(["alerts", "silences", "--json"], env).stdout.strip() == ""

        client = redis.Redis.from_url(info.url)
        now = float(client.time()[0])
        alert = Alert(id="01a2b3c4-0000-7000-8000-0000deadbeef", group_key="k",
                      route_id="root", receiver="team", group={"subject": "build.linux"},
                      labels={}, severity="failed", source="ci", created_at=now - 30,
                      first_event_at=now - 30, last_event_at=now - 30, count=3)
        client.set("pitstop:alerts:alert:" + alert.id, alert.to_json())
        client.zadd("pitstop:alerts:index", {alert.id: alert.created_at})
        acked = in_process(["alerts", "ack", "deadbeef", "--by", "ann"], env)
        assert acked.returncode == 0, acked.stderr
        assert f"acknowledged alert {alert.id}" in acked.stdout
        again = in_process(["alerts", "ack", alert.id], env)
        assert "already acknowledged by ann" in again.stdout
        listed = [json.loads(line) for line in
                  in_process(["alerts", "list", "--json"], env).stdout.splitlines()]
        assert listed[0]["id"] == alert.id and listed[0]["acked"].endswith("by ann")
        from pitstop.alerts.ledger import DeliveryLedger

        ledger = DeliveryLedger(client)
        with client.pipeline(transaction=True) as pipe:
            ledger.queue_notification(pipe, {"id": f"{alert.id}.1", "kind": "firing",
                                             "receiver": "team", "alerts": []},
                                      ["slack", "dead"], now=now, requeue_after=30)
            pipe.execute()
        shown = in_process(["alerts", "show", "deadbeef"], env)
        assert shown.returncode == 0, shown.stderr
        assert f"alert {alert.id}: failed build.linux (firing)" in shown.stdout
        assert "acknowledged:" in shown.stdout and "by ann" in shown.stdout
        assert f"delivery {alert.id}.1:slack: pending, 0 attempt(s)" in shown.stdout
        unknown = in_process(["alerts", "ack", "nope-nope"], env)
        assert unknown.returncode == 2 and "no alert has id" in unknown.stderr
        client.close()
    finally:
        slack.close()
