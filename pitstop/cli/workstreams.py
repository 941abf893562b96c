"""``pitstop launch`` and ``pitstop workstreams``, and how ``show`` and ``cancel`` treat a
workstream run: its steps drawn as a tree with its trace, a cancel through the orchestrator
(following one is :mod:`pitstop.cli.wsfollow`)."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from pitstop.cli.common import Context, pass_context, print_json
from pitstop.cli.follow import cancel_requests, exit_code_for
from pitstop.cli.wsfollow import POLL_SECONDS, follow_workstream
from pitstop.kernel.constants import WORKSTREAMS_FILE
from pitstop.kernel.errors import NothingToCancel, PitstopError, ValidationError
from pitstop.runs.store import Run
from pitstop.workstreams import Orchestrator, StepState, WorkstreamCatalog, orchestrator_from
from pitstop.workstreams.kinds import child_run_id
from pitstop.workstreams.repair import repair_run
from pitstop.workstreams.spec import KIND_RUN, Stage, WorkstreamSpec

EXIT_SKIPPED = 75
"""``launch --wait`` when the concurrency policy skipped the launch (EX_TEMPFAIL: try later)."""
TRACE_EVENTS_LIMIT = 200


def orchestrator(ctx: Context) -> Orchestrator:
    """An orchestrator on this project's Redis (launching writes: it may start the embedded one)."""
    return orchestrator_from(ctx.settings, ctx.redis(start_embedded=True),
                             ctx.bus(start_embedded=True), ctx.run_store(start_embedded=True),
                             ctx.celery_app(start_embedded=True).send_task,
                             redactor=ctx.redactor)


