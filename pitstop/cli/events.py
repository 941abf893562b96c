"""``pitstop emit``, ``pitstop watch``, ``pitstop events``."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pitstop.bus.events import Event, check_depth
from pitstop.bus.patterns import compile_pattern, normalize_type
from pitstop.bus.tail import StreamTail
from pitstop.cli.common import Context, FiniteFloatRange, pass_context, print_json
from pitstop.kernel.errors import ValidationError
from pitstop.kernel.timeparse import parse_since


def parse_data(data_json: str | None, pairs: tuple[str, ...]) -> dict[str, Any]:
    """``--data '{...}'`` merged with ``key=value`` pairs (values parsed as JSON when they parse)."""
    data: dict[str, Any] = {}
    if data_json is not None:
        try:
            loaded = json.loads(data_json)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"--data is not valid JSON: {exc}") from None
        except RecursionError:
            raise ValidationError("--data is not valid JSON: nested too deeply") from None
        if not isinstance(loaded, dict):
            raise ValidationError("--data must be a JSON object, like '{\"x\": 1}'")
        check_depth(loaded, what="--data")
        data.update(loaded)
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValidationError(f"expected key=value, got {pair!r}")
        try:
            data[key] = json.loads(raw)
        except json.JSONDecodeError:
            data[key] = raw
    return data


def _event_line(event: Event) -> str:
    data = json.dumps(event.data, separators=(",", ":"), default=str)
    return f"{event.time}  {event.type}  {event.id}  {data}"


@click.command(short_help="Publish an event: TYPE, then --data JSON or key=value pairs.")
@click.argument("event_type")
@click.argument("pairs", nargs=-1)
@click.option("--data", "data_json",
              help="Event data as a JSON object (default: {}; key=value pairs add to it).")
@click.option("--source", help="Who emits (default cli@HOST).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole event as JSON.")
@click.option("--changed-files", "changed_range", metavar="BASE..HEAD",
              help="Put the paths git says changed in BASE..HEAD in data.changed_files "
                   "(for file-change triggers; run inside the repository; default: no list).")
@pass_context
def emit(ctx: Context, event_type: str, pairs: tuple[str, ...], data_json: str | None,
         source: str | None, as_json: bool, changed_range: str | None) -> None:
    """Publish an event: pitstop emit phase.1.completed --data '{"x": 1}'  (or x=1 y=two)."""
    normalize_type(event_type)  # a bad type is refused before Redis is started or reached
    data = ctx.redactor.redact(parse_data(data_json, pairs))
    if changed_range is not None:  # triggers: file-change triggers from any CI
        from pitstop.triggers.gitchanges import changed_files, fit_paths

        paths, cut = fit_paths(changed_files(changed_range), ctx.settings.bus.max_data_bytes // 2)
        data.update(changed_files=paths, files_truncated=cut)
    event = ctx.bus(start_embedded=True).publish(event_type, data, source=source)
    if as_json:
        print_json(event.to_dict())
    else:
        click.echo(f"{event.id}  {event.type}")


@click.command(short_help="Print events live as they are published.")
@click.argument("pattern", default="**")
@click.option("--json", "as_json", is_flag=True, help="One JSON envelope per line.")
@click.option("--count", type=click.IntRange(min=1),
              help="Exit after this many events (default: no limit).")
@click.option("--timeout", type=FiniteFloatRange(min=0),
              help="Exit after this many seconds (default: none; Ctrl-C ends it).")
@pass_context
def watch(ctx: Context, pattern: str, as_json: bool, count: int | None,
          timeout: float | None) -> None:
    """Print events live as they are published ('phase.*.completed', '**.failed', …).

    Follows the durable stream: a Redis restart is ridden out (for up to
    scripts.lost_after_seconds) and what was published meanwhile is still printed.
    """
    compile_pattern(pattern)
    deadline = None if timeout is None else time.monotonic() + timeout
    tail = StreamTail(ctx.bus(), pattern, patience=ctx.settings.scripts.lost_after_seconds,
                      notify=_note)
    tail.start()
    click.echo(f"watching {pattern} (Ctrl-C to stop)", err=True)
    seen = 0
    while count is None or seen < count:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            break
        for event in tail.poll(1.0 if remaining is None else min(remaining, 1.0)):
            click.echo(event.to_json() if as_json else _event_line(event))
            seen += 1
            if count is not None and seen >= count:
                break


def _note(message: str) -> None:
    click.echo(f"pitstop: {message}", err=True)


@click.command()
@click.argument("pattern", default="**")
@click.option("--since", help="Only newer events: 10m, 2h, 1d or an ISO time (default: all).")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Show at most this many (the newest).")
@click.option("--json", "as_json", is_flag=True, help="One JSON envelope per line.")
@pass_context
def events(ctx: Context, pattern: str, since: str | None, limit: int, as_json: bool) -> None:
    """Show event history from the durable stream, oldest first."""
    compile_pattern(pattern)
    moment = None if since is None else parse_since(since, now=datetime.now(UTC), what="--since")
    found = list(ctx.bus().replay(since=moment, pattern=pattern, limit=limit, reverse=True,
                                  on_skip=lambda stream_id, exc: _note(
                                      f"skipped stream entry {stream_id}: {exc}")))
    found.reverse()
    if as_json:
        for event in found:
            click.echo(event.to_json())
        return
    if not found:
        click.echo("no events" + (f" matching {pattern}" if pattern != "**" else ""), err=True)
        return
    table = Table(show_lines=False, expand=False)
    for column in ("time", "type", "id", "source", "data"):
        table.add_column(column, overflow="fold")
    for event in found:
        # Text, not markup: event data and sources are anyone's strings ("[/]" would crash Rich).
        table.add_row(*(Text(cell) for cell in (event.time, event.type, event.id, event.source,
                                                json.dumps(event.data, default=str))))
    Console(width=200 if not sys.stdout.isatty() else None).print(table)
