"""Throw-away ``git worktree`` checkouts, removed after every outcome, pruned after a crash.

Each worktree lives under ``<state_dir>/patches/worktrees/<name>`` beside a marker
``<name>.owner`` (JSON: the owning process as ``pid:start time``, the repository, the path). The
context manager removes the worktree however the block ends. A process SIGKILLed mid-check cannot
clean up: :meth:`WorktreeManager.prune_stale` (run when a worker starts) finds markers whose owner
is gone, kills the processes still working inside (their cwd is in the worktree) and removes the
worktree and git's record of it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

from pitstop.kernel.ids import new_id
from pitstop.kernel.proc import PROC_ROOT, start_time, supervisor_token
from pitstop.patches.git import Git

__all__ = ["WorktreeManager", "processes_inside"]

log = logging.getLogger(__name__)


def processes_inside(directory: Path, proc_root: Path = PROC_ROOT) -> list[int]:
    """Pids whose working directory is ``directory`` or below it (empty without /proc)."""
    if not proc_root.is_dir():
        return []
    target = str(directory.resolve())
    found = []
    for entry in os.scandir(proc_root):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(os.path.join(entry.path, "cwd"))
        except OSError:
            continue
        if cwd == target or cwd.startswith(target + os.sep):
            found.append(int(entry.name))
    return found


def _owner_alive(token: str) -> bool:
    pid_text, _, started = token.partition(":")
    if not pid_text.isdigit():
        return False
    current = start_time(int(pid_text))
    return current is not None and (not started or current == started)


class WorktreeManager:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @contextlib.contextmanager
    def checkout(self, repo: Git, commit: str, label: str = "patch") -> Iterator[Path]:
        """A fresh detached worktree of ``repo`` at ``commit``; gone when the block ends."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = f"{label}-{new_id()}"
        path = self.root / name
        marker = self.root / f"{name}.owner"
        marker.write_text(json.dumps({"owner": supervisor_token(), "repo": str(repo.cwd),
                                      "path": str(path)}))
        try:
            repo.run("worktree", "add", "--detach", "--quiet", str(path), commit)
            yield path
        finally:
            self.remove(repo, path)
            marker.unlink(missing_ok=True)

    @staticmethod
    def remove(repo: Git, path: Path) -> None:
        for pid in processes_inside(path) if path.exists() else []:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        repo.run("worktree", "remove", "--force", "--force", str(path), check=False)
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        repo.run("worktree", "prune", check=False)

    def live(self) -> list[Path]:
        """Worktree directories present under the root (for tests and ``doctor``-like checks)."""
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir())

    def prune_stale(self) -> list[Path]:
        """Remove worktrees whose owning process is gone; returns their paths."""
        if not self.root.is_dir():
            return []
        pruned = []
        for marker in sorted(self.root.glob("*.owner")):
            try:
                info = json.loads(marker.read_text())
            except (OSError, ValueError):
                continue
            if _owner_alive(str(info.get("owner", ""))):
                continue
            path = Path(info.get("path") or marker.with_suffix(""))
            repo = Path(info.get("repo") or ".")
            log.warning("removing worktree %s left by a process that died (%s)", path,
                        info.get("owner"))
            if repo.is_dir():
                self.remove(Git(repo), path)
            elif path.exists():
                shutil.rmtree(path, ignore_errors=True)
            marker.unlink(missing_ok=True)
            pruned.append(path)
        # directories without a marker (a crash between mkdir and the marker is impossible:
        # the marker comes first), and markers' worktrees already gone, are handled above
        return pruned
