"""``PatchValidator``: one patch from diff to decision, and the decision carried out.

safety (read-only) → fresh worktree at the base → apply → checks in parallel → score and gates
→ decision → auto-merge through the merge lane, a pull request, or the review queue. The worktree
is removed whatever happens. Every outcome appends one line to ``.state/patch_decisions.jsonl``
(what is needed to replay it: patch hash, base sha, per-check results and durations, score,
gates, decision, method) and publishes ``patch.merged``, ``patch.pr_opened``,
``patch.review_queued`` or ``patch.rejected``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pitstop.kernel.constants import (
    EVENT_PATCH_MERGED,
    EVENT_PATCH_PR_OPENED,
    EVENT_PATCH_REJECTED,
    EVENT_PATCH_REVIEW_QUEUED,
    LOG_PATCH_DECISIONS,
    PATCH_BRANCH_PREFIX,
    PATCH_MAX_BYTES,
    PATCH_MIRRORS_DIR,
    PATCH_WORKTREES_DIR,
)
from pitstop.kernel.errors import LandingFailed, PatchError, ValidationError
from pitstop.kernel.ids import new_id, utc_iso
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.statelog import StateLog
from pitstop.patches.applier import PatchApplier
from pitstop.patches.checks import ChangedFiles, CheckResult, CheckRunner
from pitstop.patches.config import PatchesConfig
from pitstop.patches.git import check_git_version
from pitstop.patches.github import GitHubClient
from pitstop.patches.landing import Lander, MergeLane
from pitstop.patches.repos import RepoHandle, RepoRegistry, github_repository
from pitstop.patches.review import ReviewQueue
from pitstop.patches.safety import PatchSafety, PathRules
from pitstop.patches.scoring import assess
from pitstop.patches.worktree import WorktreeManager

if TYPE_CHECKING:
    import httpx
    import redis

    from pitstop.bus.eventbus import EventBus

__all__ = ["PatchOutcome", "PatchRequest", "PatchValidator", "check_table"]

log = logging.getLogger(__name__)

EVENT_OF = {"merged": EVENT_PATCH_MERGED, "pr_opened": EVENT_PATCH_PR_OPENED,
            "review_queued": EVENT_PATCH_REVIEW_QUEUED, "rejected": EVENT_PATCH_REJECTED}


@dataclass
class PatchRequest:
    repo: str
    patch: bytes
    base: str | None = None
    target: str | None = None
    dry_run: bool = False
    title: str | None = None
    source: str = "cli"
    validation_id: str | None = None
    trace_id: str | None = None


@dataclass
class PatchOutcome:
    validation_id: str
    repo: str
    target: str
    base: str
    base_sha: str
    patch_hash: str
    source: str
    dry_run: bool
    decision: str = "rejected"
    """auto_merge | pr | review | rejected: what the score and gates say."""
    result: str = "rejected"
    """What happened: merged | pr_opened | review_queued | rejected (or would_* when dry)."""
    method: str | None = None
    files: list[str] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)
    score: float | None = None
    gates: dict[str, bool] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)
    protected: dict[str, str] = field(default_factory=dict)
    conflicts: list[str] = field(default_factory=list)
    commit: str | None = None
    landing: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    duration: float = 0.0
    checks_wall_time: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["checks"] = [check.to_dict() for check in self.checks]
        out["duration"] = round(self.duration, 3)
        out["checks_wall_time"] = round(self.checks_wall_time, 3)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PatchOutcome:
        known = set(cls.__dataclass_fields__)
        values = {key: value for key, value in data.items() if key in known}
        values["checks"] = [CheckResult.from_dict(c) for c in data.get("checks", [])]
        return cls(**values)

    @property
    def accepted(self) -> bool:
        return self.result in ("merged", "pr_opened")


def check_table(checks: list[CheckResult]) -> list[tuple[str, str, str, str, str]]:
    """Rows (check, result, duration, weight, summary) for the CLI and the PR body."""
    return [(c.name, c.status, f"{c.duration:.2f}s", f"{c.weight:g}", c.summary) for c in checks]


class PatchValidator:
    """Validates patches and carries out the decisions; one per process is enough."""

    _git_checked = False

    def __init__(self, config: PatchesConfig, *, state_dir: Path, redis_client: redis.Redis | None,
                 bus: EventBus | None = None, redactor: Redactor | None = None,
                 runner: CheckRunner | None = None, clock: Callable[[], datetime] | None = None,
                 environ: Mapping[str, str] | None = None,
                 github_transport: httpx.BaseTransport | None = None,
                 on_phase: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.state_dir = Path(state_dir)
        self.redis = redis_client
        self.bus = bus
        self.redactor = redactor or Redactor()
        self.clock = clock or (lambda: datetime.now(UTC))
        self.environ = os.environ if environ is None else environ
        self.runner = runner or CheckRunner(redactor=self.redactor)
        self.github_transport = github_transport
        self.on_phase = on_phase or (lambda phase: None)
        self.registry = RepoRegistry(config, self.state_dir / PATCH_MIRRORS_DIR)
        self.worktrees = WorktreeManager(self.state_dir / PATCH_WORKTREES_DIR)
        self.log = StateLog(LOG_PATCH_DECISIONS, self.state_dir, redactor=self.redactor,
                            clock=self.clock)

    # --- services that need Redis ----------------------------------------------------------------

    def _redis(self) -> redis.Redis:
        if self.redis is None:
            raise ValidationError("landing and the review queue need Redis (none configured)")
        return self.redis

    def reviews(self) -> ReviewQueue:
        return ReviewQueue(self._redis(), clock=self.clock)

    def lander(self) -> Lander:
        lane = MergeLane(self._redis(), wait=self.config.lane_wait_seconds)
        return Lander(lane, self.worktrees, self.runner, on_phase=self.on_phase)

    # --- validation ------------------------------------------------------------------------------

    def validate(self, request: PatchRequest) -> PatchOutcome:
        if not PatchValidator._git_checked:
            check_git_version()
            PatchValidator._git_checked = True
        started = time.monotonic()
        now = self.clock()
        if len(request.patch) > PATCH_MAX_BYTES:
            raise ValidationError(f"the patch is {len(request.patch)} bytes: over the "
                                  f"{PATCH_MAX_BYTES}-byte cap")
        repo = self.registry.resolve(request.repo)
        target = request.target or repo.default_target
        self.on_phase("fetch")
        head = repo.head(target)
        base = request.base or target
        base_sha = repo.git.rev_parse(request.base) if request.base else head
        if base_sha is None and request.base and repo.remote:
            with contextlib.suppress(PatchError):
                repo.fetch(request.base)
            base_sha = repo.git.rev_parse(repo.target_ref(request.base))
        if base_sha is None:
            raise ValidationError(f"repository {repo.name} has no commit {base!r}")
        outcome = PatchOutcome(
            validation_id=request.validation_id or new_id(int(now.timestamp() * 1000)),
            repo=repo.name, target=target, base=base, base_sha=base_sha,
            patch_hash=hashlib.sha256(request.patch).hexdigest(), source=request.source,
            dry_run=request.dry_run, started_at=utc_iso(now))
        try:
            self._validate(request, repo, outcome)
        except BaseException as exc:
            # git failing, Redis gone, a time limit: recorded for the replay, then raised
            outcome.result = "error"
            outcome.reasons.append(f"{type(exc).__name__}: {exc}")
            outcome.duration = time.monotonic() - started
            self.log.append({"event": "error", **outcome.to_dict()})
            raise
        outcome.duration = time.monotonic() - started
        self._record(outcome, request.trace_id)
        return outcome

    def _validate(self, request: PatchRequest, repo: RepoHandle, outcome: PatchOutcome) -> None:
        settings = repo.settings
        safety = PatchSafety(PathRules(settings.protected), binary_cap=settings.binary_cap_bytes)
        applier = PatchApplier(safety)
        with tempfile.TemporaryDirectory(prefix="pitstop-patch-") as scratch_dir:
            scratch = Path(scratch_dir)
            patch_file = scratch / "patch.diff"
            patch_file.write_bytes(request.patch)
            self.on_phase("safety")
            report = applier.inspect(request.patch, repo.git, outcome.base_sha, patch_file)
            outcome.files = report.parsed.paths
            outcome.protected = report.protected
            if not report.safe:
                outcome.refusals = report.refusals
                outcome.reasons = ["refused before any write: " + report.refusals[0]]
                return
            title = request.title or f"pitstop: patch {outcome.patch_hash[:12]}"
            with self.worktrees.checkout(repo.git, outcome.base_sha) as worktree:
                self.on_phase("apply")
                applied = applier.apply(worktree, patch_file, report.parsed, title,
                                        settings.committer)
                if not applied.applied:
                    outcome.conflicts = applied.conflicts
                    outcome.reasons = ["the patch does not apply: " + "; ".join(applied.conflicts[:5])]
                    return
                outcome.method, outcome.commit = applied.method, applied.commit
                changed = self._changed(report.parsed.added_lines(), worktree, outcome.files)
                self.on_phase("checks")
                checks_started = time.monotonic()
                outcome.checks = self.runner.run_all(settings.checks, worktree, changed,
                                                     scratch / "checks")
                outcome.checks_wall_time = time.monotonic() - checks_started
            assessment = assess(outcome.checks, method=applied.method or "", protected=report.protected,
                                auto_merge_at=settings.auto_merge_at, pr_at=settings.pr_at,
                                three_way_penalty=settings.three_way_penalty)
            outcome.score, outcome.gates = assessment.score, assessment.gates
            outcome.decision, outcome.reasons = assessment.decision, assessment.reasons
            self.on_phase("decide")
            if request.dry_run:
                outcome.result = {"auto_merge": "would_merge", "pr": "would_open_pr",
                                  "review": "would_queue_review"}[assessment.decision]
                return
            assert applied.commit is not None  # noqa: S101 - applied() says so  # nosec B101 # type narrowing
            branch = f"{PATCH_BRANCH_PREFIX}{outcome.validation_id[-12:]}"
            repo.git.run("update-ref", f"refs/heads/{branch}", applied.commit)
            outcome.landing["branch"] = branch
            self._carry_out(repo, outcome, changed, title)

    @staticmethod
    def _changed(added: dict[str, list[int]], worktree: Path, files: list[str]) -> ChangedFiles:
        present = [path for path in files if (worktree / path).is_file()]
        return ChangedFiles(present, {p: lines for p, lines in added.items() if p in present})

    # --- carrying the decision out ------------------------------------------------------------

    def _carry_out(self, repo: RepoHandle, outcome: PatchOutcome, changed: ChangedFiles,
                   title: str) -> None:
        assert outcome.commit is not None  # noqa: S101  # nosec B101 # type narrowing
        branch = outcome.landing["branch"]
        if outcome.decision == "auto_merge":
            self.on_phase("landing")
            try:
                landed = self.lander().land(repo, outcome.commit, outcome.base_sha, outcome.target,
                                            repo.settings.checks.get("tests"), changed)
            except LandingFailed as exc:
                outcome.reasons.append(f"auto-merge stopped: {exc}")
                self._queue(repo, outcome, title)
                return
            outcome.landing.update(landed.to_dict())
            outcome.result = "merged"
            repo.git.run("update-ref", "-d", f"refs/heads/{branch}", check=False)
            return
        if outcome.decision == "pr":
            try:
                self._pull_request(repo, outcome, title)
            except PatchError as exc:
                outcome.reasons.append(f"pull request not opened: {exc}")
                self._queue(repo, outcome, title)
            return
        self._queue(repo, outcome, title)

    def _pull_request(self, repo: RepoHandle, outcome: PatchOutcome, title: str) -> None:
        if repo.remote is None:
            raise PatchError("the repository has no remote to push a branch to")
        branch = outcome.landing["branch"]
        pushed = repo.git.run("push", "--quiet", repo.remote,
                              f"{outcome.commit}:refs/heads/{branch}", check=False, timeout=300)
        if pushed.code != 0:
            raise PatchError(f"push of {branch} failed: {pushed.stderr.strip()[:300]}")
        outcome.landing["pushed_branch"] = True
        outcome.result = "pr_opened"
        github = repo.settings.github
        token = self.environ.get(github.token_env)
        if not token:
            outcome.landing["pr"] = None
            outcome.reasons.append(f"no GitHub token in {github.token_env}: branch {branch} "
                                   f"pushed to {repo.remote}; open the pull request by hand")
            return
        repository = github.repository or github_repository(
            repo.git.out("remote", "get-url", repo.remote))
        if repository is None:
            raise PatchError("cannot tell the GitHub repository (set github.repository)")
        client = GitHubClient(github, token, transport=self.github_transport)
        try:
            pr = client.open_pull_request(repository, head=branch, base=outcome.target,
                                          title=title, body=self._pr_body(outcome))
        finally:
            client.close()
        outcome.landing["pr"] = pr.to_dict()
        outcome.reasons.extend(pr.notes)

    @staticmethod
    def _pr_body(outcome: PatchOutcome) -> str:
        rows = ["| check | result | duration | weight | summary |", "| --- | --- | --- | --- | --- |"]
        rows += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                 for row in check_table(outcome.checks)]
        reasons = "\n".join(f"- {reason}" for reason in outcome.reasons)
        return (f"Opened by pitstop: confidence **{outcome.score:.1f}%** "
                f"(applied with `{outcome.method}`, base `{outcome.base_sha[:12]}`, patch "
                f"`{outcome.patch_hash[:12]}`).\n\n" + "\n".join(rows) + f"\n\n{reasons}\n")

    def _queue(self, repo: RepoHandle, outcome: PatchOutcome, title: str) -> None:
        doc = self.reviews().add({
            "review_id": outcome.validation_id, "repo": repo.name, "target": outcome.target,
            "base_sha": outcome.base_sha, "commit": outcome.commit,
            "branch": outcome.landing.get("branch"), "title": title,
            "patch_hash": outcome.patch_hash, "score": outcome.score, "gates": outcome.gates,
            "reasons": outcome.reasons, "files": outcome.files,
            "checks": [c.to_dict() for c in outcome.checks], "source": outcome.source,
        })
        outcome.landing["review_id"] = doc["review_id"]
        outcome.result = "review_queued"

    # --- review decisions -------------------------------------------------------------------

    def approve(self, review_id: str, *, by: str) -> dict[str, Any]:
        """Land a reviewed patch through its target's merge lane."""
        queue = self.reviews()
        doc = queue.transition(review_id, allowed_from=("pending",), status="approved", by=by)
        try:
            repo = self.registry.resolve(doc["repo"])
            added: dict[str, list[int]] = {path: [] for path in doc.get("files", [])}
            changed = ChangedFiles(list(doc.get("files", [])), added)
            landed = self.lander().land(repo, doc["commit"], doc["base_sha"], doc["target"],
                                        repo.settings.checks.get("tests"), changed)
        except (PatchError, ValidationError) as exc:
            queue.transition(doc["review_id"], allowed_from=("approved",), status="pending",
                             by=by, reason=f"approval could not land: {exc}")
            raise
        if doc.get("branch"):
            repo.git.run("update-ref", "-d", f"refs/heads/{doc['branch']}", check=False)
        done = queue.transition(doc["review_id"], allowed_from=("approved",), status="landed",
                                by=by, extra={"landing": landed.to_dict()})
        self._emit(EVENT_PATCH_MERGED, {"validation_id": doc["review_id"], "repo": doc["repo"],
                                        "target": doc["target"], "merged": landed.merged,
                                        "approved_by": by}, None)
        self.log.append({"event": "review_approved", "review_id": doc["review_id"],
                         "by": by, "landing": landed.to_dict()})
        return done

    def reject(self, review_id: str, *, reason: str, by: str) -> dict[str, Any]:
        if not reason.strip():
            raise ValidationError("a rejection needs a --reason")
        queue = self.reviews()
        doc = queue.transition(review_id, allowed_from=("pending",), status="rejected", by=by,
                               reason=reason)
        if doc.get("branch"):
            try:
                repo = self.registry.resolve(doc["repo"])
                repo.git.run("update-ref", "-d", f"refs/heads/{doc['branch']}", check=False)
            except (PatchError, ValidationError) as exc:
                log.warning("review %s: branch %s not deleted: %s", doc["review_id"],
                            doc["branch"], exc)
        self._emit(EVENT_PATCH_REJECTED, {"validation_id": doc["review_id"], "repo": doc["repo"],
                                          "target": doc["target"], "reason": reason,
                                          "rejected_by": by}, None)
        self.log.append({"event": "review_rejected", "review_id": doc["review_id"], "by": by,
                         "reason": reason})
        return doc

    # --- records --------------------------------------------------------------------------------

    def _record(self, outcome: PatchOutcome, trace_id: str | None) -> None:
        self.log.append({"event": "decision", **outcome.to_dict()})
        if outcome.dry_run:
            return
        data = {"validation_id": outcome.validation_id, "repo": outcome.repo,
                "target": outcome.target, "decision": outcome.decision, "score": outcome.score,
                "patch_hash": outcome.patch_hash, "base_sha": outcome.base_sha,
                "method": outcome.method, "reasons": outcome.reasons[:5],
                "merged": outcome.landing.get("merged"),
                "pr": outcome.landing.get("pr"), "review_id": outcome.landing.get("review_id")}
        self._emit(EVENT_OF[outcome.result], data, trace_id)

    def _emit(self, event_type: str, data: dict[str, Any], trace_id: str | None) -> None:
        if self.bus is None:
            return
        try:
            self.bus.publish(event_type, self.redactor.redact(data), trace_id=trace_id)
        except Exception:
            log.exception("could not publish %s", event_type)
