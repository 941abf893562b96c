"""``pitstop run`` (the CI front door), ``pitstop runs``, ``pitstop show``, ``pitstop cancel``."""

from __future__ import annotations

import json
import os
import re
import sys
import time

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pitstop.cli.common import Context, FiniteFloatRange, pass_context, print_json
from pitstop.cli.follow import cancel_requests, exit_code_for, follow_run
from pitstop.cli.workstreams import cancel_workstream, show_workstream
from pitstop.cli.wsfollow import follow_workstream
from pitstop.kernel.constants import ENV_NAME_PATTERN, RUN_KIND_WORKSTREAM
from pitstop.kernel.errors import NothingToCancel, PitstopError, RunNotFound, ValidationError
from pitstop.runs.output import OutputEnd, OutputLine, RunOutput
from pitstop.runs.store import RUN_STATUSES, Run, RunStore
from pitstop.scripts.dispatch import ScriptDispatcher

MIN_ID_PART = 4
"""Shortest run id prefix or suffix ``show``/``cancel`` accept."""


def parse_env(pairs: tuple[str, ...], option: str = "--env") -> dict[str, str]:
    """``NAME=value`` sets a value; a bare ``NAME`` passes this shell's value through."""
    env: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not re.fullmatch(ENV_NAME_PATTERN, name):
            # Only the name part: the value may be a secret (--env 'DEPLOY-TOKEN=ghp_...').
            raise ValidationError(f"{option} expects NAME=value or NAME (letters, digits and _, "
                                  f"not starting with a digit), got the name {name!r}")
        if not sep:
            if name not in os.environ:
                raise ValidationError(f"{option} {name}: not set in this environment")
            value = os.environ[name]
        env[name] = value
    return env


@click.command(short_help="Run SCRIPT on the machines of a queue (--wait: live).")
@click.argument("script")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.option("-q", "-Q", "--queue", help="Queue of the machines that should run it (default from config).")
@click.option("--timeout", type=FiniteFloatRange(min=0.1),
              help="Seconds before the script is killed (default scripts.default_timeout, 300).")
@click.option("--queue-timeout", type=FiniteFloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Give up when no worker has taken the run from its queue this long after it "
                   "was sent: the run ends expired (exit 75 with --wait). Default from config "
                   "(scripts.queue_ttl_seconds).")
@click.option("--wait", is_flag=True, help="Stream output live; exit with the script's exit code.")
@click.option("-e", "--env", "env_pairs", multiple=True,
              help="NAME=value, or NAME to pass through. Only names the workers' "
                   "scripts.caller_env allows; values of secret-looking names (*_TOKEN …) are "
                   "redacted from output, others (GIT_SHA) are shown.")
@click.option("--secret-env", "secret_env_pairs", multiple=True, metavar="NAME=VALUE",
              help="Like --env, but the value is a secret whatever its name: sent encrypted "
                   "and redacted from the output, records and logs.")
@click.option("--cwd", help="Working directory on the worker (default: the worker's own).")
@click.option("--idempotent", is_flag=True, help="Safe to re-run if its worker dies mid-run.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the run as JSON: with --wait, after the script's output, as the last "
                   "line of stdout (pitstop run … --wait --json | tail -n 1 | jq).")
@pass_context
def run(ctx: Context, script: str, args: tuple[str, ...], queue: str | None, timeout: float | None,
        queue_timeout: float | None, wait: bool, env_pairs: tuple[str, ...],
        secret_env_pairs: tuple[str, ...], cwd: str | None, idempotent: bool,
        as_json: bool) -> None:
    """Run SCRIPT on a build machine: pitstop run scripts/build.sh --wait -- --release

    The script's own arguments go after '--': an option pitstop does not know is an error,
    never silently handed to the script."""
    env = parse_env(env_pairs)
    secrets = parse_env(secret_env_pairs, "--secret-env")
    both = sorted(set(env) & set(secrets))
    if both:
        raise ValidationError(f"{', '.join(both)}: given with both --env and --secret-env")
    env.update(secrets)
    if not wait:
        run_record = enqueue_script(ctx, script, list(args), queue=queue, timeout=timeout,
                                    env=env, cwd=cwd, idempotent=idempotent,
                                    queue_timeout=queue_timeout, secret_env=sorted(secrets))
        if as_json:
            print_json(run_record.model_dump(mode="json"))
        else:
            click.echo(run_record.run_id)
        return
    # Listen for Ctrl-C before the run exists, so no moment is left where it is lost.
    with cancel_requests() as requests:
        run_record = enqueue_script(ctx, script, list(args), queue=queue, timeout=timeout,
                                    env=env, cwd=cwd, idempotent=idempotent,
                                    queue_timeout=queue_timeout, secret_env=sorted(secrets))
        click.echo(f"pitstop: run {run_record.run_id} queued on {run_record.queue!r}", err=True)
        final = follow_run(ctx, run_record.run_id, requests)
    if as_json:
        print_json(final.model_dump(mode="json"))
    sys.exit(exit_code_for(final))


