"""``pitstop smoke``: the built-in smoke test of a pitstop fleet (see :mod:`pitstop.fleet.smoke`)."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import click

from pitstop.cli.common import Context, FiniteFloatRange, pass_context
from pitstop.fleet.smoke import run_smoke
from pitstop.kernel.constants import CANARY_TASK, DEFAULT_QUEUE, SMOKE_STUCK_AFTER_SECONDS
from pitstop.kernel.errors import ExitCode

if TYPE_CHECKING:
    from celery import Celery


class CeleryProbe:
    """The Celery half of the smoke test: who answers with which queues, and the canary."""

    def __init__(self, app: Celery) -> None:
        self.app = app

    def queues_by_worker(self, timeout: float) -> dict[str, list[str]]:
        replies: dict[str, Any] = self.app.control.inspect(timeout=timeout).active_queues() or {}
        return {name: [str(queue.get("name")) for queue in queues or []]
                for name, queues in replies.items()}

    def canary(self, queue: str, nonce: str, timeout: float) -> dict[str, Any]:
        from celery.exceptions import TimeoutError as CeleryTimeout

        result = self.app.send_task(CANARY_TASK, args=[nonce], queue=queue, expires=timeout)
        try:
            value: dict[str, Any] = result.get(timeout=timeout, propagate=True)
        except CeleryTimeout:
            raise TimeoutError(f"queue {queue}") from None
        finally:
            result.forget()
        return value


@click.command("smoke", short_help="Smoke-test the fleet: broker, workers, canary, Beat, "
               "consumer groups, trigger config.")
@click.option("-Q", "--queue", "queues", multiple=True,
              help="A queue that must have a worker (repeat; default celery.queues and "
                   "'default').")
@click.option("--timeout", type=FiniteFloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds workers have to answer (the canary gets five times this).")
@click.option("--stuck-after", type=FiniteFloatRange(min=0.1),
              default=float(SMOKE_STUCK_AFTER_SECONDS), show_default=True,
              help="Seconds after which an undelivered or unacknowledged event is stuck.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as one JSON array.")
@pass_context
def smoke(ctx: Context, queues: tuple[str, ...], timeout: float, stuck_after: float,
          as_json: bool) -> None:
    """Smoke-test this pitstop fleet: broker reachable and authenticated, a worker answering
    for every required queue, a canary task round trip through each, Beat's lock fresh, the
    router's and alert manager's consumer groups without a stuck backlog, and the last good
    trigger config in force.

    Exits 0 when all pass, 1 naming each failure, 3 when Redis cannot be reached or refuses
    the password. Never starts the embedded Redis.
    """
    settings = ctx.settings
    required = list(dict.fromkeys(queues or [*settings.celery.queues, DEFAULT_QUEUE]))
    client = ctx.redis(start_embedded=False)
    report = run_smoke(client, CeleryProbe(ctx.celery_app()), queues=required,
                       config_dir=settings.config_dir,
                       beat_lock_ttl=settings.celery.beat_lock_ttl, timeout=timeout,
                       stuck_after=stuck_after)
    if as_json:
        click.echo(json.dumps(report.to_list()))
    else:
        for check in report.checks:
            mark = "ok  " if check.ok else "FAIL"
            if check.skipped:
                mark = "skip" if check.ok else "FAIL"
            click.echo(f"{mark} {check.name:<9} {check.detail}")
    if report.ok:
        return
    if not as_json:
        click.echo(f"\nsmoke test failed: {', '.join(c.name for c in report.failed)}", err=True)
    broker = report.checks[0]
    sys.exit(ExitCode.REDIS_UNAVAILABLE if not broker.ok else ExitCode.FAILURE)


COMMANDS: list[click.Command] = [smoke]
