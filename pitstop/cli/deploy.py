"""``pitstop deploy ENV --version V``, ``deploy history|rollback|approve|reject|status``."""

from __future__ import annotations

import json
import socket
import sys
import time
from typing import Any

import click

from pitstop.cli.common import Context, FiniteFloatRange, pass_context
from pitstop.deploy import FINAL_STATUSES, DeployStore, configured_deployer, default_identity
from pitstop.deploy.service import Deployer
from pitstop.kernel.constants import TASK_DEPLOY
from pitstop.kernel.errors import ExitCode

OK_STATUSES = ("succeeded",)


class _DeployGroup(click.Group):
    """``pitstop deploy ENV …`` is ``pitstop deploy run ENV …``: a first argument that names no
    subcommand is an environment."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["run", *args]
        return super().parse_args(ctx, args)


def _say(line: str) -> None:
    click.echo(line, err=True)


def _output(stream: str, line: str) -> None:
    click.echo(f"  | {line}", err=True)


def _deployer(ctx: Context, *, quiet: bool = False) -> Deployer:
    return configured_deployer(ctx.settings, ctx.redis(start_embedded=True),
                               ctx.bus(start_embedded=True), ctx.redactor,
                               say=None if quiet else _say, output=None if quiet else _output)


def _finish(record: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(record, default=str))
    else:
        click.echo(_summary(record))
    status = record["status"]
    if status in OK_STATUSES or status == "awaiting_approval":
        return
    sys.exit(ExitCode.FAILURE)


def _summary(record: dict[str, Any]) -> str:
    text = (f"{record['id']}  {record['env']}  {record['kind']} {record['version']}  "
            f"{record['status']}")
    if record.get("previous_version"):
        text += f"  (previous {record['previous_version']})"
    why = record.get("error") or record.get("reason")
    if why and record["status"] not in OK_STATUSES:
        text += f": {why}"
    return text


@click.group("deploy", cls=_DeployGroup, invoke_without_command=True)
@click.pass_context
def deploy(click_ctx: click.Context) -> None:
    """Deploy versions to environments (config/deployments.yaml): smoke checks, rollback,
    approvals. `pitstop deploy ENV --version V` deploys."""
    if click_ctx.invoked_subcommand is None:
        click.echo(click_ctx.get_help())


@deploy.command("run")
@click.argument("env")
@click.option("--version", "version", required=True, help="The version to deploy (a tag, SHA …).")
@click.option("--by", help="Who requests it (default PITSTOP_USER, else the login name).")
@click.option("--trigger", help="What triggered it, for the record (default cli@<host>).")
@click.option("--queue", help="Run it on a worker consuming this queue instead of here.")
@click.option("--queue-timeout", type=FiniteFloatRange(min=1), default=600, show_default=True,
              help="With --queue: seconds a worker has to take it (then exit 75).")
@click.option("--wait/--no-wait", default=True, show_default=True,
              help="Wait for a required approval (else print the id and exit 0; "
                   "`deploy approve` then runs it).")
@click.option("--json", "as_json", is_flag=True, help="Print the deployment record as JSON.")
@pass_context
def run(ctx: Context, env: str, version: str, by: str | None, trigger: str | None,
        queue: str | None, queue_timeout: float, wait: bool, as_json: bool) -> None:
    """Deploy VERSION to ENV: deploy command, smoke checks, automatic rollback on failure.

    Exits 0 when it succeeded (or awaits approval with --no-wait), 1 when it was rolled back,
    failed, ended critical, or was refused because another deployment holds ENV.
    """
    deployer = _deployer(ctx, quiet=as_json)
    record = deployer.request(env, version, by=by or default_identity(),
                              trigger=trigger or f"cli@{socket.gethostname()}")
    if record["status"] == "awaiting_approval":
        if not wait:
            _finish(record, as_json)
            return
        _say(f"waiting for approval (until {record['approval']['expires_at']}; Ctrl-C stops "
             "waiting: the deployment stays approvable and `deploy approve` then runs it)")
        if queue is None:
            _finish(deployer.wait_for_approval(record["id"]), as_json)
            return
        record = _wait_approved(deployer, record["id"])
        if record["status"] != "approved":
            _finish(record, as_json)
            return
    if queue is None:
        _finish(deployer.execute(record["id"]), as_json)
        return
    _finish(_on_worker(ctx, deployer, record["id"], queue, queue_timeout), as_json)


def _wait_approved(deployer: Deployer, deployment_id: str) -> dict[str, Any]:
    """Wait for the approval without running it here (the worker will)."""
    while True:
        deployer.store.set_waiter(deployment_id, 10)
        record = deployer.store.get(deployment_id)
        if record["status"] != "awaiting_approval":
            return record
        time.sleep(1.0)


def _on_worker(ctx: Context, deployer: Deployer, deployment_id: str, queue: str,
               queue_timeout: float) -> dict[str, Any]:
    store = deployer.store
    app = ctx.celery_app(start_embedded=True)
    app.send_task(TASK_DEPLOY, kwargs={"deployment_id": deployment_id}, queue=queue,
                  task_id=f"deploy-{deployment_id}", expires=queue_timeout)
    _say(f"deployment {deployment_id} sent to queue {queue}")
    deadline = time.monotonic() + queue_timeout
    shown = 0
    while True:
        record = store.get(deployment_id)
        for step in record["steps"][shown:]:
            mark = "ok  " if step.get("ok") else "FAIL"
            _say(f"  {mark} {step['step']:<14} {step['name']}: {step.get('detail', '')}")
        shown = len(record["steps"])
        if record["status"] in FINAL_STATUSES:
            return record
        lost = deployer.check_lost(record)  # the worker running it died
        if lost is not None:
            return lost
        if record["status"] in ("ready", "approved") and time.monotonic() > deadline:
            click.echo(f"pitstop: error: no worker consuming queue {queue!r} took deployment "
                       f"{deployment_id} within {queue_timeout:g}s", err=True)
            sys.exit(ExitCode.TEMPFAIL)
        time.sleep(0.5)


@deploy.command("rollback")
@click.argument("env")
@click.option("--to", "to", help="The version to go back to (default: the previous good one).")
@click.option("--by", help="Who requests it (default PITSTOP_USER, else the login name).")
@click.option("--json", "as_json", is_flag=True, help="Print the deployment record as JSON.")
@pass_context
def rollback(ctx: Context, env: str, to: str | None, by: str | None, as_json: bool) -> None:
    """Roll ENV back to its previous good version (or --to VERSION), verified by its smoke
    checks. Exits 0 when the environment is back and healthy, 1 otherwise."""
    deployer = _deployer(ctx, quiet=as_json)
    record = deployer.rollback(env, to=to, by=by or default_identity(),
                               trigger=f"cli@{socket.gethostname()}")
    if as_json:
        click.echo(json.dumps(record, default=str))
    else:
        click.echo(_summary(record))
    if record["status"] != "rolled_back":
        sys.exit(ExitCode.FAILURE)


@deploy.command("approve")
@click.argument("deployment_id")
@click.option("--as", "who", help="Approve as (default PITSTOP_USER, else the login name).")
@click.option("--queue", help="Run it on a worker consuming this queue (when no requester "
              "waits for it).")
@click.option("--queue-timeout", type=FiniteFloatRange(min=1), default=600, show_default=True,
              help="With --queue: seconds a worker has to take it (then exit 75).")
@click.option("--json", "as_json", is_flag=True, help="Print the deployment record as JSON.")
@pass_context
def approve(ctx: Context, deployment_id: str, who: str | None, queue: str | None,
            queue_timeout: float, as_json: bool) -> None:
    """Approve deployment ID (a unique prefix or suffix will do). A requester still waiting
    runs it; else it runs here (or on a worker of --queue). Exits as the deployment ends."""
    deployer = _deployer(ctx, quiet=as_json)
    record = deployer.approve(deployment_id, by=who or default_identity())
    if queue is not None and not deployer.store.has_waiter(record["id"]):
        _finish(_on_worker(ctx, deployer, record["id"], queue, queue_timeout), as_json)
        return
    _finish(deployer.run_approved(record["id"]), as_json)


@deploy.command("reject")
@click.argument("deployment_id")
@click.option("--as", "who", help="Reject as (default PITSTOP_USER, else the login name).")
@click.option("--reason", default="", help="Why (recorded).")
@pass_context
def reject(ctx: Context, deployment_id: str, who: str | None, reason: str) -> None:
    """Reject deployment ID, awaiting approval: it never runs."""
    record = _deployer(ctx).reject(deployment_id, by=who or default_identity(), reason=reason)
    click.echo(_summary(record))


@deploy.command("history")
@click.argument("env")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON record per line.")
@pass_context
def history(ctx: Context, env: str, limit: int, as_json: bool) -> None:
    """ENV's deployments, newest first: outcome, versions, who, and each step."""
    records = DeployStore(ctx.redis()).history(env, limit=limit)
    if as_json:
        for record in records:
            click.echo(json.dumps(record, default=str))
        return
    if not records:
        click.echo(f"no deployments to {env} yet")
        return
    for record in records:
        took = f" in {record['duration']:.1f}s" if record.get("duration") is not None else ""
        click.echo(f"{record['requested_at']}  {_summary(record)}  by {record['requested_by']}"
                   f" ({record['trigger']}){took}")
        for step in record.get("steps", []):
            code = step.get("exit_code", step.get("http_status", ""))
            click.echo(f"    {'ok  ' if step.get('ok') else 'FAIL'} {step['step']:<14} "
                       f"{step['name']:<20} {code!s:>4} {step.get('duration', 0):7.2f}s  "
                       f"{step.get('detail', '')}")


@deploy.command("status")
@pass_context
def status(ctx: Context) -> None:
    """Current and previous good version of each environment, and approvals waiting."""
    store = DeployStore(ctx.redis())
    for env in store.environments():
        state = store.state(env)
        click.echo(f"{env:<16} current {state.current or '-':<20} previous "
                   f"{state.previous or '-':<20} {state.get('status') or 'never deployed'}")
    for deployment_id, expires in store.pending():
        record = store.get(deployment_id)
        click.echo(f"awaiting approval: {deployment_id}  {record['env']} {record['version']} "
                   f"by {record['requested_by']} (expires "
                   f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(expires))})")


COMMANDS: list[click.Command] = [deploy]
