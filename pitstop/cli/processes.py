"""Long-running processes: ``up``, ``worker``, ``beat``, ``flower``, ``serve``, ``redis``."""

from __future__ import annotations

import errno
import os
import shlex
import signal
import socket
import subprocess  # nosec B404 # argv lists only, never a shell
import sys
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import IO

import click
import redis

from pitstop.cli.common import Context, FiniteFloatRange, pass_context
from pitstop.connection.connect import connect, describe_url, embedded_server, resolve_redis_url
from pitstop.connection.server import wait_until
from pitstop.fleet.supervisor import (
    EmbeddedRedisKeeper,
    Supervisor,
    child_pids,
    mark_runs_lost,
)
from pitstop.kernel.constants import UP_LOCK_FILE
from pitstop.kernel.errors import (
    ConfigError,
    ExitCode,
    PitstopError,
    RedisUnavailable,
    ValidationError,
)
from pitstop.kernel.proc import pid_alive
from pitstop.kernel.settings import Settings, basic_auth_problem
from pitstop.kernel.statelog import private_dir
from pitstop.runs.output import RunOutput

STOP_TIMEOUT = 15.0
"""Seconds ``pitstop up`` lets the worker finish running scripts after Ctrl-C (--stop-timeout)."""


def _child_env(ctx: Context, redis_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PITSTOP_REDIS_URL"] = redis_url
    env["PITSTOP_HOME"] = str(ctx.settings.project_dir.resolve())
    env["PITSTOP_STATE_DIR"] = str(ctx.settings.state_dir.resolve())
    if ctx.settings.config_dir.is_dir():  # else the project's (missing) config/, as here
        env["PITSTOP_CONFIG_DIR"] = str(ctx.settings.config_dir.resolve())
    return env


def ensure_port_free(host: str, port: int, *, setting: str) -> None:
    """ValidationError (exit 2) when nothing could listen on ``host:port`` (checked as the
    servers bind, with SO_REUSEADDR), so a busy port is one clear line, not a traceback."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValidationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ValidationError(
                    f"{host}:{port} is already in use: stop what listens there, or choose "
                    f"another port with --port ({setting})") from None
            raise ValidationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


@click.command(short_help="Run Redis, a worker and Beat (and more) until Ctrl-C.")
@click.option("-Q", "--queues", help="Comma-separated queues for the worker (default "
              "celery.queues; the housekeeping queue 'default' is always consumed too).")
@click.option("-c", "--concurrency", type=click.IntRange(min=1),
              help="Worker processes (default celery.concurrency, else one per CPU).")
@click.option("--serve/--no-serve", "with_server", default=False, show_default=True,
              help="Also run the webhook / events HTTP endpoint.")
@click.option("--flower/--no-flower", "with_flower", default=False, show_default=True,
              help="Also run Flower (needs flower.basic_auth / PITSTOP_FLOWER_BASIC_AUTH).")
@click.option("--stop-timeout", type=FiniteFloatRange(min=0), default=STOP_TIMEOUT,
              show_default=True, metavar="SECONDS",
              help="On Ctrl-C, how long the worker may finish the scripts it is running before "
                   "it is killed (a second Ctrl-C kills it at once).")
@pass_context
def up(ctx: Context, queues: str | None, concurrency: int | None, with_server: bool,
       with_flower: bool, stop_timeout: float) -> None:
    """Run Redis (embedded unless PITSTOP_REDIS_URL), a worker and Beat until Ctrl-C.

    A worker, Beat (or server) that exits is restarted, after a delay growing from 1 s to 30 s
    while it keeps failing. Ctrl-C lets running scripts finish (up to --stop-timeout); a second
    Ctrl-C stops at once, and runs cut short are marked lost.
    """
    settings = ctx.settings
    if with_flower:
        flower_basic_auth(settings)  # refuse before anything starts
        ensure_port_free("127.0.0.1", settings.flower.port, setting="flower.port")
    if with_server:
        ensure_port_free(settings.server.host, settings.server.port,
                         setting="server.port / PITSTOP_SERVER_PORT")
    interrupts = [0]

    def interrupted(signum: int, frame: object) -> None:
        interrupts[0] += 1

    # Before anything starts, so an early Ctrl-C still stops what was started.
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    say = partial(_say, "pitstop up")
    keeper: EmbeddedRedisKeeper | None = None
    up_lock: IO[str] | None = None
    if settings.redis.url is None:
        up_lock = hold_up_lock(settings, queues)
        keeper = EmbeddedRedisKeeper(settings.redis_dir, say=say)
        redis_url = keeper.start()
    else:
        redis_url = resolve_redis_url(settings)
    supervisor: Supervisor | None = None
    try:
        ctx.redis()  # fail early, clearly, if Redis is unreachable
        # Children get their own process group (the terminal's Ctrl-C reaches only us); we stop
        # them in order: workers finish their current task (warm shutdown), then Redis.
        supervisor = Supervisor(_up_plan(queues, concurrency, with_server, with_flower),
                                _child_env(ctx, redis_url), say=say)
        supervisor.start()
        _announce(settings, redis_url, keeper is not None, supervisor, with_server, with_flower,
                  second_worker_command(settings, queues, os.environ))
        while not interrupts[0]:
            supervisor.poll()
            if keeper is not None:
                moved = keeper.keep_alive()
                if moved is not None:
                    supervisor.restart_all(_child_env(ctx, moved.url))
            time.sleep(0.2)  # supervision poll, not synchronization
    finally:
        if supervisor is not None:
            _stop_children(ctx, supervisor, stop_timeout, interrupts)
        if keeper is not None:
            keeper.stop()
        if up_lock is not None:
            up_lock.close()
        say("stopped")


def hold_up_lock(settings: Settings, queues: str | None) -> IO[str]:
    """One ``pitstop up`` per project on the embedded Redis: a second one, when it stopped,
    stopped the server the first one keeps (its workers lost Redis until it was restarted). The
    lock is an ``flock`` on ``.state/up.lock``, released when its holder exits however it exits;
    a second ``up`` is refused (exit 1) naming the first one's pid and how to add a worker."""
    path = private_dir(settings.state_dir) / UP_LOCK_FILE
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+", encoding="utf-8")
    import fcntl  # POSIX only, like `up` itself: importing pitstop must work without it

    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = handle.read().strip() or "?"
        handle.close()
        raise PitstopError(
            f"pitstop up already runs for this project (pid {holder}; {path}): stop it first "
            f"(Ctrl-C), or add a worker to it: {second_worker_command(settings, queues, os.environ)}"
        ) from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _say(who: str, message: str) -> None:
    click.echo(f"{who}: {message}", err=True)


def _stop_children(ctx: Context, supervisor: Supervisor, timeout: float,
                   interrupts: list[int]) -> None:
    """Warm-stop the children (running scripts may finish, up to ``timeout``), kill what is left
    at the deadline or at the next Ctrl-C, then mark the runs the worker's pool processes were
    running ``lost``, so they do not stay ``running`` and their followers stop waiting."""
    say = partial(_say, "pitstop up")
    worker = supervisor.child("worker")
    seen = interrupts[0]
    pool = _pool_pids(worker.popen)
    if supervisor.running():
        say(f"stopping: waiting up to {timeout:g}s for running scripts to finish; press Ctrl-C "
            "again to stop at once")
        supervisor.terminate()
        if not supervisor.wait(time.monotonic() + timeout, lambda: interrupts[0] > seen):
            pool |= _pool_pids(worker.popen)
            why = "stopping at once" if interrupts[0] > seen else f"did not stop in {timeout:g}s"
            for name, _ in supervisor.running():
                say(f"{name} {why}: killing it")
            supervisor.kill()
    else:
        supervisor.terminate()
    if not pool:
        return
    wait_until(lambda: not any(pid_alive(pid) for pid in pool), 5.0, interval=0.05)
    try:
        lost = mark_runs_lost(ctx.run_store(), RunOutput(ctx.redis()), host=socket.gethostname(),
                              worker_pids=pool)
    except (RedisUnavailable, redis.RedisError) as exc:
        say(f"could not mark the runs cut short lost ({exc}); the reaper will, later")
        return
    for run in lost:
        say(f"run {run.run_id} was still running: marked lost")


def _pool_pids(worker: subprocess.Popen[bytes] | None) -> set[int]:
    """The pool processes of a running worker (its direct children)."""
    if worker is None or worker.poll() is not None:
        return set()
    return child_pids(worker.pid)


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


def _announce(settings: Settings, redis_url: str, embedded: bool, supervisor: Supervisor,
              with_server: bool, with_flower: bool, second_worker: str) -> None:
    where = f"embedded, {settings.redis_dir.resolve()}" if embedded else "external"
    say = partial(click.echo, err=True)
    say(f"pitstop up: redis {describe_url(redis_url)} ({where})")
    say(f"pitstop up: state and logs in {settings.state_dir.resolve()}")
    say("pitstop up: " + ", ".join(f"{name} pid {child.pid}"
                                   for name, child in supervisor.running()))
    if with_server:
        say(f"pitstop up: HTTP on http://{settings.server.host}:{settings.server.port}")
    if with_flower:
        say(f"pitstop up: Flower on http://127.0.0.1:{settings.flower.port}")
    say(f"pitstop up: another worker, from any shell of this user: {second_worker}")
    say("pitstop up: try `pitstop emit phase.1.completed x=1` then `pitstop events`; "
        "Ctrl-C stops everything")


def pitstop_executable() -> list[str]:
    """How to run this very pitstop from another shell: its console script next to the Python
    running us (a venv's bin/), else that Python with ``-m pitstop``."""
    script = Path(sys.executable).with_name("pitstop")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "pitstop"]


