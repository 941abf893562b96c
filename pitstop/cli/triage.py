"""``pitstop triage FILE… [--commit SHA] [--record] [--json]`` and ``pitstop triage flaky``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from pitstop.cli.common import Context, pass_context, print_json
from pitstop.kernel.constants import LOG_TEST_TRIAGE
from pitstop.triage import (
    BatchReport,
    FlakyHistory,
    TriageService,
    load_triage_config,
)

EVIDENCE_WIDTH = 90


def _now() -> datetime:
    return datetime.now(UTC)


class _TriageGroup(click.Group):
    """``pitstop triage FILE…`` runs the ``files`` subcommand; ``pitstop triage flaky`` lists
    flaky tests (a file named ``flaky`` can be given as ``./flaky``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["files", *args]
        elif not args:
            args = ["files"]
        return super().parse_args(ctx, args)


@click.group("triage", cls=_TriageGroup)
def triage() -> None:
    """Classify test failures in JUnit XML, raw test output or whole CI logs.

    \b
    pitstop triage report.xml ci.log          table of groups, most significant first
    pitstop triage report.xml --json          one JSON object (groups in the same order)
    pitstop triage report.xml --record --commit $SHA
                                              + flaky history and triage.* events
    pitstop triage flaky                      tests seen passing and failing on one commit
    """


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _print_table(report: BatchReport) -> None:
    summary = report.summary()
    if not report.groups:
        click.echo(f"no failures found ({summary['passed']} passed)")
        return
    click.echo(f"{'CATEGORY':<17} {'COUNT':>5}  {'ACTION':<15} EVIDENCE")
    for group in report.groups:
        evidence = group.evidence[0] if group.evidence else group.error
        click.echo(f"{group.category!s:<17} {group.count:>5}  {group.action!s:<15} "
                   f"{_shorten(evidence, EVIDENCE_WIDTH)}")
        where = f" ({group.location})" if group.location else ""
        tests = group.tests
        if tests:
            more = f" and {len(tests) - 1} more" if len(tests) > 1 else ""
            click.echo(f"{'':<25}{_shorten(tests[0], 70)}{more}{where}")
    share = round(100 * summary["auto_fixable_share"])
    click.echo(f"{summary['failures']} failures in {summary['groups']} groups; "
               f"{share}% auto-fixable; {summary['passed']} passed")


@triage.command("files")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--commit", metavar="SHA", envvar=["PITSTOP_COMMIT", "GITHUB_SHA", "CI_COMMIT_SHA"],
              help="The commit the results are for (default: $GITHUB_SHA, $CI_COMMIT_SHA).")
@click.option("--record", is_flag=True,
              help="Record flaky history (needs --commit) and publish triage.* events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of the table.")
@pass_context
def files_command(ctx: Context, files: tuple[Path, ...], commit: str | None, record: bool,
                  as_json: bool) -> None:
    """Triage FILE… (JUnit XML, test output, CI logs): groups, most significant first."""
    settings = ctx.settings
    config = load_triage_config(settings.config_dir)
    bus = history = None
    if record:
        client = ctx.redis(start_embedded=True)
        bus = ctx.bus(start_embedded=True)
        history = FlakyHistory(client, window=config.flaky.window, ttl_days=config.flaky.ttl_days)
        if not commit:
            click.echo("pitstop: no --commit (nor $GITHUB_SHA): flaky history is not recorded",
                       err=True)
    service = TriageService(config, clock=_now, log=ctx.state_log(LOG_TEST_TRIAGE), bus=bus,
                            history=history, redactor=ctx.redactor)
    outcome = service.triage(service.parse_paths(files), commit=commit, record=record)
    if as_json:
        print_json(outcome.report.to_dict())
        return
    _print_table(outcome.report)
    if outcome.newly_flaky:
        click.echo(f"flaky on this commit: {', '.join(outcome.newly_flaky[:10])}")
    if outcome.events:
        click.echo(f"published {len(outcome.events)} events (batch {outcome.batch_id})")


@triage.command("flaky")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="JSON lines, one test per line.")
@pass_context
def flaky_command(ctx: Context, limit: int, as_json: bool) -> None:
    """Tests that passed and failed on one commit, with their flip rate and evidence."""
    config = load_triage_config(ctx.settings.config_dir)
    history = FlakyHistory(ctx.redis(), window=config.flaky.window,
                           ttl_days=config.flaky.ttl_days)
    found = history.flaky_tests(limit)
    if as_json:
        for stats in found:
            print_json(stats.to_dict())
        return
    if not found:
        click.echo("no flaky tests in the recorded history")
    else:
        click.echo(f"{'TEST':<60} {'RUNS':>4} {'FAIL':>4} {'FLIP RATE':>9}  FLAKY ON")
        for stats in found:
            commits: list[Any] = [commit[:12] for commit in stats.flaky_commits[:3]]
            click.echo(f"{_shorten(stats.test_id, 60):<60} {stats.runs:>4} {stats.failed:>4} "
                       f"{stats.flip_rate:>9.2f}  {', '.join(commits)}")
    if config.known_flaky:
        click.echo(f"known flaky (config/triage.yaml): {', '.join(config.known_flaky)}",
                   file=sys.stdout)


COMMANDS: list[click.Command] = [triage]
