"""A worker SIGKILLed mid-way through work that must happen exactly once, then started again.

- **Alert delivery**: a stream of distinct alerts; the worker is killed while deliveries are in
  flight. Each alert reaches Slack once: delivered ones exactly once, and a delivery caught
  between "sent" and "recorded" is judged ``in_doubt`` and not sent again (at most once, and
  said), never twice. (tests/integration/test_alerts_pipeline.py holds the kill at the one
  request; this kills at a random point of a stream.)
- **Patch landing**: the target moved since the patch's base, so landing re-tests the patch on
  the new head in a worktree of its own; the worker is killed there, mid-landing. The operator
  submits the same patch again: it lands once, whatever the kill interrupted (the change is on
  the target exactly once, in one commit).
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from pitstop import components
from pitstop.alerts.ledger import DeliveryLedger
from pitstop.kernel.constants import PATCH_WORKTREES_DIR
from pitstop.kernel.serverinfo import ServerInfo
from pitstop.kernel.settings import Settings
from tests.faults.report import record
from tests.integration.test_alerts_support import alerts_project
from tests.patches.sample import CALC, git, make_sample, patches_project
from tests.support import Proc, run_cli, wait_for, worker_args

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.timeout(180),
              pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")]

ALERTS_YAML = """
leader_ttl: 1s
delivery: {lease: 3s, requeue_after: 2s}
channels:
  slack:
    type: slack
    webhook_url: ${TEST_SLACK_BASE}/stream
    rate_limit: null
receivers:
  team: {channels: [slack], storm: {max_messages: 1000, window: 60s}}
route: {receiver: team, group_wait: 0s, group_by: [type]}
"""


def test_alerts_reach_slack_once_when_the_worker_is_killed_mid_stream(tmp_path: Path) -> None:
    total = 30
    kill_after = random.randrange(1, total // 2)
    with alerts_project(tmp_path, ALERTS_YAML) as project:
        project.start_worker("first")
        client = redis.Redis.from_url(project.redis.url)
        try:
            bus = components.event_bus(client, Settings(), source="test")
            for n in range(total):
                bus.publish(f"deploy.svc{n}.failed", {"n": n})
            wait_for(lambda: len(project.slack.to("/stream")) >= kill_after, 30, interval=0.005,
                     message=f"{kill_after} posts")
            assert project.worker is not None
            project.worker.kill()  # SIGKILL mid-stream: claimed, sending, queued deliveries
            killed_with = len(project.slack.to("/stream"))
            project.start_worker("second")
            ledger = DeliveryLedger(client)

            def states() -> Counter[str]:
                return Counter(ledger.get(key.decode().split("delivery:", 1)[1]).get("state", "")
                               for key in client.scan_iter("pitstop:alerts:delivery:*"))

            wait_for(lambda: sum(states()[s] for s in ("delivered", "in_doubt")) == total, 60,
                     interval=0.2, message="every delivery settled")
            final = states()
        finally:
            client.close()
        posts = Counter(next(f"svc{n}" for n in range(total) if f"deploy.svc{n}.failed"
                             in post.body.get("text", "")) for post in project.slack.to("/stream"))

    record("alerts_killed_midway", {"alerts": total, "killed_after_posts": killed_with,
                                    "delivered": final["delivered"], "in_doubt": final["in_doubt"],
                                    "posted_twice": sum(n > 1 for n in posts.values()),
                                    "never_posted": total - len(posts)})
    assert max(posts.values()) == 1, posts.most_common(3)  # never twice
    assert total - len(posts) <= final["in_doubt"]  # only an in-doubt one may be missing
    assert final["delivered"] + final["in_doubt"] == total


MUL = CALC + "\n\ndef mul(a: int, b: int) -> int:\n    return a * b\n"
SLOW_TESTS = {"tests": {"kind": "exit_code", "weight": 100, "timeout": 60,
                        "command": ["sh", "-c", "sleep 2"]}}


def test_a_patch_lands_once_when_the_worker_is_killed_mid_landing(
        tmp_path: Path, pitstop_env: dict[str, str], private_redis: ServerInfo) -> None:
    sample = make_sample(tmp_path)
    home = tmp_path / "home"
    env = patches_project(home, pitstop_env, private_redis.url, sample, SLOW_TESTS)
    base = sample.head()
    diff = tmp_path / "mul.diff"
    diff.write_bytes(sample.patch({"calc.py": MUL}, scratch=tmp_path))
    sample.push_commit("NOTES.md", "moved\n", scratch=tmp_path)  # landing must re-test
    worktrees = home / ".state" / PATCH_WORKTREES_DIR
    outcomes: list[dict[str, Any]] = []
    first = Proc(worker_args("lander", "patches"), env, tmp_path / "first.log")
    try:
        first.wait_for_output("ready.", 60)
        sent = run_cli(["patch", "validate", str(diff), "--repo", "sample", "--base", base], env)
        assert sent.returncode == 0, sent.stderr
        wait_for(lambda: any(p.is_dir() for p in worktrees.glob("land-*")), 60, interval=0.02,
                 message="the landing's re-test worktree")
        time.sleep(random.uniform(0, 1.5))  # somewhere inside the 2 s re-test: fault timing
        first.kill()
        second = Proc(worker_args("lander2", "patches"), env, tmp_path / "second.log")
        try:
            second.wait_for_output("ready.", 60)
            for _ in range(2):  # the retry; then once more, as if a kill had cut it after its push
                again = run_cli(["patch", "validate", str(diff), "--repo", "sample", "--base",
                                 base, "--wait", "--json"], env, timeout=120)
                outcomes.append(json.loads(again.stdout))
        finally:
            second.stop()
    finally:
        first.kill()

    history = git(sample.remote, "log", "--format=%H %s", "main").splitlines()
    with_mul = [line for line in history
                if "def mul" in git(sample.remote, "show", line.split()[0], "--", "calc.py")]
    calc = sample.file_at("main", "calc.py", remote=True)
    record("patch_killed_mid_landing", {"retry_result": outcomes[0].get("result"),
                                        "landed_again_result": outcomes[1].get("result"),
                                        "commits_with_the_change": len(with_mul)})
    assert calc.count("def mul") == 1
    assert len(with_mul) == 1, history
    assert outcomes[1].get("result") != "merged", outcomes[1]  # already landed: never twice


def test_the_merge_lane_is_renewed_while_held(redis_client: redis.Redis) -> None:
    from pitstop.kernel.errors import LandingFailed
    from pitstop.patches import MergeLane

    lane = MergeLane(redis_client, wait=0.2, hold=0.6)
    with lane.hold("app", "main"):
        time.sleep(1.5)  # the subject: outliving the lease, not waiting for something
        assert redis_client.pttl(MergeLane.key("app", "main")) > 0
        with pytest.raises(LandingFailed, match="stayed busy"), lane.hold("app", "main"):
            pass  # pragma: no cover - the lane is still held
    assert not redis_client.exists(MergeLane.key("app", "main"))