def second_worker_command(settings: Settings, queues: str | None,
                          environ: Mapping[str, str]) -> str:
    """A ``pitstop worker`` command line that joins this project from another shell as is: run
    from the project directory (relative script paths mean there what they mean to ``up``'s
    worker) and named by ``PITSTOP_HOME`` (the worker finds its embedded Redis, password and key
    in ``.state`` itself), explicit config and state directories kept, the same executable. An
    external Redis's URL holds a password: the command says to export it rather than print it."""
    project = shlex.quote(str(settings.project_dir.resolve()))
    words = ["cd", project, "&&", f"PITSTOP_HOME={project}"]
    for name in ("PITSTOP_CONFIG_DIR", "PITSTOP_STATE_DIR"):
        if environ.get(name):
            words.append(f"{name}={shlex.quote(str(Path(environ[name]).resolve()))}")
    words += [shlex.quote(word) for word in pitstop_executable()]
    words.append("worker")
    if queues:
        words += ["-Q", shlex.quote(queues)]
    command = " ".join(words)
    if settings.redis.url is not None:
        return f"{command} (with the same PITSTOP_REDIS_URL and PITSTOP_SECRET_KEY exported)"
    return command


def _preflight(settings: Settings) -> str:
    """Check what a worker or Beat needs before Celery starts (which would retry a wrong
    password 100 times, or fail every run on a bad key): the secret key setup (ConfigError,
    exit 2) and a Redis that answers and accepts the password (RedisUnavailable, exit 3).
    Returns the Redis URL."""
    settings.sealer()
    connect(settings, check=True).close()
    return resolve_redis_url(settings)


