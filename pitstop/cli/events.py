"""``pitstop emit``, ``pitstop watch``, ``pitstop events``."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pitstop.bus.events import Event, check_depth
from pitstop.bus.patterns import compile_pattern
from pitstop.cli.common import Context, pass_context, print_json
from pitstop.kernel.errors import ValidationError


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


@click.command()
@click.argument("event_type")
@click.argument("pairs", nargs=-1)
@click.option("--data", "data_json", help="Event data as a JSON object.")
@click.option("--source", help="Who emits (default cli@HOST).")
@click.option("--json", "as_json", is_flag=True, help="Print the whole event as JSON.")
@pass_context
def emit(ctx: Context, event_type: str, pairs: tuple[str, ...], data_json: str | None,
         source: str | None, as_json: bool) -> None:
    """Publish an event: pitstop emit phase.1.completed --data '{"x": 1}'  (or x=1 y=two)."""
    data = ctx.redactor.redact(parse_data(data_json, pairs))
    event = ctx.bus(start_embedded=True).publish(event_type, data, source=source)
    if as_json:
        print_json(event.to_dict())
    else:
        click.echo(f"{event.id}  {event.type}")


@click.command()
@click.argument("pattern", default="**")
@click.option("--json", "as_json", is_flag=True, help="One JSON envelope per line.")
@click.option("--count", type=click.IntRange(min=1), help="Exit after this many events.")
@click.option("--timeout", type=click.FloatRange(min=0), help="Exit after this many seconds.")
@pass_context
def watch(ctx: Context, pattern: str, as_json: bool, count: int | None,
          timeout: float | None) -> None:
    """Print events live as they are published ('phase.*.completed', '**.failed', …)."""
    compile_pattern(pattern)
    deadline = None if timeout is None else time.monotonic() + timeout
    seen = 0
    with ctx.bus().subscribe(pattern) as subscription:
        click.echo(f"watching {pattern} (Ctrl-C to stop)", err=True)
        while count is None or seen < count:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            event = subscription.get(timeout=min(remaining, 1.0) if remaining else 1.0)
            if event is None:
                continue
            seen += 1
            if as_json:
                click.echo(event.to_json())
            else:
                click.echo(_event_line(event))


@click.command()
@click.argument("pattern", default="**")
@click.option("--since", help="Only newer events: 10m, 2h, 1d or an ISO time.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="Show at most this many (the newest).")
@click.option("--json", "as_json", is_flag=True, help="One JSON envelope per line.")
@pass_context
def events(ctx: Context, pattern: str, since: str | None, limit: int, as_json: bool) -> None:
    """Show event history from the durable stream, oldest first."""
    compile_pattern(pattern)
    found = list(ctx.bus().replay(since=since, pattern=pattern, limit=limit, reverse=True))
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
