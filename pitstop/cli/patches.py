"""``pitstop patch validate`` and ``pitstop review list|show|approve|reject``.

``patch validate FILE --repo R`` sends the diff to a worker consuming the patches queue
(``pitstop worker -Q patches``) and prints the validation id; ``--wait`` waits and prints the
per-check table and the decision with its reasons; ``--local`` validates in this process (no
worker needed). ``--dry-run`` decides without landing, opening a PR or queueing a review.
Exit codes: 0 merged or PR opened (dry run: would be), 1 queued for review or rejected, 2 bad
input, 3 Redis unavailable.

``review approve`` lands the patch through its target's merge lane from this process, so it must
run where the repository is (the CLI of the machine whose worker validated it).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pitstop.cli.common import Context, FiniteFloatRange, pass_context, print_json, whoami
from pitstop.kernel.constants import PATCH_MAX_BYTES, TASK_VALIDATE_PATCH
from pitstop.kernel.errors import PitstopError, ValidationError
from pitstop.patches.config import load_patches_config
from pitstop.patches.service import build_validator
from pitstop.patches.validator import PatchOutcome, PatchRequest, check_table

__all__ = ["COMMANDS"]

_ACCEPTED = ("merged", "pr_opened", "would_merge", "would_open_pr")


def _console() -> Console:
    return Console(width=200 if not sys.stdout.isatty() else None)


def _read_patch(file: str) -> bytes:
    try:
        data = sys.stdin.buffer.read() if file == "-" else Path(file).read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read {file}: {exc.strerror or exc}") from None
    if len(data) > PATCH_MAX_BYTES:
        raise ValidationError(f"{file} is {len(data)} bytes: over the {PATCH_MAX_BYTES}-byte cap")
    return data


def print_outcome(outcome: PatchOutcome) -> None:
    click.echo(f"patch {outcome.patch_hash[:12]} for {outcome.repo}:{outcome.target} "
               f"(base {outcome.base_sha[:12]}, validation {outcome.validation_id})")
    if outcome.checks:
        table = Table()
        for column in ("check", "result", "duration", "weight", "summary"):
            table.add_column(column, overflow="fold")
        for row in check_table(outcome.checks):
            table.add_row(*(Text(cell) for cell in row))
        _console().print(table)
    score = "-" if outcome.score is None else f"{outcome.score:.1f}%"
    method = outcome.method or "-"
    click.echo(f"score {score}, applied with {method}: {outcome.result.replace('_', ' ')}")
    for refusal in outcome.refusals:
        click.echo(f"  unsafe: {refusal}")
    for conflict in outcome.conflicts:
        click.echo(f"  conflict: {conflict}")
    for reason in outcome.reasons:
        click.echo(f"  - {reason}")
    landing = outcome.landing
    if landing.get("merged"):
        click.echo(f"  merged as {landing['merged'][:12]}" + (" after re-testing on the moved "
                                                              "target" if landing.get("retested")
                                                              else ""))
    if landing.get("pr"):
        click.echo(f"  pull request: {landing['pr'].get('url')}")
    if landing.get("review_id"):
        click.echo(f"  review: pitstop review show {landing['review_id']}")


@click.group("patch")
def patch_group() -> None:
    """Validate patches: safety, worktree, checks, confidence, then merge, PR or review."""


@patch_group.command("validate")
@click.argument("file")
@click.option("--repo", required=True, help="A repository declared in config/patches.yaml "
                                            "(its name or its path).")
@click.option("--base", help="The commit the patch was made on (default: the target's head).")
@click.option("--target", help="The branch to land on (default: the repository's target).")
@click.option("--dry-run", is_flag=True, help="Decide, but do not merge, push or queue.")
@click.option("--wait", is_flag=True, help="Wait for the worker and print the outcome.")
@click.option("--local", is_flag=True, help="Validate in this process (no worker needed).")
@click.option("--title", help="Commit and pull request title.")
@click.option("--timeout", type=FiniteFloatRange(min=0, min_open=True), default=3600.0, show_default=True,
              help="Seconds --wait waits for the worker.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def validate(ctx: Context, file: str, repo: str, base: str | None, target: str | None,
             dry_run: bool, wait: bool, local: bool, title: str | None, timeout: float,
             as_json: bool) -> None:
    """Validate the unified diff FILE ('-': standard input) for a repository."""
    patch = _read_patch(file)
    repo_arg = str(Path(repo).resolve()) if Path(repo).exists() else repo
    source = f"cli:{whoami()}"
    if local:
        validator = build_validator(ctx.settings, None if dry_run else ctx.redis(start_embedded=True),
                                    bus=None if dry_run else ctx.bus(start_embedded=True),
                                    redactor=ctx.redactor)
        outcome = validator.validate(PatchRequest(repo=repo_arg, patch=patch, base=base,
                                                  target=target, dry_run=dry_run, title=title,
                                                  source=source))
        _finish(outcome, as_json)
        return
    config = load_patches_config(ctx.settings.config_dir)
    app = ctx.celery_app(start_embedded=True)
    kwargs = {"repo": repo_arg, "patch": patch.decode("utf-8", errors="surrogateescape"),
              "base": base, "target": target, "dry_run": dry_run, "title": title,
              "source": source}
    # Task events and Flower show kwargsrepr: a diff may hold anything, so they see its hash.
    shown = {**kwargs, "patch": f"<diff, {len(patch)} bytes, sha256 "
                                f"{hashlib.sha256(patch).hexdigest()[:12]}>"}
    result = app.send_task(TASK_VALIDATE_PATCH, queue=config.queue, kwargs=kwargs,
                           kwargsrepr=repr(shown), argsrepr="()")
    if not wait:
        click.echo(f"validation queued as task {result.id} on queue {config.queue!r}; outcome: "
                   "pitstop log patch_decisions")
        return
    # Said before waiting: under `pitstop up` nobody consumes this queue, and --wait was silent.
    click.echo(f"validation queued as task {result.id} on queue {config.queue!r}; waiting up to "
               f"{timeout:g}s for a worker consuming it (pitstop worker -Q {config.queue})",
               err=True)
    try:
        value: Any = result.get(timeout=timeout, propagate=False)
    except Exception as exc:  # celery's TimeoutError and backend errors
        raise PitstopError(f"no outcome within {timeout:g}s ({type(exc).__name__}): is a worker "
                           f"consuming the {config.queue!r} queue (pitstop worker -Q "
                           f"{config.queue})?") from None
    if result.state != "SUCCESS" or not isinstance(value, dict):
        raise PitstopError(f"validation failed on the worker: {value}")
    _finish(PatchOutcome.from_dict(value), as_json)


def _finish(outcome: PatchOutcome, as_json: bool) -> None:
    if as_json:
        print_json(outcome.to_dict())
    else:
        print_outcome(outcome)
    sys.exit(0 if outcome.result in _ACCEPTED else 1)


@click.group("review")
def review_group() -> None:
    """The manual review queue of patches: list, show, approve (lands it), reject."""


@review_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also decided reviews.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def review_list(ctx: Context, show_all: bool, as_json: bool) -> None:
    """Patches waiting for a decision, newest first."""
    queue = build_validator(ctx.settings, ctx.redis(), redactor=ctx.redactor).reviews()
    found = queue.list(None if show_all else "pending")
    if as_json:
        for doc in found:
            click.echo(json.dumps(doc))
        return
    if not found:
        click.echo("no patches waiting for review", err=True)
        return
    table = Table()
    for column in ("review", "status", "repo", "target", "score", "files", "why", "created"):
        table.add_column(column, overflow="fold")
    for doc in found:
        score = "-" if doc.get("score") is None else f"{doc['score']:.1f}%"
        why = (doc.get("reasons") or [""])[0]
        table.add_row(*(Text(str(cell)) for cell in (
            doc["review_id"], doc["status"], doc["repo"], doc["target"], score,
            ", ".join(doc.get("files", [])[:3]), why, doc.get("created_at", ""))))
    _console().print(table)


@review_group.command("show")
@click.argument("review_id")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def review_show(ctx: Context, review_id: str, as_json: bool) -> None:
    """One review in detail (a unique prefix or suffix of its id will do)."""
    doc = build_validator(ctx.settings, ctx.redis(), redactor=ctx.redactor).reviews().get(review_id)
    if as_json:
        print_json(doc)
        return
    for key in ("review_id", "status", "repo", "target", "base_sha", "commit", "branch", "title",
                "score", "patch_hash", "source", "created_at", "reason"):
        if doc.get(key) not in (None, ""):
            click.echo(f"{key:12s} {doc[key]}")
    click.echo("reasons:")
    for reason in doc.get("reasons", []):
        click.echo(f"  - {reason}")
    checks = doc.get("checks", [])
    if checks:
        table = Table()
        for column in ("check", "result", "duration", "weight", "summary"):
            table.add_column(column, overflow="fold")
        for check in checks:
            table.add_row(*(Text(str(cell)) for cell in (
                check["name"], check["status"], f"{check['duration']:.2f}s",
                f"{check['weight']:g}", check["summary"])))
        _console().print(table)
    for entry in doc.get("history", []):
        click.echo(f"{entry['at']} {entry['status']} by {entry['by']}"
                   + (f": {entry['reason']}" if entry.get("reason") else ""))


@review_group.command("approve")
@click.argument("review_id")
@pass_context
def review_approve(ctx: Context, review_id: str) -> None:
    """Land the patch through its target's merge lane (re-tested if the target moved)."""
    validator = build_validator(ctx.settings, ctx.redis(), bus=ctx.bus(), redactor=ctx.redactor)
    doc = validator.approve(review_id, by=whoami())
    landing = doc.get("landing", {})
    click.echo(f"review {doc['review_id']} landed on {doc['repo']}:{doc['target']} as "
               f"{str(landing.get('merged', ''))[:12]}"
               + (" (re-tested on the moved target)" if landing.get("retested") else ""))


@review_group.command("reject")
@click.argument("review_id")
@click.option("--reason", required=True, help="Why: recorded with the review and the event.")
@pass_context
def review_reject(ctx: Context, review_id: str, reason: str) -> None:
    """Reject the patch (its branch is deleted)."""
    validator = build_validator(ctx.settings, ctx.redis(), bus=ctx.bus(), redactor=ctx.redactor)
    doc = validator.reject(review_id, reason=reason, by=whoami())
    click.echo(f"review {doc['review_id']} rejected: {reason}")


COMMANDS: list[click.Command] = [patch_group, review_group]
