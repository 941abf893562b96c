"""The step kinds of the patches component: ``fix_lint`` and ``validate_patch``.

Imported by name from :data:`pitstop.workstreams.steps.BUILTIN_STEP_MODULES`; importing it
registers both. The error-recovery workstream (``config/workstreams.yaml``) chains them: a
``triage.auto_fixable`` event → ``fix_lint`` (a diff) → ``validate_patch`` (land, PR, or review).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from pitstop.kernel.constants import PATCH_WORKTREES_DIR
from pitstop.kernel.errors import PatchError, ValidationError
from pitstop.kernel.settings import Settings
from pitstop.patches.checks import CheckRunner
from pitstop.patches.config import load_patches_config
from pitstop.patches.fixer import LintFixer
from pitstop.patches.service import build_validator
from pitstop.patches.validator import PatchRequest
from pitstop.patches.worktree import WorktreeManager
from pitstop.workstreams.steps import StepContext, StepResult, register_step_kind

__all__ = ["FixLintParams", "FixLintStep", "ValidatePatchParams", "ValidatePatchStep"]


class FixLintParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repo: str = Field(min_length=1)
    """A repository declared in config/patches.yaml (name or path)."""
    ref: str | None = None
    """Where to fix (default: the repository's target branch)."""


def _patches_queue(settings: Settings) -> str:
    """Where patch steps run: the workers of ``config/patches.yaml``'s queue have the repos."""
    return load_patches_config(settings.config_dir).queue


class FixLintStep:
    name = "fix_lint"
    params_model: type[BaseModel] = FixLintParams

    def default_queue(self, settings: Settings) -> str:
        return _patches_queue(settings)

    def execute(self, ctx: StepContext) -> StepResult:
        params = ctx.params
        assert isinstance(params, FixLintParams)  # noqa: S101 - the engine validated it  # nosec B101 # type narrowing
        validator = build_validator(ctx.settings, ctx.redis, bus=ctx.bus, redactor=ctx.redactor)
        try:
            repo = validator.registry.resolve(params.repo)
            ref = params.ref or repo.target_ref(repo.default_target)
            if params.ref is None:
                repo.fetch(repo.default_target)
            fixer = LintFixer(WorktreeManager(ctx.settings.state_dir / PATCH_WORKTREES_DIR),
                              CheckRunner(redactor=ctx.redactor),
                              timeout=ctx.timeout or 300.0)
            fixed = fixer.fix(repo.git, ref)
        except (PatchError, ValidationError) as exc:
            return StepResult("failed", message=str(exc))
        message = (f"ruff fixed {len(fixed.files)} file(s)" if fixed.has_changes
                   else "nothing to fix")
        return StepResult("succeeded", outputs={**fixed.to_dict(), "repo": repo.name,
                                                "exit_code": 0}, message=message)


class ValidatePatchParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    repo: str = Field(min_length=1)
    patch: str
    """The unified diff (typically ``{{ steps.fix.patch }}``)."""
    base: str | None = None
    target: str | None = None
    dry_run: bool = False
    title: str | None = None


class ValidatePatchStep:
    name = "validate_patch"
    params_model: type[BaseModel] = ValidatePatchParams

    def default_queue(self, settings: Settings) -> str:
        return _patches_queue(settings)

    def execute(self, ctx: StepContext) -> StepResult:
        params = ctx.params
        assert isinstance(params, ValidatePatchParams)  # noqa: S101 - the engine validated it  # nosec B101 # type narrowing
        if not params.patch.strip():
            return StepResult("succeeded", outputs={"result": "nothing_to_do", "exit_code": 0},
                              message="empty patch: nothing to validate")
        validator = build_validator(ctx.settings, ctx.redis, bus=ctx.bus, redactor=ctx.redactor)
        request = PatchRequest(repo=params.repo,
                               patch=params.patch.encode("utf-8", errors="surrogateescape"),
                               base=params.base, target=params.target, dry_run=params.dry_run,
                               title=params.title,
                               source=f"workstream:{ctx.workstream_id}/{ctx.step_id}",
                               validation_id=None, trace_id=ctx.trace_id)
        try:
            outcome = validator.validate(request)
        except (PatchError, ValidationError) as exc:
            return StepResult("failed", message=str(exc))
        outputs = {"validation_id": outcome.validation_id, "decision": outcome.decision,
                   "result": outcome.result, "score": outcome.score,
                   "merged": outcome.landing.get("merged"), "pr": outcome.landing.get("pr"),
                   "review_id": outcome.landing.get("review_id"),
                   "exit_code": 0 if outcome.result != "rejected" else 1}
        return StepResult("failed" if outcome.result == "rejected" else "succeeded",
                          outputs=outputs,
                          message=f"{outcome.result}: {outcome.reasons[0] if outcome.reasons else ''}")


register_step_kind(FixLintStep())
register_step_kind(ValidatePatchStep())
