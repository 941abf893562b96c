"""Deployments: deploy, smoke-check, roll back, approve (the pure core; no Celery).

A deployment of ``VERSION`` to ``ENV``:

1. is recorded (``pitstop:deploy:record:<id>``); an environment whose ``approval.required``
   waits ``awaiting_approval`` (``deploy.<env>.awaiting_approval``) until a listed approver,
   never the requester, approves it (:meth:`Deployer.approve`), or it expires or is rejected;
2. takes the environment's fenced lock (a concurrent deployment is refused and recorded
   ``refused``), publishes ``deploy.<env>.started``, runs the deploy command, then every smoke
   check with ``{version}`` the new version;
3. all good: the version becomes ``current`` (the old one ``previous``): ``succeeded``;
4. the deploy command or a smoke check failed: ``deploy.<env>.failed``, then the rollback
   command to the version that was current before, verified by the same smoke checks with
   ``{version}`` that version: ``rolled_back``, or ``critical`` when the rollback (or its smoke
   checks) failed or there was nothing to roll back to. With no rollback command configured
   the deployment ends ``failed``.

Each record ends in ``.state/deployments.jsonl`` (env, version, previous version, steps with
durations and exit codes, outcome, who and what triggered it).
"""

from __future__ import annotations

import getpass
import logging
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pitstop.bus.eventbus import EventBus
from pitstop.deploy.checks import ScriptStep, SmokeSuite, StepOutcome
from pitstop.deploy.config import (
    DeploymentsConfig,
    EnvironmentConfig,
    check_environment_name,
    check_version,
)
from pitstop.deploy.lock import EnvironmentLock
from pitstop.deploy.store import DeployStore
from pitstop.kernel.constants import EVENT_DEPLOY
from pitstop.kernel.errors import (
    ApprovalRefused,
    DeployError,
    DeployLocked,
    FencedOut,
    PitstopError,
    ValidationError,
)
from pitstop.kernel.ids import new_id, utc_iso
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.statelog import StateLog

__all__ = ["FINAL_STATUSES", "Deployer", "default_identity"]

log = logging.getLogger(__name__)

FINAL_STATUSES = frozenset({"succeeded", "rolled_back", "failed", "critical", "refused",
                            "rejected", "expired"})
WAITER_TTL_SECONDS = 10
"""A waiting requester refreshes its mark this often; an approver that finds none runs the
deployment itself."""
CLAIM_GRACE_SECONDS = 15.0
"""How long an approver lets a waiting requester take the approved deployment before it runs it."""


def default_identity() -> str:
    """Who is acting: ``PITSTOP_USER`` when set (CI), else the login name."""
    import os

    return os.environ.get("PITSTOP_USER") or getpass.getuser()


