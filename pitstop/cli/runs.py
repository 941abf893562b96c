"""``pitstop run`` (the CI front door), ``pitstop runs``, ``pitstop show``."""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from types import FrameType

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pitstop.cli.common import Context, pass_context, print_json
from pitstop.dispatch import ScriptDispatcher
from pitstop.errors import PitstopError, RunNotFound, ValidationError
from pitstop.outage import RedisOutage
from pitstop.runoutput import OutputEnd, OutputLine, RunOutput, reap_lost_runs
from pitstop.runs import RUN_STATUSES, Run, RunStore

EXIT_LOST = 75
"""``--wait`` exit code when the worker running the script died (EX_TEMPFAIL: try again)."""
EXIT_EXPIRED = 75
"""``--wait`` exit code when no worker took the run from its queue in time (EX_TEMPFAIL too)."""
EXIT_NOT_STARTED = 2
EXIT_CANCELLED = 130


def parse_env(pairs: tuple[str, ...]) -> dict[str, str]:
    """``NAME=value`` sets a value; a bare ``NAME`` passes this shell's value through."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not name or not name.replace("_", "a").isalnum():
            # Only the name part: the value may be a secret (--env 'DEPLOY-TOKEN=ghp_...').
            raise ValidationError(f"--env expects NAME=value or NAME (letters, digits and _), "
                                  f"got the name {name!r}")
        if not sep:
            if name not in os.environ:
                raise ValidationError(f"--env {name}: not set in this environment")
            value = os.environ[name]
        env[name] = value
    return env


def exit_code_for(run: Run) -> int:
    if run.status in ("succeeded", "failed", "timed_out") and run.exit_code is not None:
        return run.exit_code
    if run.status == "cancelled":
        return EXIT_CANCELLED
    if run.status == "lost":
        return EXIT_LOST
    if run.status == "expired":
        return EXIT_EXPIRED
    return EXIT_NOT_STARTED if run.exit_code is None else run.exit_code


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("script")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("-q", "--queue", help="Queue of the machines that should run it (default from config).")
@click.option("--timeout", type=click.FloatRange(min=0.1), help="Seconds before the script is killed.")
@click.option("--queue-timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Give up when no worker has taken the run from its queue this long after it "
                   "was sent: the run ends expired (exit 75 with --wait). Default from config "
                   "(scripts.queue_ttl_seconds).")
@click.option("--wait", is_flag=True, help="Stream output live; exit with the script's exit code.")
@click.option("-e", "--env", "env_pairs", multiple=True, help="NAME=value, or NAME to pass through.")
@click.option("--cwd", help="Working directory on the worker.")
@click.option("--idempotent", is_flag=True, help="Safe to re-run if its worker dies mid-run.")
@click.option("--json", "as_json", is_flag=True, help="Print the run as JSON (after it ends with --wait).")
@pass_context
def run(ctx: Context, script: str, args: tuple[str, ...], queue: str | None, timeout: float | None,
        queue_timeout: float | None, wait: bool, env_pairs: tuple[str, ...], cwd: str | None,
        idempotent: bool, as_json: bool) -> None:
    """Run SCRIPT on a build machine: pitstop run scripts/build.sh --wait -- --release"""
    env = parse_env(env_pairs)
    if not wait:
        run_record = enqueue_script(ctx, script, list(args), queue=queue, timeout=timeout,
                                    env=env, cwd=cwd, idempotent=idempotent,
                                    queue_timeout=queue_timeout)
        if as_json:
            print_json(run_record.model_dump(mode="json"))
        else:
            click.echo(run_record.run_id)
        return
    # Listen for Ctrl-C before the run exists, so no moment is left where it is lost.
    with cancel_requests() as requests:
        run_record = enqueue_script(ctx, script, list(args), queue=queue, timeout=timeout,
                                    env=env, cwd=cwd, idempotent=idempotent,
                                    queue_timeout=queue_timeout)
        click.echo(f"pitstop: run {run_record.run_id} queued on {run_record.queue!r}", err=True)
        final = follow_run(ctx, run_record.run_id, requests)
    if as_json:
        print_json(final.model_dump(mode="json"))
    sys.exit(exit_code_for(final))


def enqueue_script(ctx: Context, script: str, args: list[str], *, queue: str | None = None,
                   timeout: float | None = None, env: dict[str, str] | None = None,
                   cwd: str | None = None, idempotent: bool = False,
                   queue_timeout: float | None = None) -> Run:
    """Record a queued run and send it to ``queue`` (see :class:`ScriptDispatcher`)."""
    # Enqueueing writes: like emit, it may start the embedded Redis (readers never do).
    dispatcher = ScriptDispatcher(ctx.settings, ctx.run_store(start_embedded=True), ctx.redactor,
                                  ctx.celery_app(start_embedded=True).send_task)
    return dispatcher.enqueue(script, args, queue=queue, timeout=timeout, env=env, cwd=cwd,
                              idempotent=idempotent, queue_timeout=queue_timeout)


CANCEL_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Ctrl-C, and what CI systems send when a job is cancelled."""


