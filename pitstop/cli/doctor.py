"""``pitstop doctor`` (is everything healthy?) and ``pitstop log`` (read a state log)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import click
import redis

from pitstop.cli.common import Context, FiniteFloatRange, pass_context
from pitstop.connection.connect import describe_url, resolve_redis_url
from pitstop.fleet.beatlock import beat_alive
from pitstop.fleet.consumption import WorkerView, not_consuming, sample_queues
from pitstop.kernel.constants import BEAT_HEARTBEAT_KEY
from pitstop.kernel.errors import ExitCode, PitstopError, ValidationError
from pitstop.kernel.settings import SETTINGS_FILE
from pitstop.kernel.statelog import list_logs, read_log
from pitstop.kernel.timeparse import parse_since


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def _check(name: str, probe: Callable[[], str]) -> Check:
    try:
        return Check(name, True, probe())
    except PitstopError as exc:
        return Check(name, False, str(exc))
    except (redis.RedisError, OSError) as exc:
        return Check(name, False, f"{type(exc).__name__}: {exc}")


@click.command(short_help="Check config, Redis, workers, Beat and the state dir.")
@click.option("--timeout", type=FiniteFloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds to wait for workers to answer ping.")
@click.option("--json", "as_json", is_flag=True,
              help="Print the checks as one JSON array instead of lines.")
@pass_context
def doctor(ctx: Context, timeout: float, as_json: bool) -> None:
    """Check config, Redis (reachability, auth), workers, Beat and the state dir.

    Exits 0 when all is healthy, 2 for a bad config, 3 when Redis cannot be reached, 1 for
    any other problem (no worker answering, no Beat, state dir not writable).
    """
    checks: list[Check] = []
    config = _check("config", lambda: _probe_config(ctx))
    checks.append(config)
    if config.ok:
        redis_check = _check("redis", lambda: _probe_redis(ctx))
        checks.append(redis_check)
        checks.append(_check("state dir", lambda: _probe_state_dir(ctx)))
        if redis_check.ok:
            checks.append(_check("workers", lambda: _probe_workers(ctx, timeout)))
            checks.append(_check("beat", lambda: _probe_beat(ctx)))
            checks.append(_check("triggers", lambda: _probe_triggers(ctx)))  # triggers
    problems = [check for check in checks if not check.ok]
    if as_json:
        click.echo(json.dumps([check.__dict__ for check in checks]))
    else:
        for check in checks:
            mark = click.style("ok  ", fg="green") if check.ok else click.style("FAIL", fg="red")
            click.echo(f"{mark} {check.name:<10} {check.detail}")
    if problems:
        if not as_json:
            click.echo(f"\n{len(problems)} problem(s): "
                       + ", ".join(check.name for check in problems), err=True)
        sys.exit(doctor_exit_code(problems))


_EXIT_CODE_OF_CHECK = {"config": ExitCode.USAGE, "redis": ExitCode.REDIS_UNAVAILABLE}
"""Failed checks that exit as every other command meeting the same problem would."""


def doctor_exit_code(problems: list[Check]) -> int:
    """A bad config exits 2 and Redis out of reach 3, like any command; other problems 1."""
    for check in problems:
        if check.name in _EXIT_CODE_OF_CHECK:
            return _EXIT_CODE_OF_CHECK[check.name]
    return ExitCode.FAILURE


def _probe_config(ctx: Context) -> str:
    settings = ctx.settings  # loading it validates the file and the PITSTOP_* variables
    path = settings.config_dir / SETTINGS_FILE
    if path.is_file():
        return f"valid ({path}; project {settings.project_dir})"
    return f"no config file at {path}: built-in defaults (project {settings.project_dir})"


def _probe_redis(ctx: Context) -> str:
    client = ctx.redis(start_embedded=False)
    url = resolve_redis_url(ctx.settings, start_embedded=False)
    started = time.perf_counter()
    client.ping()
    latency = (time.perf_counter() - started) * 1000
    version = client.info("server").get("redis_version", "?")
    return f"{describe_url(url)} redis {version}, ping {latency:.2f} ms"


def _probe_state_dir(ctx: Context) -> str:
    state = ctx.settings.state_dir
    if not state.is_dir():
        # Not created here: a .state/ directory marks a project, and doctor changes nothing.
        parent = next(p for p in state.absolute().parents if p.exists())
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValidationError(f"{state.absolute()} does not exist and {parent} is not "
                                  "writable")
        return f"{state.absolute()} not created yet ({parent} writable)"
    probe = state / f".doctor-{os.getpid()}"
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    probe.unlink()
    return f"{state.resolve()} writable"


def _probe_workers(ctx: Context, timeout: float) -> str:
    from workers.app import create_app, declared_queues

    app = create_app(ctx.settings, resolve_redis_url(ctx.settings, start_embedded=False))
    client = ctx.redis(start_embedded=False)
    watched = declared_queues(ctx.settings)
    sampled, before = time.monotonic(), sample_queues(client, watched)  # consuming: see below
    replies = app.control.ping(timeout=timeout) or []
    if not replies:
        raise ValidationError(f"no worker answered ping within {timeout:g}s "
                              "(start one: pitstop worker, or pitstop up)")
    names = sorted(name for reply in replies for name in reply)
    views = _worker_views(app, names, timeout)
    after = sample_queues(client, [*watched, *(q for view in views for q in view.queues)])
    problems = not_consuming(views, before, after, time.monotonic() - sampled)
    if problems:
        raise ValidationError("; ".join(problems))
    return f"{len(names)} answering: {', '.join(names)}"


def _worker_views(app: Any, names: list[str], timeout: float) -> list[WorkerView]:
    """What each answering worker consumes and how busy it is (Celery's inspect)."""
    inspect = app.control.inspect(destination=names, timeout=timeout, limit=len(names))
    queues, stats, active = (inspect.active_queues() or {}, inspect.stats() or {},
                             inspect.active() or {})
    return [WorkerView(name, tuple(q["name"] for q in queues.get(name) or []),
                       busy=len(active.get(name) or []),
                       slots=int(((stats.get(name) or {}).get("pool") or {}).get(
                           "max-concurrency", 1)))
            for name in names if name in queues]


def _probe_triggers(ctx: Context) -> str:  # triggers: the config in force, a refused edit
    from pitstop.cli.triggers import probe

    return probe(ctx)


def _probe_beat(ctx: Context) -> str:
    return beat_status(ctx.redis(start_embedded=False), ctx.settings.celery.beat_lock_ttl)


def beat_status(client: redis.Redis, default_ttl: float) -> str:
    """Whether a Beat leads: its heartbeat is at most its lock TTL old (the leader's own TTL,
    stamped with the heartbeat; ``default_ttl`` for a heartbeat without one). Past that, a
    standby would have taken over (:mod:`pitstop.fleet.beatlock`): the leader is down."""
    raw: Any = client.get(BEAT_HEARTBEAT_KEY)
    if raw is None:
        raise ValidationError("no Beat heartbeat (start it: pitstop beat, or pitstop up)")
    parts = raw.decode(errors="replace").split(" ")  # "<stamp> <holder> <ttl>"
    holder = parts[1] if len(parts) > 1 else ""
    ttl = (_number(parts[2]) if len(parts) > 2 else None) or float(default_ttl)
    seconds, micros = client.time()  # Beat stamped it with Redis's clock too
    age = seconds + micros / 1e6 - (_number(parts[0]) or 0.0)
    if not beat_alive(age, ttl):
        raise ValidationError(f"no Beat leads: the last heartbeat is {age:.0f}s old (from "
                              f"{holder or 'an unknown Beat'}), over its lock TTL of {ttl:g}s")
    return f"alive ({holder.split('/')[0]}, {age:.0f}s ago)"


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@click.command("log", short_help="Print a state log (.state/NAME.jsonl), or list the logs.")
@click.argument("name", required=False)
@click.option("--since", help="Only newer lines: 10m, 2h, 1d or an ISO time (default: all).")
@click.option("--grep", help="Only lines containing this (case-insensitive; regex allowed; "
              "default: all).")
@click.option("--limit", type=click.IntRange(min=1), help="Only the last N lines (default: all).")
@pass_context
def log_command(ctx: Context, name: str | None, since: str | None, grep: str | None,
                limit: int | None) -> None:
    """Print a state log (.state/NAME.jsonl) as JSON lines; without NAME, list the logs."""
    state = ctx.settings.state_dir
    if name is None:
        for present in list_logs(state):
            click.echo(present)
        return
    name = name.removesuffix(".jsonl")
    if name not in list_logs(state):
        known = ", ".join(list_logs(state)) or "none yet"
        raise ValidationError(f"no state log {name!r} in {state} (present: {known})")
    moment = parse_since(since, now=datetime.now(UTC)) if since else None
    for record in read_log(name, state, since=moment, grep=grep, limit=limit):
        click.echo(json.dumps(record, default=str))