@click.command(short_help="Run a Celery worker (scale out: one per build machine).")
@click.option("-Q", "--queues", help="Comma-separated queues to consume (e.g. linux,pwsh; default "
              "celery.queues). The housekeeping queue 'default', where Beat sends the reaper of "
              "lost runs, is always consumed too.")
@click.option("-c", "--concurrency", type=click.IntRange(min=1),
              help="Worker processes (default celery.concurrency, else one per CPU).")
@click.option("-n", "--hostname", help="Worker node name (default pitstop-<queues>-<pid>@<host>, "
              "e.g. pitstop-linux-default-4242@buildbox for -Q linux).")
@click.option("-l", "--loglevel", default=None,
              help="debug, info, warning or error (default log_level, info).")
@click.option("--pool", type=click.Choice(["prefork", "threads", "solo"]), default="prefork",
              show_default=True, help="Celery's execution pool.")
@pass_context
def worker(ctx: Context, queues: str | None, concurrency: int | None, hostname: str | None,
           loglevel: str | None, pool: str) -> None:
    """Run a Celery worker consuming QUEUES (scale out: one per build machine).

    Exits non-zero when Celery stops after an unrecoverable error, so a service manager
    (systemd Restart=on-failure) starts it again.
    """
    from workers.app import check_visibility_timeout, create_app, run_worker, worker_queues

    settings = ctx.settings
    queue_list = worker_queues(settings, queues)
    url = _preflight(settings)
    os.environ["PITSTOP_REDIS_URL"] = url  # prefork children resolve the same server
    app = create_app(settings, url, queues=queue_list)
    app.loader.import_default_modules()
    check_visibility_timeout(app, settings)
    argv = ["worker", "-Q", ",".join(queue_list), "-l", (loglevel or settings.log_level).upper(),
            "-n", hostname or f"pitstop-{'-'.join(queue_list)}-{os.getpid()}@%h",
            "--pool", pool, "--without-mingle", "--without-gossip",
            *(["-E"] if settings.celery.task_events else [])]  # celery.task_events
    if concurrency or settings.celery.concurrency:
        argv += ["-c", str(concurrency or settings.celery.concurrency)]
    code = run_worker(app, argv)
    if code:
        _say("pitstop worker", f"the Celery worker stopped with exit code {code}")
        sys.exit(code)


@click.command(short_help="Run Celery Beat (a singleton: a second one stands by).")
@click.option("-l", "--loglevel", default=None,
              help="debug, info, warning or error (default log_level, info).")
