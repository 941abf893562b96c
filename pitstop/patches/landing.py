"""Landing a validated patch: one merge lane per target branch, re-tested when the target moved.

:class:`MergeLane` is a Redis lock per (repository, branch) with a short expiry that its holder
renews while it lands, so two patches never land on one branch at once and a holder that dies
(a SIGKILLed worker) blocks the lane for at most that expiry, not for the whole landing's
worst case. Inside it,
:class:`Lander`:

1. reads the target's current head (the remote's, fetched, when there is a remote);
2. when it is still the patch's base, the patch commit fast-forwards it; otherwise the commit is
   cherry-picked onto the head in a fresh worktree and the tests run again there (a conflict or a
   failure stops the landing: :class:`LandingFailed`);
3. pushes to the remote (a fast-forward only: if someone pushed meanwhile, back to 1, at most
   three times), then moves the local branch if it is not checked out anywhere and only forward.
"""

from __future__ import annotations

import contextlib
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from pitstop.kernel.constants import PATCH_LANE_PREFIX
from pitstop.kernel.errors import LandingFailed, RedisUnavailable
from pitstop.patches.checks import ChangedFiles, CheckResult, CheckRunner
from pitstop.patches.config import CheckConfig
from pitstop.patches.git import Git
from pitstop.patches.repos import RepoHandle
from pitstop.patches.worktree import WorktreeManager

__all__ = ["LandResult", "Lander", "MergeLane"]

_ATTEMPTS = 3


class MergeLane:
    def __init__(self, client: redis.Redis, *, wait: float = 600.0, hold: float = 15.0) -> None:
        self.client = client
        self.wait = wait
        self.hold_seconds = hold
        """The lock's expiry: renewed every third of it while held; a dead holder's runs out."""

    @staticmethod
    def key(repo: str, branch: str) -> str:
        return f"{PATCH_LANE_PREFIX}{repo}:{branch}"

    @contextlib.contextmanager
    def hold(self, repo: str, branch: str) -> Iterator[None]:
        lock = self.client.lock(self.key(repo, branch), timeout=self.hold_seconds,
                                blocking_timeout=self.wait, sleep=0.05, thread_local=False)
        try:
            acquired = lock.acquire()
        except redis.RedisError as exc:
            raise RedisUnavailable(f"cannot take the merge lane of {repo}:{branch}: {exc}") from exc
        if not acquired:
            raise LandingFailed(f"the merge lane of {repo}:{branch} stayed busy for "
                                f"{self.wait:g}s")
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.hold_seconds / 3):
                with contextlib.suppress(redis.RedisError):
                    lock.reacquire()

        renewer = threading.Thread(target=renew, name="pitstop-merge-lane", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join()
            with contextlib.suppress(redis.RedisError):
                lock.release()


@dataclass
class LandResult:
    merged: str
    target_head: str
    retested: bool = False
    retest: CheckResult | None = None
    pushed: bool = False
    local_updated: bool = False
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"merged": self.merged, "target_head": self.target_head,
                "retested": self.retested,
                "retest": self.retest.to_dict() if self.retest else None,
                "pushed": self.pushed, "local_updated": self.local_updated, "notes": self.notes}


class Lander:
    def __init__(self, lane: MergeLane, worktrees: WorktreeManager, runner: CheckRunner,
                 *, on_phase: Callable[[str], None] | None = None) -> None:
        self.lane = lane
        self.worktrees = worktrees
        self.runner = runner
        self.on_phase = on_phase or (lambda phase: None)

    def land(self, repo: RepoHandle, commit: str, base: str, branch: str,
             tests: CheckConfig | None, changed: ChangedFiles) -> LandResult:
        git = repo.git
        checked_out = git.branch_worktrees().get(branch)
        if repo.remote is None and checked_out is not None:
            raise LandingFailed(f"{branch} is checked out in {checked_out} and the repository has "
                                "no remote: pitstop never touches a checkout (use a bare clone, "
                                "a remote, or a url: repository)")
        with self.lane.hold(repo.name, branch):
            self.on_phase("lane")
            for _ in range(_ATTEMPTS):
                head = repo.head(branch)
                result = self._merge(repo, commit, base, head, branch, tests, changed)
                if self._publish(repo, result, head, branch, checked_out):
                    return result
            raise LandingFailed(f"{branch} kept moving while landing ({_ATTEMPTS} attempts)")

    def _merge(self, repo: RepoHandle, commit: str, base: str, head: str | None, branch: str,
               tests: CheckConfig | None, changed: ChangedFiles) -> LandResult:
        if head is None or head == base:
            return LandResult(merged=commit, target_head=head or "")
        self.on_phase("retest")
        with self.worktrees.checkout(repo.git, head, "land") as path:
            work = Git(path, identity=repo.git.identity)
            picked = work.run("cherry-pick", "--allow-empty", commit, check=False)
            if picked.code != 0:
                work.run("cherry-pick", "--abort", check=False)
                raise LandingFailed(f"the patch conflicts with the current head of {branch} "
                                    f"({head[:12]}): {picked.stderr.strip()[:300]}")
            merged = work.out("rev-parse", "HEAD")
            retest = None
            if tests is not None:
                with tempfile.TemporaryDirectory(prefix="pitstop-retest-") as scratch:
                    retest = self.runner.run_one("tests", tests, path, changed, Path(scratch))
                if not retest.passed:
                    raise LandingFailed(f"tests fail on the current head of {branch} "
                                        f"({head[:12]}) with the patch: {retest.summary}")
        return LandResult(merged=merged, target_head=head, retested=True, retest=retest,
                          notes=[f"{branch} moved from the base to {head[:12]}: re-tested"])

    def _publish(self, repo: RepoHandle, result: LandResult, head: str | None, branch: str,
                 checked_out: Path | None) -> bool:
        """Push and move the local branch; False when the target moved under us (retry)."""
        git = repo.git
        if repo.remote is not None:
            pushed = git.run("push", "--quiet", "--porcelain", repo.remote,
                             f"{result.merged}:refs/heads/{branch}", check=False, timeout=300)
            if pushed.code != 0:
                text = pushed.text + pushed.stderr
                if "rejected" in text or "non-fast-forward" in text or "fetch first" in text:
                    return False
                raise LandingFailed(f"push to {repo.remote} failed: {pushed.stderr.strip()[:300]}")
            result.pushed = True
            git.run("update-ref", repo.target_ref(branch), result.merged, check=False)
        if checked_out is not None:
            result.notes.append(f"local {branch} is checked out in {checked_out}: not moved "
                                "(pull there to update it)")
            return True
        local = git.rev_parse(f"refs/heads/{branch}")
        if local is None:
            git.run("update-ref", f"refs/heads/{branch}", result.merged, "")
            result.local_updated = True
        elif local == result.merged:
            result.local_updated = True
        elif git.run("merge-base", "--is-ancestor", local, result.merged, check=False).code == 0:
            moved = git.run("update-ref", f"refs/heads/{branch}", result.merged, local, check=False)
            if moved.code != 0:
                if repo.remote is None:
                    return False  # the branch moved under us: it is the target, try again
                result.notes.append(f"local {branch} moved meanwhile: not updated")
            else:
                result.local_updated = True
        elif repo.remote is None:
            return False
        else:
            result.notes.append(f"local {branch} has commits the remote lacks: not moved")
        return True
