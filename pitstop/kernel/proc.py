"""Process facts the rest of pitstop asks about, stopping a child's process group, and the sweep
for orphaned script processes.

Every script the wrapper starts carries ``PITSTOP_SUPERVISOR=<pid>:<start time>`` (the process
running the wrapper) in its environment, inherited by everything it spawns. ``setpriv
--pdeathsig`` kills the script itself when its worker is SIGKILLed, but not the script's own
children; they keep the marker, so a later sweep on the same machine can find them: a process
whose supervisor no longer exists (or whose pid now names another process) is an orphan.

Only orphans of runs that were in flight when their worker died (``running`` or ``lost``) are
killed: a service a finished script detached on purpose (``setsid``) is left alone, as it would
have been had its worker lived.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SUPERVISOR_ENV = "PITSTOP_SUPERVISOR"
RUN_ID_ENV = "PITSTOP_RUN_ID"
PROC_ROOT = Path("/proc")
IN_FLIGHT_STATUSES = frozenset({"running", "lost"})


def stat_fields(pid: int | str, proc_root: Path = PROC_ROOT) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after ``(comm)``: state first, start time at [19].

    None when the process is gone (or there is no /proc). ``comm`` may hold spaces or ")", so
    the split starts after the last one.
    """
    try:
        stat = (proc_root / str(pid) / "stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2:].split()


def pid_alive(pid: int | None, proc_root: Path = PROC_ROOT) -> bool:
    """True while ``pid`` names a live process (a zombie counts as dead)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by someone else
    fields = stat_fields(pid, proc_root)
    # No /proc (macOS): kill(0) is all we know.
    return fields is None or (bool(fields) and fields[0] != "Z")


# If the worker is SIGKILLed (OOM, kill -9) a child must not run on unsupervised: util-linux
# ``setpriv --pdeathsig KILL`` sets PR_SET_PDEATHSIG and execs the command (same pid). A Python
# ``preexec_fn`` would do the same but forces a full fork of the worker (+5 ms a call). It only
# reaches the direct child; the child's own children are found later by the orphan sweep.
_SETPRIV = shutil.which("setpriv") if sys.platform.startswith("linux") else None


def with_parent_death_signal(argv: list[str]) -> list[str]:
    """``argv`` run so that it is SIGKILLed when its parent dies (Linux with setpriv)."""
    return [_SETPRIV, "--pdeathsig", "KILL", *argv] if _SETPRIV else argv


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group; one that is gone (or not ours) is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def terminate_group(pgid: int, grace: float) -> None:
    """SIGTERM a process group, then SIGKILL what is left of it after ``grace`` seconds."""
    if not group_alive(pgid):
        return
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    pause = 0.005
    while group_alive(pgid) and time.monotonic() < deadline:
        # only on the kill path: nothing reports a whole group's death, so poll briefly
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
    if group_alive(pgid):
        signal_group(pgid, signal.SIGKILL)


def group_alive(pgid: int, proc_root: Path = PROC_ROOT) -> bool:
    """Whether a process group has a member that is not a zombie.

    kill() counts zombies, and an init that never reaps them must not make us wait forever.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not proc_root.is_dir():
        return True
    for entry in os.scandir(proc_root):
        if entry.name.isdigit():
            fields = stat_fields(entry.name, proc_root)
            if fields and len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
                return True
    return False


def start_time(pid: int, proc_root: Path = PROC_ROOT) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot); None if gone or a zombie.

    With the pid it names one process for good: pids are reused, start times are not.
    """
    fields = stat_fields(pid, proc_root)
    if fields is None or len(fields) < 20 or fields[0] == "Z":
        return None
    return fields[19]


def supervisor_token(pid: int | None = None, proc_root: Path = PROC_ROOT) -> str:
    """``pid:start`` naming this process (or ``pid``) for the scripts it starts."""
    pid = os.getpid() if pid is None else pid
    started = start_time(pid, proc_root)
    return f"{pid}:{started}" if started else str(pid)


@dataclass(frozen=True)
class Orphan:
    """A process left behind by a script whose supervising worker process is gone."""

    pid: int
    run_id: str | None
    supervisor: str

    @property
    def supervisor_pid(self) -> int | None:
        """The pid of the (dead) worker process that ran the script, from ``supervisor``."""
        pid_text = self.supervisor.partition(":")[0]
        return int(pid_text) if pid_text.isdigit() else None


def _environ(path: Path) -> dict[str, str]:
    try:
        raw = path.read_bytes()
    except OSError:  # gone, or another user's process
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _supervisor_gone(token: str, proc_root: Path) -> bool:
    pid_text, _, started = token.partition(":")
    if not pid_text.isdigit():
        return False  # not ours to judge
    current = start_time(int(pid_text), proc_root)
    if current is None:
        return True
    return bool(started) and current != started


def find_orphans(proc_root: Path = PROC_ROOT) -> list[Orphan]:
    """Processes carrying a supervisor marker whose supervisor is gone (empty without /proc)."""
    return list(_iter_orphans(proc_root))


def _iter_orphans(proc_root: Path) -> Iterator[Orphan]:
    if not proc_root.is_dir():
        return
    me = os.getpid()
    for entry in proc_root.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        env = _environ(entry / "environ")
        token = env.get(SUPERVISOR_ENV)
        if token and start_time(int(entry.name), proc_root) and _supervisor_gone(token, proc_root):
            yield Orphan(pid=int(entry.name), run_id=env.get(RUN_ID_ENV), supervisor=token)


def sweep_orphans(run_status: Callable[[str], str | None], proc_root: Path = PROC_ROOT,
                  kill: Callable[[int, int], None] = os.kill) -> list[Orphan]:
    """SIGKILL the orphans of runs that were in flight when their worker died.

    ``run_status(run_id)`` answers a run's status (None when unknown: left alone). Returns the
    orphans killed.
    """
    killed = []
    for orphan in find_orphans(proc_root):
        if orphan.run_id is None or run_status(orphan.run_id) not in IN_FLIGHT_STATUSES:
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(orphan.pid, signal.SIGKILL)
            killed.append(orphan)
            log.warning("killed pid %d left behind by run %s (its worker process %s is gone)",
                        orphan.pid, orphan.run_id, orphan.supervisor)
    return killed