@pass_context
def beat(ctx: Context, loglevel: str | None) -> None:
    """Run Celery Beat (a singleton: a second one waits as a standby).

    Exits non-zero when Beat stops after an unrecoverable error.
    """
    from workers.app import create_app

    settings = ctx.settings
    private_dir(settings.state_dir)
    url = _preflight(settings)
    os.environ["PITSTOP_REDIS_URL"] = url
    app = create_app(settings, url)
    try:
        app.start(argv=["beat", "-l", (loglevel or settings.log_level).upper()])
    except PitstopError:
        raise
    except Exception as exc:  # Celery has logged it ("beat raised exception")
        _say("pitstop beat", f"stopped after an unrecoverable error: {type(exc).__name__}: {exc}")
        sys.exit(ExitCode.FAILURE)


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


@click.command(short_help="Run Flower on 127.0.0.1, behind basic auth.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Bind address (0.0.0.0 only inside a container whose port is published to "
                   "loopback, as docker-compose.yml does).")
@click.option("--port", type=click.IntRange(1, 65535),
              help="Port (default flower.port, 5555).")
@pass_context
def flower(ctx: Context, host: str, port: int | None) -> None:
    """Run Flower on 127.0.0.1, behind basic auth (flower.basic_auth).

    Every page needs the login, /metrics too: scrape it with the same user and password.
    """
    settings = ctx.settings
    auth = flower_basic_auth(settings)
    bind_port = port or settings.flower.port
    ensure_port_free(host, bind_port, setting="flower.port")
    url = resolve_redis_url(settings)
    env = _child_env(ctx, url)
    env["FLOWER_BASIC_AUTH"] = auth  # env, not argv: argv is visible in ps
    # Through workers.flowerauth: Flower itself serves /metrics without the login.
    args = [sys.executable, "-m", "workers.flowerauth", "-A", "workers.app", "flower",
            f"--address={host}", f"--port={bind_port}"]
    # Become Flower (no wrapper process left behind to forward signals).
    os.execve(sys.executable, args, env)  # noqa: S606 - argv list, no shell  # nosec B606 # our own interpreter


@click.command(short_help="Serve GitHub webhooks and POST /events.")
@click.option("--host", help="Bind address (default server.host, 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), help="Port (default server.port, 8787).")
@pass_context
def serve(ctx: Context, host: str | None, port: int | None) -> None:
    """Serve GitHub webhooks (POST /webhooks/github) and POST /events for any CI."""
    from pitstop.cli.web import describe, web_routes_for  # web: the web view under /ui
    from pitstop.kernel.constants import LOG_WEBHOOKS
    from pitstop.server import app as http

    settings = ctx.settings.server
    ensure_port_free(host or settings.host, port or settings.port,
                     setting="server.port / PITSTOP_SERVER_PORT")
    app = http.create_app(
        bus=ctx.bus(start_embedded=True), client=ctx.redis(start_embedded=True),
        webhook_secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
        api_token=settings.api_token.get_secret_value() if settings.api_token else None,
        state_log=ctx.state_log(LOG_WEBHOOKS),
        redactor=ctx.redactor,
        max_concurrent_bodies=settings.max_concurrent_bodies,
        body_timeout=settings.body_timeout_seconds,
        extra_routes=web_routes_for(ctx),  # web
    )
    bind_host = host or settings.host
    bind_port = port or settings.port
    click.echo(f"pitstop serve: http://{bind_host}:{bind_port} "
               f"(webhooks {'on' if settings.webhook_secret else 'off: no webhook_secret'}, "
               f"/events {'on' if settings.api_token else 'off: no api_token'}; "
               f"{describe(ctx)})", err=True)  # web
    http.serve(app, host=bind_host, port=bind_port)


@click.command(short_help="Print a new PITSTOP_SECRET_KEY.")
def keygen() -> None:
    """Print a new PITSTOP_SECRET_KEY (share it between CI and workers, like a password)."""
    from pitstop.kernel.sealing import generate_key

    click.echo(generate_key())


@click.group("redis", invoke_without_command=True)
@click.pass_context
def redis_group(click_ctx: click.Context) -> None:
    """Manage the embedded Redis under .state/redis."""
    if click_ctx.invoked_subcommand is None:
        click.echo(click_ctx.get_help())


@redis_group.command("start")
@pass_context
def redis_start(ctx: Context) -> None:
    """Start the embedded Redis in the background (no-op if running)."""
    server = embedded_server(ctx.settings)
    info = server.start(daemonize=True)
    server.ensure_answering(info)
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
    server = embedded_server(ctx.settings)
    info = server.running_info()
    if info is None:
        raise RedisUnavailable(f"embedded redis under {ctx.settings.redis_dir} is not running")
    server.ensure_answering(info)
    click.echo(f"embedded redis running: pid {info.pid}, 127.0.0.1:{info.port}")


