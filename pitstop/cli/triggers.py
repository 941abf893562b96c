"""``pitstop triggers list|enable|disable|reload|test|replay``."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pitstop.bus.events import make_event
from pitstop.cli.common import Context, pass_context, print_json
from pitstop.cli.events import parse_data
from pitstop.kernel.errors import ConfigError
from pitstop.triggers.config import TriggerConfig, parse_triggers
from pitstop.triggers.decisions import Decision
from pitstop.triggers.engine import TriggerEngine
from pitstop.triggers.limits import Limits
from pitstop.triggers.replay import replay as replay_events
from pitstop.triggers.source import ConfigSource, LoadedConfig, catalog_from_text
from pitstop.triggers.state import TriggerState


def _console() -> Console:
    return Console(width=200 if not sys.stdout.isatty() else None)


def _source(ctx: Context, *, start_embedded: bool = False) -> ConfigSource:
    return ConfigSource(ctx.settings.config_dir,
                        TriggerState(ctx.redis(start_embedded=start_embedded)))


def _in_force(source: ConfigSource) -> LoadedConfig:
    """The fleet's config in Redis, else (nothing loaded yet) the files."""
    return source.active() or source.load_files()


def _config_file(source: ConfigSource, path: str) -> TriggerConfig:
    """``--config FILE`` validated against this project's workstreams.yaml."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc}", file=path) from None
    catalog = catalog_from_text("", str(source.workstreams_path), path=source.workstreams_path)
    return parse_triggers(text, file=path, catalog=catalog)


def _engine(ctx: Context, config: TriggerConfig) -> TriggerEngine:
    return TriggerEngine(ctx.bus(), None, config=config, max_hops=ctx.settings.bus.max_hops)


@click.group("triggers", invoke_without_command=True)
@click.pass_context
def triggers(click_ctx: click.Context) -> None:
    """Trigger rules (config/triggers.yaml): list, enable, disable, reload, test, replay."""
    if click_ctx.invoked_subcommand is None:
        click.echo(click_ctx.get_help())


@triggers.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def list_command(ctx: Context, as_json: bool) -> None:
    """The rules in force, whether each is enabled, and pending debounced launches."""
    source = _source(ctx)
    loaded = _in_force(source)
    rows = _engine(ctx, loaded.config).list()
    pending = Limits(source.state.client).pending_bursts()
    refused = source.state.last_error()
    if as_json:
        print_json({"version": loaded.config.version, "loaded_at": loaded.snapshot.loaded_at,
                    "loaded_by": loaded.snapshot.loaded_by, "rules": rows,
                    "pending_debounces": pending, "refused_edit": refused})
        return
    table = Table(title=f"config {loaded.config.version} ({loaded.snapshot.triggers_file}, "
                        f"loaded {loaded.snapshot.loaded_at} by {loaded.snapshot.loaded_by})")
    for column in ("rule", "on", "workstream", "state", "description"):
        table.add_column(column, overflow="fold")
    for row in rows:
        state = "enabled" if row["enabled"] else (
            f"disabled by {row['disabled_by']}" + (f": {row['disabled_reason']}"
                                                   if row.get("disabled_reason") else ""))
        table.add_row(*(Text(str(cell)) for cell in (row["id"], row["on"], row["workstream"],
                                                     state, row["description"])))
    _console().print(table)
    for burst in pending:
        click.echo(f"pending debounced launch of {burst['rule']} (due at ms {burst['due_ms']})")
    if refused:
        click.echo(f"last edit REFUSED ({refused.get('at')}, {refused.get('by')}): "
                   f"{refused.get('error')}", err=True)


@triggers.command("enable")
@click.argument("rule_id")
@pass_context
def enable_command(ctx: Context, rule_id: str) -> None:
    """Enable a rule fleet-wide (every router agrees at once)."""
    source = _source(ctx, start_embedded=True)
    _engine(ctx, _in_force(source).config).enable(rule_id)
    click.echo(f"{rule_id} enabled")


@triggers.command("disable")
@click.argument("rule_id")
@click.option("--reason", default="", help="Shown by pitstop triggers list.")
@pass_context
def disable_command(ctx: Context, rule_id: str, reason: str) -> None:
    """Disable a rule fleet-wide until enabled again."""
    source = _source(ctx, start_embedded=True)
    _engine(ctx, _in_force(source).config).disable(rule_id, reason, by="cli")
    click.echo(f"{rule_id} disabled")


@triggers.command("reload")
@pass_context
def reload_command(ctx: Context) -> None:
    """Validate config/triggers.yaml and workstreams.yaml and put them in force fleet-wide.

    An invalid edit is refused (exit 2, file:line) and the config in force stays.
    """
    source = _source(ctx, start_embedded=True)
    before = source.state.active_version()
    loaded = source.reload(by="pitstop triggers reload")
    what = "unchanged" if loaded.config.version == before else f"was {before or 'none'}"
    click.echo(f"config {loaded.config.version} in force ({len(loaded.config)} rules; {what})")


def _decision_table(decisions: list[Decision], title: str) -> Table:
    table = Table(title=title)
    for column in ("rule", "workstream", "decision", "why"):
        table.add_column(column, overflow="fold")
    for decision in decisions:
        table.add_row(*(Text(cell) for cell in (decision.rule, decision.workstream,
                                                decision.decision, decision.reason)))
    return table


@triggers.command("test")
@click.argument("event_type")
@click.argument("pairs", nargs=-1)
@click.option("--data", "data_json", help="Event data as a JSON object.")
@click.option("--config", "config_path", help="Test this triggers file instead of the one in force.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def test_command(ctx: Context, event_type: str, pairs: tuple[str, ...], data_json: str | None,
                 config_path: str | None, as_json: bool) -> None:
    """Dry run: which rules would fire for this event, and what stopped the others.

    pitstop triggers test github.push --data '{"branch": "main", "changed_files": ["schema/a"]}'
    """
    event = make_event(event_type, parse_data(data_json, pairs), source="pitstop triggers test")
    source = _source(ctx)
    config = _config_file(source, config_path) if config_path else _in_force(source).config
    decisions = _engine(ctx, config).evaluate(event)
    if as_json:
        for decision in decisions:
            print_json(decision.to_record())
        return
    if not decisions:
        click.echo(f"no rule matches {event.type} (config {config.version})")
        return
    _console().print(_decision_table(decisions, f"{event.type} against config {config.version}"))


@triggers.command("replay")
@click.option("--since", required=True, help="How far back: 1h, 7d or an ISO time.")
@click.option("--config", "config_path", help="Replay this triggers file instead of the one in "
              "force (what would a new config have launched?).")
@click.option("--pattern", default="**", show_default=True, help="Only events matching this.")
@click.option("--limit", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="At most this many events (the oldest first).")
@click.option("--json", "as_json", is_flag=True, help="Every decision as a JSON line.")
@pass_context
def replay_command(ctx: Context, since: str, config_path: str | None, pattern: str, limit: int,
                   as_json: bool) -> None:
    """What a config would have launched over past events, launching nothing."""
    source = _source(ctx)
    config = _config_file(source, config_path) if config_path else _in_force(source).config
    events = ctx.bus().replay(since=since, pattern=pattern, limit=limit)
    result = replay_events(config, events, max_hops=ctx.settings.bus.max_hops)
    if as_json:
        for decision in result.decisions:
            print_json(decision.to_record())
        return
    counts = result.counts()
    table = Table(title=f"{result.events} events since {since} against config {config.version}")
    kinds = ["would_launch", "debounced", "throttled", "deduped", "condition_false", "disabled",
             "hop_limit", "failed"]
    table.add_column("rule")
    for kind in kinds:
        table.add_column(kind.replace("_", " "), justify="right")
    for rule_id in config.rules:
        row = counts.get(rule_id, {})
        table.add_row(Text(rule_id), *(str(row.get(kind, 0)) for kind in kinds))
    _console().print(table)
    for decision in result.launched()[:50]:
        click.echo(f"would launch {decision.workstream} ({decision.rule}) on {decision.event_type}"
                   f" {decision.event_id}" + (f": {decision.reason}" if decision.reason else ""))


def probe(ctx: Context) -> str:
    """``pitstop doctor``'s line: the trigger config in force; a refused edit is a problem."""
    state = TriggerState(ctx.redis())
    active = state.active_config()
    refused = state.last_error()
    in_force = (f"config {active.version} in force (loaded {active.loaded_at} by "
                f"{active.loaded_by})" if active else "no trigger config loaded yet")
    if refused:
        raise ConfigError(f"edit refused at {refused.get('at')} ({refused.get('by')}): "
                          f"{refused.get('error')}; {in_force}")
    return in_force


COMMANDS: list[click.Command] = [triggers]
