"""Building the patch services from settings, for the task, the step kinds and the CLI.

(The patches package may not import ``pitstop.components``; this is its own small composition.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pitstop.kernel.constants import PATCH_WORKTREES_DIR
from pitstop.kernel.redaction import Redactor
from pitstop.patches.checks import CheckRunner
from pitstop.patches.config import PatchesConfig, load_patches_config
from pitstop.patches.validator import PatchValidator
from pitstop.patches.worktree import WorktreeManager

if TYPE_CHECKING:
    import redis

    from pitstop.bus.eventbus import EventBus
    from pitstop.kernel.settings import Settings

__all__ = ["build_validator", "prune_stale_worktrees", "worktree_manager"]


def build_validator(settings: Settings, redis_client: redis.Redis | None, *,
                    bus: EventBus | None = None, redactor: Redactor | None = None,
                    config: PatchesConfig | None = None,
                    on_phase: Callable[[str], None] | None = None) -> PatchValidator:
    redactor = redactor or Redactor.from_environ(extra_names=settings.secret_names)
    return PatchValidator(config or load_patches_config(settings.config_dir),
                          state_dir=settings.state_dir, redis_client=redis_client, bus=bus,
                          redactor=redactor, runner=CheckRunner(redactor=redactor),
                          on_phase=on_phase)


def worktree_manager(settings: Settings) -> WorktreeManager:
    return WorktreeManager(settings.state_dir / PATCH_WORKTREES_DIR)


def prune_stale_worktrees(settings: Settings) -> list[str]:
    """Remove worktrees left by processes that died (a worker SIGKILLed mid-check)."""
    return [str(path) for path in worktree_manager(settings).prune_stale()]