class Deployer:
    """Runs deployments of the environments in ``config``; one instance per process is fine."""

    def __init__(self, config: DeploymentsConfig, store: DeployStore, bus: EventBus, *,
                 scripts: ScriptStep, smoke: SmokeSuite, redactor: Redactor,
                 state_log: StateLog | None = None,
                 clock: Callable[[], datetime] | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 say: Callable[[str], None] | None = None,
                 host: str | None = None) -> None:
        self.config = config
        self.store = store
        self.bus = bus
        self.scripts = scripts
        self.smoke = smoke
        self.redactor = redactor
        self.state_log = state_log
        self.clock: Callable[[], datetime] = clock or (lambda: datetime.now(UTC))
        self.sleep = sleep
        self.say: Callable[[str], None] = say or (lambda _line: None)
        self.host = host or socket.gethostname()

    # --- starting -----------------------------------------------------------------------------

    def request(self, env: str, version: str, *, by: str, trigger: str = "cli",
                trace_id: str | None = None) -> dict[str, Any]:
        """Record a deployment of ``version`` to ``env``: ``awaiting_approval`` when the
        environment needs one (nothing runs yet), else ``ready`` for :meth:`execute`."""
        cfg = self._environment(env)
        check_version(version)
        now = self.clock()
        record = self._new_record(env, version, kind="deploy", by=by, trigger=trigger,
                                  trace_id=trace_id, now=now)
        approval = cfg.approval
        if approval.required:
            expires = now.timestamp() + approval.timeout
            record["status"] = "awaiting_approval"
            record["approval"] = {"required": True, "approvers": list(approval.approvers),
                                  "expires_at": utc_iso(datetime.fromtimestamp(expires, UTC))}
            self._save(record)
            self.store.add_pending(record["id"], expires)
            self._publish(record, "awaiting_approval")
            self._log(record)
            self.say(f"deployment {record['id']} of {version} to {env} awaits approval by one of: "
                     f"{', '.join(approval.approvers)} (pitstop deploy approve {record['id']})")
        else:
            self._save(record)
        return record

    def deploy(self, env: str, version: str, *, by: str, trigger: str = "cli",
               trace_id: str | None = None) -> dict[str, Any]:
        """Request and, unless it must wait for an approval, run the deployment here."""
        record = self.request(env, version, by=by, trigger=trigger, trace_id=trace_id)
        if record["status"] == "awaiting_approval":
            return record
        return self.execute(record["id"])

    def rollback(self, env: str, *, to: str | None = None, by: str, trigger: str = "cli",
                 trace_id: str | None = None) -> dict[str, Any]:
        """Roll ``env`` back to ``to`` (default: its previous good version) and verify it."""
        self._environment(env)
        state = self.store.state(env)
        target = to or state.previous
        if target is None:
            raise ValidationError(f"{env} has no previous good version to roll back to "
                                  "(give one: --to VERSION)")
        check_version(target)
        record = self._new_record(env, target, kind="rollback", by=by, trigger=trigger,
                                  trace_id=trace_id, now=self.clock())
        self._save(record)
        return self.execute(record["id"])

    # --- approvals ----------------------------------------------------------------------------

    def approve(self, deployment_id: str, *, by: str) -> dict[str, Any]:
        """Approve a waiting deployment (then :meth:`run_approved` runs it somewhere)."""
        record = self._awaiting(deployment_id, by=by, action="approve")
        if not self.store.remove_pending(record["id"]):
            raise ApprovalRefused(f"deployment {record['id']} was approved, rejected or expired "
                                  "meanwhile")
        record["status"] = "approved"
        record["approval"].update({"approved_by": by, "approved_at": utc_iso(self.clock())})
        self._save(record)
        self._log(record)
        self.say(f"deployment {record['id']} of {record['version']} to {record['env']} "
                 f"approved by {by}")
        return record

    def reject(self, deployment_id: str, *, by: str, reason: str = "") -> dict[str, Any]:
        record = self._awaiting(deployment_id, by=by, action="reject", self_allowed=True)
        if not self.store.remove_pending(record["id"]):
            raise ApprovalRefused(f"deployment {record['id']} was approved, rejected or expired "
                                  "meanwhile")
        record.update(status="rejected", finished_at=utc_iso(self.clock()),
                      error=f"rejected by {by}" + (f": {reason}" if reason else ""))
        record["approval"].update({"rejected_by": by})
        self._finish(record)
        return record

    def withdraw(self, deployment_id: str, *, reason: str) -> dict[str, Any]:
        """Take back a deployment still awaiting approval (its requester gave up waiting)."""
        record = self.store.get(deployment_id)
        if record["status"] == "awaiting_approval" and self.store.remove_pending(deployment_id):
            record.update(status="rejected", error=f"withdrawn: {reason}")
            self._finish(record)
        return self.store.get(deployment_id)

    def _awaiting(self, deployment_id: str, *, by: str, action: str,
                  self_allowed: bool = False) -> dict[str, Any]:
        record = self.store.get(self.store.resolve(deployment_id))
        if record["status"] != "awaiting_approval":
            raise ApprovalRefused(f"deployment {record['id']} is {record['status']}, not awaiting "
                                  "approval")
        if self._expire_if_due(record):
            raise ApprovalRefused(f"deployment {record['id']} expired at "
                                  f"{record['approval']['expires_at']} without approval")
        approvers = record["approval"].get("approvers") or []
        if by not in approvers:
            raise ApprovalRefused(f"{by} may not {action} deployments to {record['env']} "
                                  f"(approvers: {', '.join(approvers)})")
        if not self_allowed and by == record["requested_by"]:
            raise ApprovalRefused(f"{by} requested deployment {record['id']}: another approver "
                                  "must approve it")
        return record

    def _expire_if_due(self, record: dict[str, Any]) -> bool:
        expires = datetime.fromisoformat(record["approval"]["expires_at"].replace("Z", "+00:00"))
        if self.clock() < expires:
            return False
        if self.store.remove_pending(record["id"]):
            record.update(status="expired", finished_at=utc_iso(self.clock()),
                          error="no approval before it expired")
            self._finish(record)
        return True

    def wait_for_approval(self, deployment_id: str, *, poll: float = 1.0,
                          cancelled: Callable[[], bool] = lambda: False) -> dict[str, Any]:
        """Wait (marking this process as the requester that runs it) until the deployment is
        approved, then run it here; or until it is rejected or expires."""
        while True:
            self.store.set_waiter(deployment_id, WAITER_TTL_SECONDS)
            record = self.store.get(deployment_id)
            status = record["status"]
            if status == "approved":
                self.store.clear_waiter(deployment_id)
                return self.run_approved(deployment_id, grace=0)
            if status != "awaiting_approval":
                self.store.clear_waiter(deployment_id)
                return record
            if self._expire_if_due(record) or cancelled():
                self.store.clear_waiter(deployment_id)
                return self.store.get(deployment_id)
            self.sleep(poll)

    def run_approved(self, deployment_id: str, *, grace: float = CLAIM_GRACE_SECONDS,
                     poll: float = 0.5) -> dict[str, Any]:
        """Run an approved deployment unless another process claims it first: a requester
        still waiting gets ``grace`` seconds to take it; then whoever claims first runs it,
        and the other follows the record to its end."""
        deadline = time.monotonic() + grace
        while grace > 0 and self.store.has_waiter(deployment_id) and time.monotonic() < deadline:
            if self.store.get(deployment_id)["status"] != "approved":
                break
            self.sleep(poll)
        return self.execute(deployment_id)

    # --- running ------------------------------------------------------------------------------

    def execute(self, deployment_id: str, *, follow_poll: float = 1.0) -> dict[str, Any]:
        """Run a ``ready`` or ``approved`` deployment (exactly one process does: the one that
        claims it; any other follows the record until it ends)."""
        record = self.store.get(deployment_id)
        if record["status"] in FINAL_STATUSES:
            return record
        if record["status"] == "awaiting_approval":
            raise DeployError(f"deployment {deployment_id} awaits approval")
        if not self.store.claim(deployment_id, f"{self.host}/{id(self)}"):
            return self._follow(deployment_id, follow_poll)
        cfg = self._environment(record["env"])
        lock = EnvironmentLock(self.store.client, record["env"], cfg.lock_ttl)
        try:
            lease = lock.acquire(deployment=record["id"], kind=record["kind"],
                                 version=record["version"], by=record["requested_by"],
                                 since=utc_iso(self.clock()), host=self.host)
        except DeployLocked as exc:
            record.update(status="refused", error=str(exc), finished_at=utc_iso(self.clock()))
            self._finish(record, event=None)
            raise
        try:
            with lock.keep_alive(lease):
                self._run(record, cfg, lease.fence)
        finally:
            try:
                lock.release(lease)
            except PitstopError as exc:  # it expires by itself
                log.warning("could not release the deploy lock of %s: %s", record["env"], exc)
        if record.get("fenced_out"):
            raise FencedOut(record["error"])
        return record

    def _follow(self, deployment_id: str, poll: float) -> dict[str, Any]:
        """Wait for the process that claimed the deployment to finish it (or to die: see
        :meth:`check_lost`)."""
        self.say(f"deployment {deployment_id} runs elsewhere: following it")
        while True:
            record = self.store.get(deployment_id)
            if record["status"] in FINAL_STATUSES:
                return record
            lost = self.check_lost(record)
            if lost is not None:
                return lost
            self.sleep(poll)

    def check_lost(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """A ``running`` deployment whose environment lock no longer names it lost the process
        running it (the holder renews the lock until it has saved the outcome): it ends
        ``critical``, since the environment may be half-deployed. None while it is alive."""
        if record["status"] != "running":
            return None
        cfg = self._environment(record["env"])
        holder = EnvironmentLock(self.store.client, record["env"], cfg.lock_ttl).holder()
        if (holder or {}).get("deployment") == record["id"]:
            return None
        record = self.store.get(record["id"])  # it may have ended just before the lock went
        if record["status"] != "running" or not self.store.claim(f"{record['id']}:lost",
                                                                  self.host):
            return None
        record["error"] = ("the process running it stopped mid-way (its lock expired): check "
                           "the environment")
        self._commit(record, int(record.get("fence") or 0), "critical", record["version"])
        record["status"] = "critical"
        self._finish(record, event="critical")
        return record

    def _run(self, record: dict[str, Any], cfg: EnvironmentConfig, fence: int) -> None:
        env, version = record["env"], record["version"]
        state = self.store.state(env)
        current = state.current
        record.update(status="running", started_at=utc_iso(self.clock()), fence=fence,
                      host=self.host, previous_version=current)
        self._save(record)
        self._publish(record, "started")
        if record["kind"] == "rollback":
            self._run_rollback(record, cfg, target=version, bad=current)
            return
        self.say(f"deploying {version} to {env} (current: {current or 'none'})")
        values = {"version": version, "env": env, "previous": current or ""}
        deployed = self._script(record, "deploy", "deploy", cfg, values)
        smoke_ok = deployed and self._smoke(record, "smoke", cfg, values)
        if smoke_ok:
            self._commit(record, fence, "succeeded", version)
            record["status"] = "succeeded"
            self._finish(record, event="succeeded")
            return
        failed = [step["name"] for step in record["steps"] if not step["ok"]]
        record["reason"] = f"{'smoke check' if deployed else 'deploy command'} failed: " + \
            ", ".join(failed)
        self._publish(record, "failed")
        if cfg.rollback is None:
            record["status"] = "failed"
            self._finish(record, event=None)
            return
        if current is None:
            record["error"] = "no previous good version to roll back to"
            self._commit(record, fence, "critical", version)
            record["status"] = "critical"
            self._finish(record, event="critical")
            return
        self._run_rollback(record, cfg, target=current, bad=version)

    def _run_rollback(self, record: dict[str, Any], cfg: EnvironmentConfig, *, target: str,
                      bad: str | None) -> None:
        env = record["env"]
        fence = int(record["fence"])
        manual = record["kind"] == "rollback"
        if cfg.rollback is None:
            record.update(status="failed", error=f"{env} has no rollback command configured")
            self._finish(record, event=None)
            return
        self.say(f"rolling {env} back to {target}" + (f" (from {bad})" if bad else ""))
        values = {"version": target, "env": env, "previous": bad or ""}
        smoke_step = "smoke" if manual else "rollback_smoke"
        rolled = self._script(record, "rollback", "rollback", cfg, values)
        if rolled and self._smoke(record, smoke_step, cfg, values):
            self._commit(record, fence, "rolled_back", target, other=bad or "")
            record.update(status="rolled_back", rolled_back_to=target)
            self._finish(record, event="rolled_back")
            return
        failed = [s["name"] for s in record["steps"] if not s["ok"] and s["step"] in
                  ("rollback", smoke_step)]
        record["error"] = f"rollback to {target} failed: {', '.join(failed)}"
        self._commit(record, fence, "critical", record["version"])
        record["status"] = "critical"
        self._finish(record, event="critical")

    def _script(self, record: dict[str, Any], step: Any, name: str, cfg: EnvironmentConfig,
                values: dict[str, str]) -> bool:
        command = cfg.deploy if step == "deploy" else cfg.rollback
        if command is None:
            return False
        timeout = cfg.timeouts.deploy if step == "deploy" else cfg.timeouts.rollback
        self.say(f"{step}: {command.script} {' '.join(command.args)}".rstrip())
        outcome = self.scripts.run(step, name, command, values, timeout,
                                   trace_id=record.get("trace_id"))
        self._add_step(record, outcome)
        return outcome.ok

    def _smoke(self, record: dict[str, Any], step: Any, cfg: EnvironmentConfig,
               values: dict[str, str]) -> bool:
        outcomes = self.smoke.run(step, cfg.smoke, values, cfg.timeouts.smoke,
                                  trace_id=record.get("trace_id"),
                                  on_outcome=lambda outcome: self._add_step(record, outcome))
        return all(outcome.ok for outcome in outcomes)

    def _add_step(self, record: dict[str, Any], outcome: StepOutcome) -> None:
        record["steps"].append(outcome.to_dict() | {"ok": outcome.ok})
        mark = "ok  " if outcome.ok else "FAIL"
        self.say(f"  {mark} {outcome.step:<14} {outcome.name}: {outcome.detail} "
                 f"({outcome.duration:.2f}s)")
        self._save(record)

    def _commit(self, record: dict[str, Any], fence: int, mode: str, version: str, *,
                other: str = "") -> None:
        try:
            self.store.commit(record["env"], fence=fence, mode=mode, version=version,
                              other=other, now=utc_iso(self.clock()), deployment=record["id"])
        except FencedOut as exc:
            record["fenced_out"] = True
            record["error"] = str(exc)

    # --- records and events -------------------------------------------------------------------

    def _environment(self, env: str) -> EnvironmentConfig:
        check_environment_name(env)
        return self.config.environment(env)

    def _new_record(self, env: str, version: str, *, kind: str, by: str, trigger: str,
                    trace_id: str | None, now: datetime) -> dict[str, Any]:
        return {"id": new_id(int(now.timestamp() * 1000)), "env": env, "version": version,
                "kind": kind, "status": "ready", "requested_by": by, "trigger": trigger,
                "requested_at": utc_iso(now), "previous_version": self.store.state(env).current,
                "approval": {"required": False}, "steps": [], "trace_id": trace_id}

    def _save(self, record: dict[str, Any]) -> None:
        requested = datetime.fromisoformat(record["requested_at"].replace("Z", "+00:00"))
        self.store.save(self.redactor.redact(record), score=requested.timestamp())

    def _finish(self, record: dict[str, Any], event: str | None = None) -> None:
        record.setdefault("finished_at", utc_iso(self.clock()))
        if record.get("started_at"):
            began = datetime.fromisoformat(record["started_at"].replace("Z", "+00:00"))
            ended = datetime.fromisoformat(record["finished_at"].replace("Z", "+00:00"))
            record["duration"] = round((ended - began).total_seconds(), 3)
        self._save(record)
        if event is not None:
            self._publish(record, event)
        self._log(record)
        self.say(f"deployment {record['id']}: {record['status']}"
                 + (f" ({record.get('error') or record.get('reason')})"
                    if record["status"] != "succeeded" and (record.get("error")
                                                            or record.get("reason")) else ""))

    def _log(self, record: dict[str, Any]) -> None:
        if self.state_log is None:
            return
        try:
            self.state_log.append({key: record.get(key) for key in (
                "id", "env", "kind", "version", "previous_version", "status", "requested_by",
                "trigger", "requested_at", "started_at", "finished_at", "duration", "steps",
                "approval", "reason", "error", "rolled_back_to", "host")})
        except OSError as exc:
            log.warning("could not append to the deployments log: %s", exc)

    def _publish(self, record: dict[str, Any], what: str) -> None:
        data = {key: record.get(key) for key in (
            "id", "env", "version", "previous_version", "kind", "status", "requested_by",
            "trigger", "reason", "error", "rolled_back_to")}
        data = {key: value for key, value in data.items() if value is not None}
        data["failed_steps"] = [step["name"] for step in record["steps"] if not step["ok"]]
        if what in ("failed", "critical"):
            data["severity"] = "critical" if what == "critical" else "error"
        try:
            self.bus.publish(EVENT_DEPLOY.format(env=record["env"], what=what),
                             self.redactor.redact(data), trace_id=record.get("trace_id"))
        except PitstopError as exc:  # the record and the log still say it
            log.warning("could not publish deploy.%s.%s: %s", record["env"], what, exc)