def parse_params(pairs: tuple[str, ...]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ValidationError(f"--param expects NAME=VALUE, got {pair!r}")
        params[name.strip()] = value
    return params


@click.command()
@click.argument("workstream")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A parameter of the workstream (repeatable); overrides its default.")
@click.option("--wait", is_flag=True,
              help="Follow the run (its steps and their scripts' output) and exit like "
                   "run --wait: 0 when it succeeded, the failing script's exit code, 124 when "
                   "it timed out, 130 when cancelled (Ctrl-C cancels it).")
@click.option("--json", "as_json", is_flag=True, help="Print the launch (and with --wait the "
              "final run) as JSON.")
@pass_context
def launch(ctx: Context, workstream: str, params: tuple[str, ...], wait: bool,
           as_json: bool) -> None:
    """Launch WORKSTREAM (config/workstreams.yaml): pitstop launch WS-BUILD -p branch=main --wait"""
    parsed = parse_params(params)
    driver = orchestrator(ctx)
    with cancel_requests() as requests:
        result = driver.launch_workstream(workstream, params=parsed)
        if as_json and not wait:
            print_json({"run_id": result.run_id, "status": result.status,
                        "reason": result.reason})
        elif result.run_id:
            click.echo(result.run_id)
        _say(f"{workstream}: {result.status}" + (f" ({result.reason})" if result.reason else ""))
        if result.run_id is None:
            sys.exit(EXIT_SKIPPED if wait else 0)
        if not wait:
            return
        final = follow_workstream(ctx, driver, result.run_id, requests)
    if as_json:
        print_json(final.model_dump(mode="json", exclude={"orchestration"}))
    sys.exit(exit_code_for(final))


@click.group("workstreams", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def workstreams_command(click_ctx: click.Context, as_json: bool) -> None:
    """List the workstreams of config/workstreams.yaml (and which cannot run yet, and why)."""
    # `workstreams list` too: `triggers list` and `alerts …` teach users that form.
    if click_ctx.invoked_subcommand is None:
        click_ctx.invoke(list_command, as_json=as_json)


@workstreams_command.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def list_command(ctx: Context, as_json: bool) -> None:
    """List the workstreams of config/workstreams.yaml (and which cannot run yet, and why)."""
    catalog = WorkstreamCatalog.load(ctx.settings.config_dir / WORKSTREAMS_FILE)
    rows: list[dict[str, Any]] = []
    for ws_id in catalog.ids():
        ws = catalog.get(ws_id)
        rows.append({"id": ws_id, "available": ws.available, "reason": ws.unavailable_reason,
                     "steps": ws.spec.step_ids(), "policy": ws.spec.policy,
                     "params": ws.spec.params, "description": ws.description,
                     "source": ws.source})
    if as_json:
        for row in rows:
            print_json(row)
        return
    click.echo(f"{catalog.source} (version {catalog.version})", err=True)
    table = Table()
    for column in ("workstream", "steps", "concurrency", "params", "status"):
        table.add_column(column, overflow="fold")
    for row in rows:
        status = "ready" if row["available"] else f"unavailable: {row['reason']}"
        params = " ".join(f"{k}={'' if v is None else v}" for k, v in row["params"].items())
        table.add_row(Text(row["id"]), Text(" ".join(row["steps"])), Text(row["policy"]),
                      Text(params), Text(status))
    _console().print(table)


COMMANDS: list[click.Command] = [launch, workstreams_command]


def _say(message: str) -> None:
    click.echo(f"pitstop: {message}", err=True)


def _console() -> Console:
    return Console(width=200 if not sys.stdout.isatty() else None)


# --- show, cancel, runs ---------------------------------------------------------------------------

def show_workstream(ctx: Context, run: Run) -> None:
    """Print a workstream run: what launched it, its steps as a tree, and its trace."""
    console = _console()
    console.print(Text(_headline(run)))
    for line in _cause(run):
        console.print(Text(f"  {line}"))
    if not run.orchestration.get("spec"):
        return
    spec = WorkstreamSpec.from_dict(run.orchestration["spec"])
    tree = Tree(Text("steps"), guide_style="dim")
    _add_stages(tree, spec.stages, run)
    if spec.on_failure:
        branch = tree.add(Text("on_failure"))
        _add_stages(branch, spec.on_failure, run)
    console.print(tree)
    trace = _trace(ctx, run)
    if trace:
        console.print(Text(f"trace {run.trace_id}:"))
        for line in trace:
            console.print(Text(f"  {line}"))


def _headline(run: Run) -> str:
    took = _duration(run.started_at, run.finished_at)
    parts = [f"{run.workstream_id} run {run.run_id}", run.status]
    if took:
        parts.append(took)
    if run.exit_code is not None:
        parts.append(f"exit {run.exit_code}")
    head = " · ".join(parts)
    return head + (f"\n  error: {run.error}" if run.error else "")


def _cause(run: Run) -> list[str]:
    orchestration = run.orchestration
    lines = []
    trigger = orchestration.get("trigger_id")
    event = run.event or {}
    parent = orchestration.get("parent")
    if parent:
        lines.append(f"sub-workstream of run {parent['run_id']} (step {parent['step']}, "
                     f"attempt {parent['attempt']})")
    if event.get("id"):
        lines.append(f"launched{f' by trigger {trigger}' if trigger else ''} on event "
                     f"{event.get('type')} {event.get('id')} (hop {event.get('hops', 0)})")
    elif not parent:
        lines.append("launched by hand" + (f" (trigger {trigger})" if trigger else ""))
    if run.params:
        lines.append("params: " + " ".join(f"{k}={v}" for k, v in run.params.items()))
    key = orchestration.get("concurrency_key")
    if key is not None:
        lines.append(f"concurrency: {orchestration.get('policy')} on key {key!r}")
    created = run.created_at.isoformat(timespec="seconds")
    lines.append(f"created {created}" + (f", config {orchestration['config_version']}"
                                         if orchestration.get("config_version") else ""))
    return lines


def _add_stages(tree: Tree, stages: tuple[Stage, ...], run: Run) -> None:
    for stage in stages:
        if len(stage) == 1 and not _is_group(run, stage[0].id):
            tree.add(_step_text(stage[0].id, stage[0].kind, stage[0].retries, run))
            continue
        group = tree.add(Text("parallel"))
        for step in stage:
            group.add(_step_text(step.id, step.kind, step.retries, run))


def _is_group(run: Run, step_id: str) -> bool:
    for stage in [*run.orchestration["spec"].get("stages", []),
                  *run.orchestration["spec"].get("on_failure", [])]:
        if any(step["id"] == step_id for step in stage):
            return len(stage) > 1
    return False


def _step_text(step_id: str, kind: str, retries: int, run: Run) -> Text:
    state = StepState.model_validate(run.steps.get(step_id) or {})
    status: str = state.status
    if status == "running" and state.stop_requested:
        status = "stopping"
    parts = [f"{step_id:<16} {status:<10}"]
    took = _duration(state.started_at, state.finished_at)
    if took:
        parts.append(f"{took:>8}")
    parts.append(f"{kind}")
    if state.attempt:
        parts.append(f"attempt {state.attempt}/{retries + 1}")
    if state.queue:
        parts.append(f"on {state.queue}")
    if state.host:
        parts.append(f"at {state.host}")
    outputs = state.outputs
    if outputs.get("exit_code") is not None:
        parts.append(f"exit {outputs['exit_code']}")
    if kind == KIND_RUN and state.attempt and state.status not in ("pending", "skipped", "queued"):
        parts.append(f"script run {child_run_id(run.run_id, step_id, state.attempt)}")
    elif state.child_run_id or outputs.get("run_id"):
        parts.append(f"run {state.child_run_id or outputs.get('run_id')}")
    if state.message and status not in ("succeeded",):
        parts.append(f"- {state.message}")
    if state.history and len(state.history) > (0 if state.status == "queued" else 1):
        earlier = [f"#{h.get('attempt')} {h.get('status')}" for h in state.history
                   if h.get("attempt") != state.attempt]
        if earlier:
            parts.append(f"(earlier: {', '.join(earlier)})")
    return Text("  ".join(parts))


def _duration(start: datetime | None, end: datetime | None) -> str:
    if start is None:
        return ""
    finish = end or datetime.now(UTC)
    seconds = (finish - start).total_seconds()
    return f"{seconds:.2f}s" + ("" if end else "…")


def _trace(ctx: Context, run: Run) -> list[str]:
    """The events and workstream runs of the run's trace, in time order."""
    trace_id = run.trace_id
    if not trace_id:
        return []
    entries: list[tuple[str, str]] = []
    runs = [r for r in ctx.run_store().list_runs(limit=2000) if r.trace_id == trace_id
            and r.kind == run.kind]
    for other in runs:
        mark = " <- this run" if other.run_id == run.run_id else ""
        entries.append((other.created_at.isoformat(), f"run   {other.workstream_id} "
                        f"{other.run_id} {other.status}{mark}"))
    since = min([r.created_at for r in runs] + [run.created_at])
    try:
        events = list(ctx.bus().replay(since=since - timedelta(minutes=10)))
    except PitstopError:
        events = []
    count = tools = 0
    for event in events:
        if event.trace_id != trace_id or count >= TRACE_EVENTS_LIMIT:
            continue
        if event.type.startswith("tool."):  # every script's start and end: see its step
            tools += 1
            continue
        count += 1
        entries.append((event.time, f"event {event.type} {event.id} (hop {event.hops})"))
    entries.sort(key=lambda item: item[0].replace("Z", "+00:00"))
    shown = [f"{when[11:23]}  {what}" for when, what in entries]
    if tools:
        shown.append(f"({tools} tool.* events of the steps' scripts not shown: pitstop events "
                     f"'tool.*')")
    return shown


def cancel_workstream(ctx: Context, run: Run, *, wait: bool) -> None:
    """``pitstop cancel`` of a workstream run: steps not started never will, running ones are
    stopped; with ``wait``, until no step runs any more."""
    driver = orchestrator(ctx)
    try:
        driver.cancel_run(run.run_id, reason="cancelled from the command line")
    except NothingToCancel:
        raise NothingToCancel(f"run {run.run_id} already ended: {run.status}") from None
    _say(f"run {run.run_id} cancelled")
    if not wait:
        return
    deadline = time.monotonic() + ctx.settings.scripts.lost_after_seconds + 30
    while time.monotonic() < deadline:
        current = ctx.run_store().get_run(run.run_id)
        busy = [step for step, raw in current.steps.items()
                if raw.get("status") in ("running", "waiting")]
        if not busy:
            _say(f"run {run.run_id} {current.status}: no step runs any more")
            return
        repair_run(driver, run.run_id)
        time.sleep(POLL_SECONDS)
    raise PitstopError(f"run {run.run_id} is cancelled but steps still run; their workers have "
                       "not answered (the reaper ends them once they stop heart-beating)")

