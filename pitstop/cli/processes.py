"""Long-running processes: ``up``, ``worker``, ``beat``, ``flower``, ``serve``, ``redis``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import click

from pitstop.cli.common import Context, pass_context
from pitstop.connection import describe_url, embedded_server, resolve_redis_url
from pitstop.errors import ConfigError, RedisUnavailable
from pitstop.proc import pid_alive
from pitstop.redis_server import RedisServer, ServerInfo
from pitstop.settings import Settings, basic_auth_problem


def _child_env(ctx: Context, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PITSTOP_REDIS_URL"] = redis_url
    env["PITSTOP_STATE_DIR"] = str(ctx.settings.state_dir.resolve())
    env["PITSTOP_CONFIG_DIR"] = str(ctx.settings.config_dir.resolve())
    return env


def _terminate(children: list[tuple[str, subprocess.Popen[bytes]]], timeout: float = 15) -> None:
    for _, child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)  # Celery: warm shutdown
    deadline = time.monotonic() + timeout
    for name, child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            click.echo(f"pitstop: {name} did not stop in {timeout:g}s; killing it", err=True)
            child.kill()
            child.wait()


@click.command()
@click.option("-Q", "--queues", help="Comma-separated queues for the worker (default from config).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Worker processes.")
@click.option("--serve/--no-serve", "with_server", default=False,
              help="Also run the webhook / events HTTP endpoint.")
@click.option("--flower/--no-flower", "with_flower", default=False,
              help="Also run Flower (needs flower.basic_auth / PITSTOP_FLOWER_BASIC_AUTH).")
@pass_context
def up(ctx: Context, queues: str | None, concurrency: int | None, with_server: bool,
       with_flower: bool) -> None:
    """Run Redis (embedded unless PITSTOP_REDIS_URL), a worker and Beat until Ctrl-C."""
    settings = ctx.settings
    if with_flower:
        flower_basic_auth(settings)  # refuse before anything starts
    stop = {"now": False}

    def request_stop(signum: int, frame: object) -> None:
        stop["now"] = True

    # Before anything starts, so an early Ctrl-C still stops what was started.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    embedded: EmbeddedRedisKeeper | None = None
    if settings.redis.url is None:
        embedded = EmbeddedRedisKeeper(settings.redis_dir)
        redis_url = embedded.start()
    else:
        redis_url = resolve_redis_url(settings)
    children: list[tuple[str, subprocess.Popen[bytes]]] = []
    exit_code = 0
    try:
        ctx.redis()  # fail early, clearly, if Redis is unreachable
        env = _child_env(ctx, redis_url)
        # Children get their own process group (the terminal's Ctrl-C reaches only us); we stop
        # them in order: workers finish their current task (warm shutdown), then Redis.
        for name, args in _up_plan(queues, concurrency, with_server, with_flower):
            children.append((name, subprocess.Popen(args, env=env, start_new_session=True)))
        _announce(settings, redis_url, embedded is not None, children, with_server, with_flower)
        while not stop["now"]:
            for name, child in children:
                if child.poll() is not None:
                    click.echo(f"pitstop up: {name} exited with {child.returncode}; stopping",
                               err=True)
                    stop["now"] = True
                    exit_code = 1
            if embedded is not None and not stop["now"]:
                embedded.keep_alive()
            time.sleep(0.2)  # supervision poll, not synchronization
    finally:
        click.echo("pitstop up: stopping…", err=True)
        _terminate(children)
        if embedded is not None:
            embedded.stop()
        click.echo("pitstop up: stopped", err=True)
    sys.exit(exit_code)


class EmbeddedRedisKeeper:
    """The embedded server under ``pitstop up``: restarted on the same port and password if it
    dies (clients reconnect), and stopped at the end, even one that was already running: after
    Ctrl-C nothing of pitstop's is left running."""

    def __init__(self, data_dir: Path) -> None:
        self._server = RedisServer(data_dir)
        self._info: ServerInfo | None = None

    def start(self) -> str:
        self._info = self._server.start(daemonize=True)
        return self._info.url

    def keep_alive(self) -> None:
        if self._info is None or pid_alive(self._info.pid):
            return
        click.echo(f"pitstop up: redis (pid {self._info.pid}) died; restarting it on port "
                   f"{self._info.port}", err=True)
        self._server = RedisServer(self._server.data_dir, port=self._info.port,
                                   password=self._info.password)
        self._server.info_path.unlink(missing_ok=True)
        self._info = self._server.start(daemonize=True)

    def stop(self) -> None:
        self._server.stop()


