"""What keeps ``pitstop up`` running: its child processes, restarted with backoff when they exit
unexpectedly and stopped in order at the end; the embedded Redis, restarted when it dies; and
the runs a stop cut short, marked ``lost`` instead of being left ``running``.

No Celery here: the children are ``pitstop worker``, ``pitstop beat`` … processes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess  # nosec B404 # argv lists only, never a shell
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pitstop.connection.server import RedisServer
from pitstop.kernel.errors import RedisUnavailable, RunNotFound
from pitstop.kernel.proc import PROC_ROOT, Orphan, pid_alive, stat_fields
from pitstop.kernel.serverinfo import ServerInfo
from pitstop.runs.output import RunOutput
from pitstop.runs.store import Run, RunStore

Say = Callable[[str], None]
Spawn = Callable[[Sequence[str], Mapping[str, str]], subprocess.Popen[bytes]]

FIRST_DELAY = 1.0
MAX_DELAY = 30.0
STABLE_AFTER = 60.0
"""A child that ran this long before exiting is restarted after ``FIRST_DELAY`` again."""


def spawn_child(args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """A child in its own session (and process group): the terminal's Ctrl-C reaches only
    ``pitstop up``, which stops its children in order."""
    return subprocess.Popen(list(args), env=dict(env), start_new_session=True)  # nosec B603 # pitstop's own children


def doubling_delay(failures: int, first: float, maximum: float) -> float:
    """The pause before retry number ``failures`` (1, 2 …): ``first``, doubling, at most
    ``maximum``."""
    return min(maximum, first * 2.0 ** max(0, failures - 1))


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with {code}"


@dataclass
class Child:
    """One supervised process: what to run, the running process (None while it waits to be
    restarted), and its run of quick exits."""

    name: str
    args: list[str]
    popen: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    quick_exits: int = 0
    restart_at: float | None = None


class Supervisor:
    """Runs ``plan`` (``(name, argv)`` pairs) and keeps it running: :meth:`poll` restarts a child
    that exited, whatever its exit code, after a delay doubling from ``first_delay`` up to
    ``max_delay`` while it keeps exiting within ``stable_after`` seconds of its start. Each exit
    is told to ``say`` in one line. ``clock`` is :func:`time.monotonic`-like."""

    def __init__(self, plan: Iterable[tuple[str, Sequence[str]]], env: Mapping[str, str], *,
                 say: Say, spawn: Spawn = spawn_child,
                 clock: Callable[[], float] = time.monotonic, first_delay: float = FIRST_DELAY,
                 max_delay: float = MAX_DELAY, stable_after: float = STABLE_AFTER) -> None:
        self.children = [Child(name, list(args)) for name, args in plan]
        self.env = dict(env)
        self._say = say
        self._spawn = spawn
        self._clock = clock
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._stable_after = stable_after
        self._stopping = False

    def child(self, name: str) -> Child:
        for child in self.children:
            if child.name == name:
                return child
        raise KeyError(name)

    def start(self) -> None:
        for child in self.children:
            self._start(child)

    def _start(self, child: Child) -> None:
        child.popen = self._spawn(child.args, self.env)
        child.started_at = self._clock()
        child.restart_at = None

    def poll(self) -> None:
        """Notice children that exited (and schedule their restart); restart those due."""
        if self._stopping:
            return
        now = self._clock()
        for child in self.children:
            if child.popen is None:
                if child.restart_at is not None and now >= child.restart_at:
                    self._start(child)
                continue
            code = child.popen.poll()
            if code is None:
                continue
            ran = now - child.started_at
            child.quick_exits = child.quick_exits + 1 if ran < self._stable_after else 0
            delay = doubling_delay(child.quick_exits, self._first_delay, self._max_delay)
            self._say(f"{child.name} (pid {child.popen.pid}) {describe_exit(code)} after "
                      f"{ran:.0f}s; restarting it in {delay:g}s")
            child.popen = None
            child.restart_at = now + delay

    def restart_all(self, env: Mapping[str, str]) -> None:
        """Stop every child (SIGTERM) and let :meth:`poll` start them again with ``env``."""
        self.env = dict(env)
        for child in self.children:
            if child.popen is not None and child.popen.poll() is None:
                child.popen.send_signal(signal.SIGTERM)

    def running(self) -> list[tuple[str, subprocess.Popen[bytes]]]:
        return [(c.name, c.popen) for c in self.children
                if c.popen is not None and c.popen.poll() is None]

    def terminate(self) -> None:
        """Ask every child to stop (SIGTERM: Celery's warm shutdown lets running tasks finish);
        no more restarts from here on."""
        self._stopping = True
        for child in self.children:
            child.restart_at = None
            if child.popen is not None and child.popen.poll() is None:
                child.popen.send_signal(signal.SIGTERM)

    def wait(self, deadline: float, give_up: Callable[[], bool],
             sleep: Callable[[float], None] = time.sleep) -> bool:
        """Wait until every child has exited (True), ``deadline`` (a ``clock`` time) passes or
        ``give_up()`` (False)."""
        while self.running():
            if self._clock() >= deadline or give_up():
                return False
            sleep(0.1)  # polling exits, not synchronizing
        return True

    def kill(self) -> list[str]:
        """SIGKILL the children still running, each with its whole process group (Celery's pool
        processes); returns their names."""
        killed = []
        for name, popen in self.running():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(popen.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                popen.kill()
            popen.wait()
            killed.append(name)
        return killed


def child_pids(pid: int, proc_root: Path = PROC_ROOT) -> set[int]:
    """The pids whose parent is ``pid`` (a Celery worker's pool processes); empty without
    ``/proc``."""
    children: set[int] = set()
    if not proc_root.is_dir():
        return children
    for entry in proc_root.iterdir():
        if entry.name.isdigit():
            fields = stat_fields(entry.name, proc_root)
            if fields and len(fields) > 1 and fields[1] == str(pid):
                children.add(int(entry.name))
    return children


LOST_ON_STOP = "pitstop up stopped while it ran"


def mark_runs_lost(store: RunStore, output: RunOutput, *, host: str, worker_pids: set[int],
                   error: str = LOST_ON_STOP, limit: int = 10_000) -> list[Run]:
    """Mark ``lost`` the runs still ``running`` on ``host`` under one of ``worker_pids`` (the
    pool processes of a worker that is gone) that are dead, and end their output streams, so
    that whoever follows them stops waiting. Returns the runs marked."""
    marked = []
    for run in store.list_runs(status="running", limit=limit):
        if run.host != host or run.worker_pid not in worker_pids or pid_alive(run.worker_pid):
            continue
        updated = store.update_run(run.run_id, status="lost", error=error)
        if updated.status == "lost":
            output.close(run.run_id, status="lost", exit_code=None)
            marked.append(updated)
    return marked


LOST_BY_SWEEP = ("its worker process (pid {pid} on {host}) died: the orphan sweep found what "
                 "its script left behind")


def mark_orphaned_runs_lost(store: RunStore, output: RunOutput, orphans: Iterable[Orphan], *,
                            host: str) -> list[Run]:
    """Mark ``lost`` the runs whose orphans the sweep found: an orphan on this machine proves
    its supervising worker process dead (its pid and start time name no live process), so a run
    still ``running`` on this host under that pid need not wait for the reaper
    (``scripts.lost_after_seconds``). Their output streams end, so followers stop waiting."""
    marked = []
    seen: set[tuple[str, int]] = set()
    for orphan in orphans:
        pid = orphan.supervisor_pid
        if orphan.run_id is None or pid is None or (orphan.run_id, pid) in seen:
            continue
        seen.add((orphan.run_id, pid))
        try:
            run = store.get_run(orphan.run_id)
        except RunNotFound:
            continue
        # Another worker may have taken the run since (an idempotent re-run): only the dead one's.
        if run.status != "running" or run.host != host or run.worker_pid != pid or pid_alive(pid):
            continue
        updated = store.update_run(run.run_id, status="lost",
                                   error=LOST_BY_SWEEP.format(pid=pid, host=host))
        if updated.status == "lost":
            output.close(run.run_id, status="lost", exit_code=None)
            marked.append(updated)
    return marked


class EmbeddedRedisKeeper:
    """The embedded server under ``pitstop up``: restarted on the same port and password when its
    process dies (clients reconnect), and stopped at the end, even one that was already running:
    after Ctrl-C nothing of pitstop's is left running.

    A server whose process lives is never replaced, even if it does not answer (stopped, hung).
    A restart happens under the data directory's start lock, like any start: if another pitstop
    process started a server meanwhile, that one is adopted instead of a second being started.
    """

    def __init__(self, data_dir: Path, *, say: Say, clock: Callable[[], float] = time.monotonic,
                 first_delay: float = FIRST_DELAY, max_delay: float = MAX_DELAY) -> None:
        self._server = RedisServer(data_dir)
        self._info: ServerInfo | None = None
        self._say = say
        self._clock = clock
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._failures = 0
        self._retry_at = 0.0

    @property
    def info(self) -> ServerInfo | None:
        return self._info

    def start(self) -> str:
        """Start (or find) the server; RedisUnavailable when it does not answer."""
        self._info = self._server.start(daemonize=True)
        self._server.ensure_answering(self._info)
        return self._info.url

    def keep_alive(self) -> ServerInfo | None:
        """Restart the server if its process died; returns the new server's info when its URL
        differs from the old one's (clients must be told), else None."""
        old = self._info
        if old is None or self._server.is_running(old) or self._clock() < self._retry_at:
            return None
        if self._server.process is not None:
            self._server.process.poll()  # reap it
        if self._failures == 0:
            self._say(f"redis (pid {old.pid}) died; restarting it on port {old.port}")
        server = RedisServer(self._server.data_dir, port=old.port, password=old.password)
        try:
            info = server.start(daemonize=True)
        except RedisUnavailable as exc:
            self._failures += 1
            delay = doubling_delay(self._failures, self._first_delay, self._max_delay)
            self._retry_at = self._clock() + delay
            self._say(f"could not restart redis ({exc}); trying again in {delay:g}s")
            return None
        self._failures = 0
        self._server = server
        self._info = info
        if info.url != old.url:
            self._say(f"another pitstop process started redis (pid {info.pid}) on port "
                      f"{info.port} meanwhile; using that one")
            return info
        return None

    def stop(self) -> None:
        self._server.stop()
