"""Automated error recovery: validate patches in worktrees, score them, land, open a PR or queue.

See docs/patches.md. No Celery here: ``tasks/patches.py`` is the task shell and
``pitstop.patches.steps`` the workstream step kinds (imported by name, not from here).
"""

from pitstop.patches.applier import ApplyOutcome, PatchApplier
from pitstop.patches.checks import ChangedFiles, CheckResult, CheckRunner
from pitstop.patches.config import PatchesConfig, load_patches_config
from pitstop.patches.diff import ParsedDiff, parse_diff
from pitstop.patches.fixer import FixResult, LintFixer
from pitstop.patches.git import Git, check_git_version
from pitstop.patches.landing import Lander, MergeLane
from pitstop.patches.review import ReviewQueue
from pitstop.patches.safety import PatchSafety, PathRules, SafetyReport
from pitstop.patches.scoring import Assessment, assess
from pitstop.patches.service import build_validator, prune_stale_worktrees, worktree_manager
from pitstop.patches.validator import PatchOutcome, PatchRequest, PatchValidator, check_table
from pitstop.patches.worktree import WorktreeManager

__all__ = [
    "ApplyOutcome", "Assessment", "ChangedFiles", "CheckResult", "CheckRunner", "FixResult",
    "Git", "Lander", "LintFixer", "MergeLane", "ParsedDiff", "PatchApplier", "PatchOutcome",
    "PatchRequest", "PatchSafety", "PatchValidator", "PatchesConfig", "PathRules",
    "ReviewQueue", "SafetyReport", "WorktreeManager", "assess", "build_validator",
    "check_git_version", "check_table", "load_patches_config", "parse_diff",
    "prune_stale_worktrees", "worktree_manager",
]
