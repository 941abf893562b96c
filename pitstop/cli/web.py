"""``pitstop web hash-password|check``, and the web view's routes for ``pitstop serve``."""

from __future__ import annotations

import sys
from typing import Any

import click
from starlette.routing import BaseRoute

from pitstop.cli.common import Context, pass_context
from pitstop.kernel.constants import WEB_CONFIG_FILE, WEB_MOUNT
from pitstop.kernel.errors import ValidationError
from pitstop.runs.store import redis_clock
from pitstop.web import WebDeps, hash_password, load_web_config, web_routes

WORKERS_TIMEOUT = 1.0
"""Seconds the fleet page's broadcast waits for workers to answer (in the background)."""


def _worker_probe(ctx: Context) -> Any:
    """Worker name -> the queues it consumes (a Celery broadcast: only the CLI imports Celery;
    it is loaded when the fleet page is first shown, not when the server starts)."""

    def probe() -> dict[str, list[str]]:
        app = ctx.celery_app(start_embedded=True)
        replies = app.control.inspect(timeout=WORKERS_TIMEOUT).active_queues() or {}
        return {str(name): sorted(str(queue.get("name")) for queue in queues or [])
                for name, queues in replies.items()}

    return probe


def web_routes_for(ctx: Context) -> list[BaseRoute]:
    """The web view under ``/ui`` for ``pitstop serve`` (``config/web.yaml`` checked first)."""
    config = load_web_config(ctx.settings.config_dir)
    client = ctx.redis(start_embedded=True)
    deps = WebDeps(client=client, bus=ctx.bus(start_embedded=True), settings=ctx.settings,
                   config=config, redactor=ctx.redactor, worker_probe=_worker_probe(ctx),
                   clock=redis_clock(client))
    return web_routes(deps)


def describe(ctx: Context) -> str:
    """One line for ``pitstop serve``'s banner: who can log in to the web view."""
    config = load_web_config(ctx.settings.config_dir)
    ways = []
    token = config.token_login and ctx.settings.server.api_token is not None
    if token:
        ways.append("the API token")
    if config.users:
        ways.append(f"{len(config.users)} user(s) of {WEB_CONFIG_FILE}")
    who = " or ".join(ways) or "nobody: set PITSTOP_API_TOKEN or add users"
    read_only = "; the token's login is read-only" if token and not config.token_can_act else ""
    return f"web view at {WEB_MOUNT}/ (login: {who}{read_only})"


@click.group("web", invoke_without_command=True)
@click.pass_context
def web(click_ctx: click.Context) -> None:
    """The web view served by `pitstop serve` under /ui: its users and config."""
    if click_ctx.invoked_subcommand is None:
        click.echo(click_ctx.get_help())


@web.command("hash-password")
def hash_password_command() -> None:
    """Print a scrypt hash of a password for config/web.yaml (users: [{name, password_hash}]).

    Reads the password from the terminal (twice), or one line from stdin when piped.
    """
    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        raise ValidationError("use a password of at least 8 characters")
    click.echo(hash_password(password))


@web.command("check")
@pass_context
def check_command(ctx: Context) -> None:
    """Validate config/web.yaml and say who can log in."""
    click.echo(describe(ctx))


COMMANDS: list[click.Command] = [web]