@contextmanager
def cancel_requests() -> Iterator[list[int]]:
    """Record Ctrl-C, SIGTERM and SIGHUP (a cancelled CI job) instead of dying; a second one
    raises KeyboardInterrupt. The handler only records: Redis is talked to from the loop."""
    requests: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if requests:
            raise KeyboardInterrupt
        requests.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in CANCEL_SIGNALS}
    try:
        yield requests
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


END_GRACE_SECONDS = 3.0
"""How long a follower keeps reading for the end entry once the record says the run ended (the
worker records the result, then flushes the last lines and ends the stream)."""
WORKER_STATUSES = frozenset({"succeeded", "failed", "timed_out", "cancelled"})
"""The statuses a worker ends a stream with when it knows the result."""


def follow_run(ctx: Context, run_id: str, requests: list[int] | None = None) -> Run:
    """Print the run's output as it arrives, until it ends; a signal recorded in ``requests``
    cancels the remote run (a queued one at once, a running one through its worker). A run
    still queued at its deadline is expired here (as the reaper would), so a CI step whose
    queue nobody consumes ends instead of hanging.

    A Redis outage is ridden out (output resumes after the last line printed) for up to
    ``scripts.lost_after_seconds``; only then :class:`RedisUnavailable` (exit 3)."""
    if requests is None:
        with cancel_requests() as own:
            return follow_run(ctx, run_id, own)
    output = RunOutput(ctx.redis())
    store = ctx.run_store()
    patience = ctx.settings.scripts.lost_after_seconds
    stale_after = timedelta(seconds=patience)
    outage = RedisOutage(
        patience, what=f"lost Redis while following run {run_id}",
        on_down=lambda exc: click.echo(f"pitstop: Redis unreachable, retrying… (for up to "
                                       f"{patience:g}s: {exc})", err=True),
        on_up=lambda: click.echo(f"pitstop: Redis is back; following run {run_id} on",
                                 err=True))
    cancel_sent = False
    warned_queue = False
    started = time.monotonic()
    last_check = 0.0
    ended_at: float | None = None
    end: OutputEnd | None = None
    try:
        for item in output.follow(run_id, block_ms=200, outage=outage):
            if isinstance(item, OutputLine):
                stream = sys.stderr if item.stream == "stderr" else sys.stdout
                stream.write(item.line + "\n")
                stream.flush()
            elif isinstance(item, OutputEnd):
                end = item
                break
            if requests and not cancel_sent:
                cancel_sent = True
                outage.call(lambda: output.request_cancel(run_id))
                click.echo(f"pitstop: cancelling run {run_id} (again to stop waiting)", err=True)
                current = outage.call(lambda: store.cancel_if_queued(
                    run_id, reason="cancelled before it started"))
                if current.status == "cancelled":
                    outage.call(lambda: output.close(run_id, status="cancelled", exit_code=None))
            now = time.monotonic()
            if item is not None or (now - last_check < 1.0 and not cancel_sent):
                continue
            last_check = now
            # Quiet for a while: is the run still alive?
            current = outage.call(lambda: store.get_run(run_id))
            if current.terminal:
                if current.status not in WORKER_STATUSES:
                    break  # expired or lost: no worker has lines left to send
                # The worker records the result, then sends its last lines and the end entry.
                ended_at = now if ended_at is None else ended_at
                if now - ended_at >= END_GRACE_SECONDS:
                    break
                continue
            due = outage.call(functools.partial(_due, store, current, stale_after))
            if due and outage.call(lambda: reap_lost_runs(store, output, stale_after=stale_after,
                                                          run_ids=[run_id])):
                continue  # the end entry the reaper wrote comes next
            if current.status == "queued" and not warned_queue and now - started > 10:
                warned_queue = True
                until = (f"; it expires {current.queue_timeout:g}s after it was queued"
                         if current.queue_timeout is not None else "")
                click.echo(f"pitstop: still queued on {current.queue!r}: is a worker consuming "
                           f"it? (pitstop worker -Q {current.queue}){until}", err=True)
    except KeyboardInterrupt:
        click.echo(f"pitstop: stopped waiting; run {run_id} goes on "
                   f"(pitstop show {run_id})", err=True)
        raise
    final = outage.call(lambda: store.get_run(run_id))
    if (end is not None and end.status in WORKER_STATUSES and end.status != final.status
            and final.status in ("running", "lost")):
        # The worker ended the output with the result it could not record (Redis was
        # unreachable when the script ended): that result is the run's, whatever the record.
        click.echo(f"pitstop: run {run_id} is recorded {final.status}, but its worker reported "
                   f"it {end.status} (exit code {end.exit_code}) and could not record that",
                   err=True)
        final = final.model_copy(update={"status": end.status, "exit_code": end.exit_code})
    if final.status == "timed_out":
        limit = final.params.get("timeout", "?")
        click.echo(f"pitstop: run {run_id} timed out after {limit}s; its processes were killed",
                   err=True)
    elif final.status == "expired":
        click.echo(f"pitstop: no worker took run {run_id} from queue {final.queue!r} within "
                   f"{final.queue_timeout or 0:g}s (is a worker consuming it? "
                   f"pitstop worker -Q {final.queue})", err=True)
    elif final.status in ("lost", "cancelled") and final.error:
        click.echo(f"pitstop: run {run_id} {final.status}: {final.error}", err=True)
    return final


