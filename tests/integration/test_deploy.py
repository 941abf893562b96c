"""Deployments on a real Redis, with real scripts through the supervisor and a real HTTP service:
smoke checks, automatic rollback, critical rollbacks, the fenced lock, approvals, records."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from pitstop.bus.eventbus import EventBus
from pitstop.deploy import (
    DeployStore,
    EnvironmentLock,
    HttpProbe,
    ScriptStep,
    SmokeSuite,
    configured_deployer,
)
from pitstop.deploy.config import DeploymentsConfig, HttpCheckConfig
from pitstop.deploy.service import Deployer
from pitstop.kernel.errors import ApprovalRefused, DeployLocked, FencedOut
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.serverinfo import ServerInfo
from pitstop.kernel.settings import load_settings
from pitstop.kernel.statelog import read_log

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DEPLOY_SH = """#!/bin/sh
# deploy.sh VERSION: the service now reports VERSION (a version with "broken" deploys a broken
# service; "fail" makes this script fail half-way).
case "$1" in *fail*) echo "deploy of $1 failed half-way" >&2; echo "$1" > "$STATE"; exit 3;; esac
echo "deploying $1 (token $DEPLOY_TOKEN)"
echo "$1" > "$STATE"
"""
ROLLBACK_SH = """#!/bin/sh
if [ -e "$ROLLBACK_BREAKS" ]; then echo "rollback cannot reach the host" >&2; exit 7; fi
echo "$1" > "$STATE"
"""
CHECK_PY = """import os, sys
version = open(os.environ["STATE"]).read().strip()
sys.exit(0 if version == sys.argv[1] else 1)
"""


@dataclass
class Service:
    """A stand-in for the deployed service: /healthz reports the version deploy.sh wrote."""

    state: Path
    delay: float = 0.0
    failures_left: int = 0
    seen: list[str] = field(default_factory=list)
    port: int = 0


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path / "version")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            svc.seen.append(self.path)
            time.sleep(svc.delay)
            version = svc.state.read_text().strip() if svc.state.exists() else "none"
            if svc.failures_left > 0:
                svc.failures_left -= 1
                status, body = 503, b"warming up"
            elif "broken" in version:
                status, body = 500, b'{"status": "error"}'
            else:
                status, body = 200, json.dumps({"status": "ok", "version": version}).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    svc.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield svc
    server.shutdown()
    server.server_close()


@pytest.fixture
def project(tmp_path: Path, service: Service, redis_client: redis.Redis,
            redis_server: ServerInfo, monkeypatch: pytest.MonkeyPatch) -> Path:
    scripts = tmp_path / "scripts" / "deploy"
    scripts.mkdir(parents=True)
    for name, body in (("deploy.sh", DEPLOY_SH), ("rollback.sh", ROLLBACK_SH),
                       ("check.py", CHECK_PY)):
        (scripts / name).write_text(body)
        (scripts / name).chmod(0o755)
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "deployments.yaml").write_text(f"""
environments:
  staging:
    deploy: {{script: deploy/deploy.sh, args: ["{{version}}"], env: {{STATE: "{service.state}"}}}}
    rollback: {{script: deploy/rollback.sh, args: ["{{version}}"],
               env: {{STATE: "{service.state}", ROLLBACK_BREAKS: "{tmp_path / 'breaks'}"}}}}
    smoke:
      - name: health
        http: {{url: "http://127.0.0.1:{service.port}/healthz?v={{version}}", status: 200,
               body_match: '"version": "{{version}}"', max_latency_ms: 2000, retries: 1,
               retry_delay: 0}}
      - name: version file
        script: deploy/check.py
        args: ["{{version}}"]
        env: {{STATE: "{service.state}"}}
    lock_ttl: 5
  production:
    deploy: {{script: deploy/deploy.sh, args: ["{{version}}"], env: {{STATE: "{service.state}"}}}}
    smoke:
      - name: health
        http: {{url: "http://127.0.0.1:{service.port}/healthz"}}
    approval: {{required: true, approvers: [alice, bob], timeout: 600}}