def _up_plan(queues: str | None, concurrency: int | None, with_server: bool,
             with_flower: bool) -> list[tuple[str, list[str]]]:
    me = [sys.executable, "-m", "pitstop"]
    worker_args = [*me, "worker"]
    if queues:
        worker_args += ["-Q", queues]
    if concurrency:
        worker_args += ["-c", str(concurrency)]
    plan = [("worker", worker_args), ("beat", [*me, "beat"])]
    if with_server:
        plan.append(("serve", [*me, "serve"]))
    if with_flower:
        plan.append(("flower", [*me, "flower"]))
    return plan


def _announce(settings: Settings, redis_url: str, embedded: bool,
              children: list[tuple[str, subprocess.Popen[bytes]]], with_server: bool,
              with_flower: bool) -> None:
    where = f"embedded, {settings.redis_dir.resolve()}" if embedded else "external"
    say = partial(click.echo, err=True)
    say(f"pitstop up: redis {describe_url(redis_url)} ({where})")
    say(f"pitstop up: state and logs in {settings.state_dir.resolve()}")
    say("pitstop up: " + ", ".join(f"{name} pid {child.pid}" for name, child in children))
    if with_server:
        say(f"pitstop up: HTTP on http://{settings.server.host}:{settings.server.port}")
    if with_flower:
        say(f"pitstop up: Flower on http://127.0.0.1:{settings.flower.port}")
    say("pitstop up: try `pitstop emit phase.1.completed x=1` then `pitstop events`; "
        "Ctrl-C stops everything")