def _due(store: RunStore, run: Run, stale_after: timedelta) -> bool:
    """Whether the run is due to be reaped: running but silent, or queued past its deadline."""
    return ((run.status == "running" and store.is_stale(run, stale_after=stale_after))
            or (run.status == "queued" and store.is_overdue(run)))


def _find_run(store: RunStore, run_id: str) -> Run:
    """A run by id, or by a prefix unique among the recent runs (ids are long)."""
    try:
        return store.get_run(run_id)
    except RunNotFound:
        if len(run_id) < 6:
            raise
        matches = [run for run in store.list_runs(limit=1000) if run.run_id.startswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ValidationError(f"{run_id!r} matches {len(matches)} runs: give more of the id"
                                  ) from None
        raise


def _run_row(run: Run) -> list[str]:
    script = str(run.params.get("script", "")) if run.params else ""
    duration = f"{run.duration:.2f}s" if run.duration is not None else ""
    return [run.run_id, run.kind, run.status, "" if run.exit_code is None else str(run.exit_code),
            duration, run.queue or "", run.host or "", script,
            run.created_at.isoformat(timespec="seconds")]


@click.command()
@click.option("--status", type=click.Choice(RUN_STATUSES), help="Only runs in this status.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def runs(ctx: Context, status: str | None, limit: int, as_json: bool) -> None:
    """List recent runs, newest first."""
    found = ctx.run_store().list_runs(limit=limit, status=status)
    if as_json:
        for item in found:
            click.echo(json.dumps(item.model_dump(mode="json")))
        return
    if not found:
        click.echo("no runs yet", err=True)
        return
    table = Table()
    for column in ("run", "kind", "status", "exit", "duration", "queue", "host", "script",
                   "created"):
        table.add_column(column, overflow="fold")
    for item in found:
        table.add_row(*(Text(cell) for cell in _run_row(item)))  # Text: script names are not markup
    Console(width=200 if not sys.stdout.isatty() else None).print(table)


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.option("--output", "with_output", is_flag=True, help="Also print the captured output.")
@click.option("-f", "--follow", is_flag=True,
              help="Print the run's output from the start and live until it ends, then exit "
                   "with its exit code (as run --wait would). Ctrl-C stops following only.")
@pass_context
def show(ctx: Context, run_id: str, as_json: bool, with_output: bool, follow: bool) -> None:
    """Show one run: status, timings, executions (RUN_ID or a unique prefix of it)."""
    item = _find_run(ctx.run_store(), run_id)
    if follow:
        # No cancel handlers: following someone's run must never cancel it.
        final = follow_run(ctx, item.run_id, requests=[])
        if as_json:
            print_json(final.model_dump(mode="json"))
        sys.exit(exit_code_for(final))
    if as_json:
        print_json(item.model_dump(mode="json"))
    else:
        for key, value in item.model_dump(mode="json").items():
            if key == "executions":
                continue
            if value not in (None, "", [], {}):
                click.echo(f"{key:>14}: {value if not isinstance(value, dict) else json.dumps(value)}")
        for number, execution in enumerate(item.executions, start=1):
            click.echo(f"  execution {number}: exit {execution.get('exit_code')} in "
                       f"{execution.get('duration', 0):.3f}s on {execution.get('host')}")
        if item.executions and not with_output:
            last = item.executions[-1]
            for name in ("stdout_tail", "stderr_tail"):
                tail = str(last.get(name) or "").rstrip("\n")
                if tail:
                    lines = tail.splitlines()[-10:]
                    click.echo(f"  {name.replace('_tail', '')} (last {len(lines)} lines):")
                    for line in lines:
                        click.echo(f"    {line}")
    if with_output:
        for entry in RunOutput(ctx.redis()).follow(run_id, block_ms=1):
            if entry is None:
                break
            if isinstance(entry, OutputLine):
                click.echo(entry.line, err=entry.stream == "stderr")


@click.command()
@click.argument("run_id")
@click.option("--wait", is_flag=True, help="Wait until the run has ended.")
@pass_context
def cancel(ctx: Context, run_id: str, wait: bool) -> None:
    """Cancel a run (RUN_ID or a unique prefix): a queued one at once, a running one through
    its worker, which kills the script's process group (exit code 130)."""
    store = ctx.run_store()
    item = _find_run(store, run_id)
    if item.terminal:
        raise NothingToCancel(f"run {item.run_id} already ended: {item.status}")
    output = RunOutput(ctx.redis())
    output.request_cancel(item.run_id)
    current = store.cancel_if_queued(item.run_id, reason="cancelled before it started")
    if current.status == "cancelled":
        output.close(item.run_id, status="cancelled", exit_code=None)
        click.echo(f"pitstop: run {item.run_id} cancelled before it started", err=True)
        return
    click.echo(f"pitstop: asked the worker on {current.host or '?'} to cancel run "
               f"{item.run_id}", err=True)
    if wait:
        current = _wait_until_ended(store, output, item.run_id,
                                    ctx.settings.scripts.lost_after_seconds + 30)
        click.echo(f"pitstop: run {item.run_id} {current.status}", err=True)


def _wait_until_ended(store: RunStore, output: RunOutput, run_id: str, patience: float) -> Run:
    """Block on the run's output stream until its end entry (checking the record while quiet)."""
    deadline = time.monotonic() + patience
    current = store.get_run(run_id)
    for entry in output.follow(run_id, block_ms=500):
        if isinstance(entry, OutputEnd) or entry is None:
            current = store.get_run(run_id)
        if current.terminal:
            return current
        if time.monotonic() > deadline:
            raise PitstopError(f"run {run_id} is still {current.status}: its worker has not "
                               "answered (it is reaped as lost once it stops heart-beating)")
    return store.get_run(run_id)


class NothingToCancel(PitstopError):
    """The run has already ended."""
