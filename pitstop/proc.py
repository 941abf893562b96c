"""Process facts the rest of pitstop asks about (POSIX)."""

from __future__ import annotations

import os


def pid_alive(pid: int | None) -> bool:
    """True while ``pid`` names a live process (a zombie counts as dead)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by someone else
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True  # no /proc (macOS): kill(0) is all we know
