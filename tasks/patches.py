"""``validate_patch``: the Celery shell around :class:`pitstop.patches.PatchValidator`.

It maps a message to a :class:`PatchRequest` and the outcome to a JSON result; the logic lives in
:mod:`pitstop.patches`. When a worker starts, git's version is checked (2.39.2 or later). Then,
and each time a pool process starts (replacing one that died), worktrees left by processes that
no longer exist are pruned: a worker SIGKILLed mid-check leaves none behind for long.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init, worker_ready

from pitstop.kernel.constants import PATCH_QUEUE, TASK_VALIDATE_PATCH
from pitstop.kernel.errors import PitstopError
from pitstop.patches.git import check_git_version
from pitstop.patches.service import build_validator, prune_stale_worktrees
from pitstop.patches.validator import PatchRequest
from workers import context

log = logging.getLogger(__name__)


# acks_late without reject_on_worker_lost: a patch whose checks kill the worker is reported lost
# once, not redelivered to kill the next one.
@shared_task(name=TASK_VALIDATE_PATCH, acks_late=True, reject_on_worker_lost=False,
             queue=PATCH_QUEUE)
def validate_patch(repo: str, patch: str, base: str | None = None, target: str | None = None,
                   dry_run: bool = False, title: str | None = None, source: str = "task",
                   validation_id: str | None = None,
                   trace_id: str | None = None) -> dict[str, Any]:
    """Validate ``patch`` (a unified diff; bytes that are not UTF-8 travel as surrogate escapes)
    for ``repo`` and carry the decision out; returns the recorded outcome."""
    validator = build_validator(context.settings(), context.redis_client(), bus=context.bus(),
                                redactor=context.new_redactor())
    request = PatchRequest(repo=repo, patch=patch.encode("utf-8", errors="surrogateescape"),
                           base=base, target=target, dry_run=dry_run, title=title, source=source,
                           validation_id=validation_id, trace_id=trace_id)
    return validator.validate(request).to_dict()


def prune_worktrees() -> list[str]:
    pruned = prune_stale_worktrees(context.settings())
    if pruned:
        log.warning("pruned %d stale patch worktree(s): %s", len(pruned), ", ".join(pruned))
    return pruned


def _prune_logged() -> None:
    try:
        prune_worktrees()
    except Exception:
        log.exception("pruning stale patch worktrees failed")


@worker_ready.connect
def _prune_on_ready(**_: Any) -> None:
    try:
        check_git_version()
    except PitstopError as exc:  # the worker still runs other tasks; validations will refuse
        log.error("patch validation is unavailable on this worker: %s", exc)
    threading.Thread(target=_prune_logged, name="pitstop-worktree-prune", daemon=True).start()


@worker_process_init.connect
def _prune_on_process_start(**_: Any) -> None:
    threading.Thread(target=_prune_logged, name="pitstop-worktree-prune", daemon=True).start()