@click.command()
@click.option("-Q", "--queues", help="Comma-separated queues to consume (e.g. linux,pwsh).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1), help="Worker processes.")
@click.option("-n", "--hostname", help="Worker node name (default pitstop-<queues>@<host>).")
@click.option("-l", "--loglevel", default=None, help="debug, info, warning, error.")
@click.option("--pool", type=click.Choice(["prefork", "threads", "solo"]), default="prefork",
              show_default=True)
@pass_context
def worker(ctx: Context, queues: str | None, concurrency: int | None, hostname: str | None,
           loglevel: str | None, pool: str) -> None:
    """Run a Celery worker consuming QUEUES (scale out: one per build machine)."""
    from workers.app import check_visibility_timeout, create_app

    settings = ctx.settings
    url = resolve_redis_url(settings)
    os.environ["PITSTOP_REDIS_URL"] = url  # prefork children resolve the same server
    app = create_app(settings, url)
    app.loader.import_default_modules()
    check_visibility_timeout(app, settings)
    queue_list = queues or ",".join(settings.celery.queues)
    argv = ["worker", "-Q", queue_list, "-l", (loglevel or settings.log_level).upper(),
            "-n", hostname or f"pitstop-{queue_list.replace(',', '-')}-{os.getpid()}@%h",
            "--pool", pool, "-E", "--without-mingle", "--without-gossip"]
    if concurrency or settings.celery.concurrency:
        argv += ["-c", str(concurrency or settings.celery.concurrency)]
    app.worker_main(argv=argv)


@click.command()
@click.option("-l", "--loglevel", default=None)
@pass_context
def beat(ctx: Context, loglevel: str | None) -> None:
    """Run Celery Beat (a singleton: a second one waits as a standby)."""
    from workers.app import create_app

    settings = ctx.settings
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    url = resolve_redis_url(settings)
    os.environ["PITSTOP_REDIS_URL"] = url
    app = create_app(settings, url)
    app.start(argv=["beat", "-l", (loglevel or settings.log_level).upper()])


def flower_basic_auth(settings: Settings) -> str:
    """The one ``user:password`` login Flower is started with; ConfigError when unset or unusable
    (settings validate it at load too: this guards settings built some other way)."""
    auth = settings.flower.basic_auth
    if auth is None:
        raise ConfigError("Flower needs basic auth: set PITSTOP_FLOWER_BASIC_AUTH=user:password "
                          "(or flower.basic_auth in config/pitstop.yaml)",
                          key_path="flower.basic_auth")
    problem = basic_auth_problem(auth.get_secret_value())
    if problem is not None:
        raise ConfigError(f"PITSTOP_FLOWER_BASIC_AUTH / flower.basic_auth {problem}",
                          key_path="flower.basic_auth")
    return auth.get_secret_value()


@click.command()
@click.option("--port", type=int, help="Port (default flower.port).")
@pass_context
def flower(ctx: Context, port: int | None) -> None:
    """Run Flower on 127.0.0.1, behind basic auth (flower.basic_auth)."""
    settings = ctx.settings
    auth = flower_basic_auth(settings)
    url = resolve_redis_url(settings)
    env = _child_env(ctx, url)
    env["FLOWER_BASIC_AUTH"] = auth  # env, not argv: argv is visible in ps
    args = [sys.executable, "-m", "celery", "-A", "workers.app", "flower",
            "--address=127.0.0.1", f"--port={port or settings.flower.port}"]
    # Become Flower (no wrapper process left behind to forward signals).
    os.execve(sys.executable, args, env)  # noqa: S606 - argv list, no shell


@click.command()
@click.option("--host", help="Bind address (default server.host, 127.0.0.1).")
@click.option("--port", type=int, help="Port (default server.port, 8787).")
@pass_context
def serve(ctx: Context, host: str | None, port: int | None) -> None:
    """Serve GitHub webhooks (POST /webhooks/github) and POST /events for any CI."""
    from pitstop import server as http
    from pitstop.constants import LOG_WEBHOOKS

    settings = ctx.settings.server
    app = http.create_app(
        bus=ctx.bus(), client=ctx.redis(),
        webhook_secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
        api_token=settings.api_token.get_secret_value() if settings.api_token else None,
        state_log=ctx.state_log(LOG_WEBHOOKS),
        redactor=ctx.redactor,
    )
    bind_host = host or settings.host
    bind_port = port or settings.port
    click.echo(f"pitstop serve: http://{bind_host}:{bind_port} "
               f"(webhooks {'on' if settings.webhook_secret else 'off: no webhook_secret'}, "
               f"/events {'on' if settings.api_token else 'off: no api_token'})", err=True)
    http.serve(app, host=bind_host, port=bind_port)


@click.command()
def keygen() -> None:
    """Print a new PITSTOP_SECRET_KEY (share it between CI and workers, like a password)."""
    from pitstop.sealing import generate_key

    click.echo(generate_key())


@click.group("redis")
def redis_group() -> None:
    """Manage the embedded Redis under .state/redis."""


@redis_group.command("start")
@pass_context
def redis_start(ctx: Context) -> None:
    """Start the embedded Redis in the background (no-op if running)."""
    info = embedded_server(ctx.settings).start(daemonize=True)
    click.echo(f"embedded redis running: pid {info.pid}, 127.0.0.1:{info.port}")


@redis_group.command("stop")
@pass_context
def redis_stop(ctx: Context) -> None:
    """Stop the embedded Redis (it saves its data first)."""
    stopped = embedded_server(ctx.settings).stop()
    click.echo("embedded redis stopped" if stopped else "embedded redis was not running")


@redis_group.command("status")
@pass_context
def redis_status(ctx: Context) -> None:
    """Is the embedded Redis running?"""
    info = embedded_server(ctx.settings).running_info()
    if info is None:
        raise RedisUnavailable(f"embedded redis under {ctx.settings.redis_dir} is not running")
    click.echo(f"embedded redis running: pid {info.pid}, 127.0.0.1:{info.port}")