def enqueue_script(ctx: Context, script: str, args: list[str], *, queue: str | None = None,
                   timeout: float | None = None, env: dict[str, str] | None = None,
                   cwd: str | None = None, idempotent: bool = False,
                   queue_timeout: float | None = None, secret_env: list[str] | None = None
                   ) -> Run:
    """Record a queued run and send it to ``queue`` (see :class:`ScriptDispatcher`)."""
    # Enqueueing writes: like emit, it may start the embedded Redis (readers never do).
    dispatcher = ScriptDispatcher(ctx.settings, ctx.run_store(start_embedded=True), ctx.redactor,
                                  ctx.celery_app(start_embedded=True).send_task)
    return dispatcher.enqueue(script, args, queue=queue, timeout=timeout, env=env, cwd=cwd,
                              idempotent=idempotent, queue_timeout=queue_timeout,
                              secret_env=secret_env or ())


def _find_run(store: RunStore, run_id: str) -> Run:
    """A run by id, or by a prefix or suffix unique among the recent runs. Ids are long and
    begin with the time, so the random end is the part people can tell apart."""
    try:
        return store.get_run(run_id)
    except RunNotFound:
        if len(run_id) < MIN_ID_PART:
            raise
        matches = [run for run in store.list_runs(limit=1000)
                   if run.run_id.startswith(run_id) or run.run_id.endswith(run_id)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ValidationError(f"{run_id!r} matches {len(matches)} runs: give more of the id"
                                  ) from None
        raise


def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (ESC, CR, C1, bidi overrides …) become
    visible escapes (``\\x1b``), so a script name cannot rewrite the screen or the title."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
                   for char in text)


def _run_row(run: Run) -> list[str]:
    script = str(run.params.get("script", "")) if run.params else ""
    script = script or (run.workstream_id or "")  # workstreams: which one
    duration = f"{run.duration:.2f}s" if run.duration is not None else ""
    return [printable(cell) for cell in (
        run.run_id, run.kind, run.status, "" if run.exit_code is None else str(run.exit_code),
        duration, run.queue or "", run.host or "", script,
        run.created_at.isoformat(timespec="seconds"))]


@click.command()
@click.option("--status", type=click.Choice(RUN_STATUSES),
              help="Only runs in this status (default: any).")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many of the newest runs to list.")
@click.option("--workstream", "workstream_id", metavar="ID",
              help="Only runs of this workstream (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@pass_context
def runs(ctx: Context, status: str | None, limit: int, workstream_id: str | None,
         as_json: bool) -> None:
    """List recent runs, newest first."""
    found = ctx.run_store().list_runs(limit=limit, status=status, workstream_id=workstream_id)
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


@click.command(short_help="Show one run (a unique prefix or suffix of its id will do).")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run record as JSON.")
@click.option("--output", "with_output", is_flag=True, help="Also print the captured output.")
@click.option("-f", "--follow", is_flag=True,
              help="Print the run's output from the start and live until it ends, then exit "
                   "with its exit code (as run --wait would). Ctrl-C stops following only.")
@pass_context
def show(ctx: Context, run_id: str, as_json: bool, with_output: bool, follow: bool) -> None:
    """Show one run: status, timings, executions (RUN_ID, or a unique prefix or suffix of it)."""
    item = _find_run(ctx.run_store(), run_id)
    if item.kind == RUN_KIND_WORKSTREAM and (follow or not as_json):
        if follow:  # its steps and their scripts' output; never cancels it
            final = follow_workstream(ctx, None, item.run_id, requests=[])
            if as_json:
                print_json(final.model_dump(mode="json"))
            sys.exit(exit_code_for(final))
        show_workstream(ctx, item)  # its steps as a tree, and its trace
        if with_output:
            _print_output(ctx, item.run_id)
        return
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
                shown = json.dumps(value) if isinstance(value, dict) else printable(str(value))
                click.echo(f"{key:>14}: {shown}")
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
        _print_output(ctx, item.run_id)


def _print_output(ctx: Context, run_id: str) -> None:
    for entry in RunOutput(ctx.redis()).follow(run_id, block_ms=1):
        if entry is None:
            break
        if isinstance(entry, OutputLine):
            click.echo(entry.line, err=entry.stream == "stderr")


@click.command(short_help="Cancel a run (queued: at once; running: via its worker).")
@click.argument("run_id")
@click.option("--wait", is_flag=True, help="Wait until the run has ended.")
@pass_context
def cancel(ctx: Context, run_id: str, wait: bool) -> None:
    """Cancel a run (RUN_ID, or a unique prefix or suffix): a queued one at once, a running one
    through its worker, which kills the script's process group (exit code 130)."""
    store = ctx.run_store()
    item = _find_run(store, run_id)
    if item.terminal:
        raise NothingToCancel(f"run {item.run_id} already ended: {item.status}")
    if item.kind == RUN_KIND_WORKSTREAM:  # its remaining steps, and the running ones
        cancel_workstream(ctx, item, wait=wait)
        return
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