""")
    monkeypatch.setenv("DEPLOY_TOKEN", "tok-canary-123")
    monkeypatch.setenv("PITSTOP_HOME", str(tmp_path))
    monkeypatch.setenv("PITSTOP_REDIS_URL", redis_server.url)
    for name in ("PITSTOP_CONFIG_DIR", "PITSTOP_STATE_DIR", "PITSTOP_ALLOWED_ROOTS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def deployer_for(project: Path, client: redis.Redis, lines: list[str] | None = None) -> Deployer:
    settings = load_settings()
    assert settings.project_dir == project
    bus = EventBus(client)
    return configured_deployer(settings, client, bus, Redactor.from_environ(),
                               say=None if lines is None else lines.append, sleep=lambda _s: None)


def events_of(client: redis.Redis, prefix: str = "deploy.") -> list[dict[str, Any]]:
    bus = EventBus(client)
    return [event.to_dict() for event in bus.replay(pattern="**") if event.type.startswith(prefix)]


def test_deploys_then_rolls_back_a_version_whose_smoke_check_fails(
        project: Path, redis_client: redis.Redis, service: Service) -> None:
    lines: list[str] = []
    deployer = deployer_for(project, redis_client, lines)
    first = deployer.deploy("staging", "1.0.0", by="ci", trigger="test")
    assert first["status"] == "succeeded", first
    second = deployer.deploy("staging", "1.1.0", by="ci", trigger="test")
    assert second["status"] == "succeeded"
    assert second["previous_version"] == "1.0.0"
    state = DeployStore(redis_client).state("staging")
    assert (state.current, state.previous) == ("1.1.0", "1.0.0")

    bad = deployer.deploy("staging", "1.2.0-broken", by="alice", trigger="test")
    assert bad["status"] == "rolled_back", bad
    assert bad["rolled_back_to"] == "1.1.0"
    assert service.state.read_text().strip() == "1.1.0"  # the rollback script really ran
    steps = [(s["step"], s["name"], s["ok"]) for s in bad["steps"]]
    assert steps == [("deploy", "deploy", True), ("smoke", "health", False),
                     ("smoke", "version file", True), ("rollback", "rollback", True),
                     ("rollback_smoke", "health", True), ("rollback_smoke", "version file", True)]
    health = bad["steps"][1]
    assert health["http_status"] == 500 and health["attempts"] == 2  # retried once
    assert "status 500, expected 200" in health["detail"]
    assert "/healthz?v=1.2.0-broken" in service.seen  # {version} in the URL
    state = DeployStore(redis_client).state("staging")
    assert (state.current, state.previous) == ("1.1.0", "1.0.0")  # the bad one never counted

    # The history shows both, newest first; the state log has every deployment.
    history = DeployStore(redis_client).history("staging")
    assert [(r["version"], r["status"]) for r in history] == [
        ("1.2.0-broken", "rolled_back"), ("1.1.0", "succeeded"), ("1.0.0", "succeeded")]
    logged = list(read_log("deployments", project / ".state"))
    assert [(r["version"], r["status"], r["previous_version"]) for r in logged] == [
        ("1.0.0", "succeeded", None), ("1.1.0", "succeeded", "1.0.0"),
        ("1.2.0-broken", "rolled_back", "1.1.0")]
    assert all("duration" in step and "exit_code" in step for step in logged[2]["steps"]
               if step["step"] in ("deploy", "rollback"))
    assert logged[2]["requested_by"] == "alice" and logged[2]["trigger"] == "test"

    kinds = [e["type"] for e in events_of(redis_client)]
    assert kinds == ["deploy.staging.started", "deploy.staging.succeeded",
                     "deploy.staging.started", "deploy.staging.succeeded",
                     "deploy.staging.started", "deploy.staging.failed",
                     "deploy.staging.rolled_back"]
    failed = events_of(redis_client)[5]
    assert failed["data"]["failed_steps"] == ["health"]
    assert failed["data"]["severity"] == "error"
    # The deploy script printed a secret: nothing kept shows it.
    everything = json.dumps(history) + (project / ".state" / "deployments.jsonl").read_text()
    everything += json.dumps(events_of(redis_client, ""))
    assert "tok-canary-123" not in everything
    assert any("rolling staging back to 1.1.0" in line for line in lines)


def test_a_failing_deploy_command_is_rolled_back_too_and_a_failed_rollback_is_critical(
        project: Path, redis_client: redis.Redis, service: Service) -> None:
    deployer = deployer_for(project, redis_client)
    assert deployer.deploy("staging", "2.0", by="ci")["status"] == "succeeded"
    failed = deployer.deploy("staging", "2.1-fail", by="ci")
    assert failed["status"] == "rolled_back"
    assert failed["steps"][0]["exit_code"] == 3
    assert "deploy of 2.1-fail failed half-way" in failed["steps"][0]["detail"]
    assert "deploy command failed" in failed["reason"]

    (project / "breaks").touch()
    critical = deployer.deploy("staging", "2.2-broken", by="ci")
    assert critical["status"] == "critical"
    assert "rollback to 2.0 failed: rollback" in critical["error"]
    assert critical["steps"][-1]["exit_code"] == 7
    state = DeployStore(redis_client).state("staging")
    assert state["status"] == "critical" and state["attempted"] == "2.2-broken"
    assert state.current == "2.0"
    last = events_of(redis_client)[-1]
    assert last["type"] == "deploy.staging.critical"
    assert last["data"]["severity"] == "critical"


def test_a_second_deployment_is_refused_while_the_first_holds_the_environment(
        project: Path, redis_client: redis.Redis) -> None:
    deployer = deployer_for(project, redis_client)
    lock = EnvironmentLock(redis_client, "staging", ttl=5)
    lease = lock.acquire(deployment="dep-first", kind="deploy", version="1.0", by="alice",
                         since="now")
    with pytest.raises(DeployLocked) as refused:
        deployer.deploy("staging", "1.1", by="bob")
    assert "staging is being deployed by deployment dep-first" in str(refused.value)
    assert "by alice" in str(refused.value)
    assert DeployStore(redis_client).history("staging")[0]["status"] == "refused"
    lock.release(lease)
    assert deployer.deploy("staging", "1.1", by="bob")["status"] == "succeeded"


def test_a_stale_lock_holder_is_fenced_out_of_the_environment_state(
        redis_client: redis.Redis) -> None:
    store = DeployStore(redis_client)
    lock = EnvironmentLock(redis_client, "fenced", ttl=2)
    old = lock.acquire(deployment="a")
    redis_client.delete(lock.key)  # its lock expired (a paused process)
    new = lock.acquire(deployment="b")
    assert new.fence == old.fence + 1
    with pytest.raises(FencedOut):
        store.commit("fenced", fence=old.fence, mode="succeeded", version="9", now="t",
                     deployment="a")
    store.commit("fenced", fence=new.fence, mode="succeeded", version="10", now="t",
                 deployment="b")
    assert store.state("fenced").current == "10"
    assert not lock.release(old) and lock.release(new)


def test_production_waits_for_an_approval_by_another_listed_approver(
        project: Path, redis_client: redis.Redis, service: Service) -> None:
    deployer = deployer_for(project, redis_client)
    record = deployer.deploy("production", "3.0", by="alice")
    assert record["status"] == "awaiting_approval"
    assert not service.state.exists()  # nothing ran
    with pytest.raises(ApprovalRefused, match="another approver"):
        deployer.approve(record["id"], by="alice")
    with pytest.raises(ApprovalRefused, match="mallory may not approve"):
        deployer.approve(record["id"], by="mallory")

    waiter_result: list[dict[str, Any]] = []
    waiting = deployer_for(project, redis_client)
    waiting.sleep = lambda _s: time.sleep(0.05)
    thread = threading.Thread(target=lambda: waiter_result.append(
        waiting.wait_for_approval(record["id"], poll=0.05)))
    thread.start()
    from tests.support import wait_for

    store = DeployStore(redis_client)
    wait_for(lambda: store.has_waiter(record["id"]), 10, message="the requester to wait")
    approved = deployer.approve(record["id"][-8:], by="bob")  # a suffix of the id will do
    assert approved["approval"]["approved_by"] == "bob"
    thread.join(30)
    assert waiter_result and waiter_result[0]["status"] == "succeeded"
    assert service.state.read_text().strip() == "3.0"
    with pytest.raises(ApprovalRefused, match="not awaiting approval"):
        deployer.approve(record["id"], by="bob")
    kinds = [e["type"] for e in events_of(redis_client)]
    assert kinds[0] == "deploy.production.awaiting_approval"
    assert kinds[-1] == "deploy.production.succeeded"


def test_an_approval_with_nobody_waiting_runs_the_deployment_where_it_is_approved(
        project: Path, redis_client: redis.Redis, service: Service) -> None:
    deployer = deployer_for(project, redis_client)
    record = deployer.deploy("production", "4.0", by="alice")
    deployer.approve(record["id"], by="bob")
    done = deployer.run_approved(record["id"], grace=0)
    assert done["status"] == "succeeded"
    rejected = deployer.deploy("production", "4.1", by="alice")
    assert deployer.reject(rejected["id"], by="alice", reason="not today")["status"] == "rejected"


def test_manual_rollback_to_the_previous_version_and_to_a_chosen_one(
        project: Path, redis_client: redis.Redis, service: Service) -> None:
    deployer = deployer_for(project, redis_client)
    for version in ("5.0", "5.1", "5.2"):
        assert deployer.deploy("staging", version, by="ci")["status"] == "succeeded"
    back = deployer.rollback("staging", by="ops")
    assert (back["kind"], back["status"], back["version"]) == ("rollback", "rolled_back", "5.1")
    store = DeployStore(redis_client)
    assert (store.state("staging").current, store.state("staging").previous) == ("5.1", "5.0")
    assert "5.2" not in store.good_versions("staging")  # rolled back from: not good any more
    chosen = deployer.rollback("staging", to="5.0", by="ops")
    assert chosen["status"] == "rolled_back" and service.state.read_text().strip() == "5.0"


def test_http_checks_bound_latency_match_bodies_and_retry(service: Service) -> None:
    service.state.write_text("7.0\n")
    sleeps: list[float] = []
    probe = HttpProbe(httpx.Client(), redactor=Redactor(), sleep=sleeps.append)
    url = f"http://127.0.0.1:{service.port}/healthz"
    values = {"version": "7.0", "env": "x", "previous": ""}
    ok = probe.run("smoke", "h", HttpCheckConfig(url=url, body_match='"version": "{version}"'),
                   values)
    assert ok.ok and ok.http_status == 200 and ok.latency_ms is not None
    # The version is matched literally: "7.0" must not match "710".
    other = probe.run("smoke", "h", HttpCheckConfig(url=url, body_match='"version": "{version}"'),
                      {**values, "version": "7.00"})
    assert not other.ok and "does not match" in other.detail

    service.failures_left = 2
    retried = probe.run("smoke", "h", HttpCheckConfig(url=url, retries=3, retry_delay=0.5),
                        values)
    assert retried.ok and retried.attempts == 3 and sleeps == [0.5, 0.5]

    service.delay = 0.3
    slow = probe.run("smoke", "h", HttpCheckConfig(url=url, max_latency_ms=100), values)
    assert not slow.ok and "over 100 ms" in slow.detail
    timed_out = probe.run("smoke", "h", HttpCheckConfig(url=url, timeout=0.05), values)
    assert not timed_out.ok and "no answer within 0.05s" in timed_out.detail
    service.delay = 0
    refused = probe.run("smoke", "h", HttpCheckConfig(url="http://127.0.0.1:9/x"), values)
    assert not refused.ok and "ConnectError" in refused.detail


def test_a_smoke_script_outside_the_allowed_roots_fails_its_step_without_running(
        project: Path, redis_client: redis.Redis, tmp_path: Path) -> None:
    config = DeploymentsConfig.model_validate({"environments": {"e": {
        "deploy": {"script": "/bin/true"}}}})
    deployer = deployer_for(project, redis_client)
    deployer.config = config
    record = deployer.deploy("e", "1", by="ci")
    assert record["status"] == "failed"  # no rollback configured
    assert record["steps"][0]["exit_code"] == 2
    assert "outside" in record["steps"][0]["detail"]
    assert isinstance(deployer.smoke, SmokeSuite) and isinstance(deployer.scripts, ScriptStep)


def test_a_deployment_whose_process_died_mid_run_ends_critical_for_its_followers(
        project: Path, redis_client: redis.Redis) -> None:
    deployer = deployer_for(project, redis_client)
    record = deployer.request("staging", "6.0", by="ci")
    lock = EnvironmentLock(redis_client, "staging", ttl=5)
    lease = lock.acquire(deployment=record["id"])
    record.update(status="running", fence=lease.fence, started_at=record["requested_at"])
    DeployStore(redis_client).save(record, score=1.0)
    assert deployer.check_lost(record) is None  # its lock is alive: still running
    redis_client.delete(lock.key)  # the process died; its lock ran out
    lost = deployer.check_lost(record)
    assert lost is not None and lost["status"] == "critical"
    assert "stopped mid-way" in lost["error"]
    assert DeployStore(redis_client).get(record["id"])["status"] == "critical"
    assert events_of(redis_client)[-1]["type"] == "deploy.staging.critical"
    assert deployer.execute(record["id"])["status"] == "critical"  # final: nothing runs again


def test_the_lock_is_renewed_while_held_and_a_lost_lock_is_noticed(
        redis_client: redis.Redis) -> None:
    from tests.support import wait_for

    lock = EnvironmentLock(redis_client, "renewed", ttl=1.5)
    lease = lock.acquire(deployment="long")
    started = time.monotonic()
    with lock.keep_alive(lease) as lost:
        # Past two lifetimes of the lock it is still ours: renewed every third of its TTL.
        wait_for(lambda: time.monotonic() - started > 3.2, 10, interval=0.1,
                 message="two lock lifetimes")
        assert lock.holder() is not None and lock.holder()["deployment"] == "long"
        assert not lost.is_set()
        redis_client.set(lock.key, "99 other {}")  # taken over after a stall
        wait_for(lost.is_set, 5, message="the renewal to notice the lock is gone")
    assert lock.holder() is not None and lock.holder()["fence"] == "99"
