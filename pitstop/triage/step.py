"""The ``triage`` workstream step: triage a file an earlier step produced (a JUnit report, a log).

```yaml
- id: triage
  kind: triage
  params:
    file: "reports/junit.xml"          # or a list; relative to the project
    commit: "{{ event.data.sha }}"     # records flaky history for this commit
```

The path must resolve (symlinks included) inside the project directory, ``scripts.allowed_roots``
or ``triage.allowed_roots``. The step succeeds when triage ran, whatever the tests did; its
outputs (``failures``, ``groups``, ``auto_fixable``, ``top_category`` …) feed later steps, and
each auto-fixable group is a ``triage.auto_fixable`` event for error recovery.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pitstop.kernel.constants import STEP_KIND_TRIAGE
from pitstop.kernel.errors import PitstopError
from pitstop.triage.config import load_triage_config
from pitstop.triage.service import configured_service, resolve_input
from pitstop.workstreams.steps import StepContext, StepResult, register_step_kind

MAX_STEP_FILES = 50


class TriageParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str | list[str] = Field(..., description="file(s) to triage, relative to the project")
    commit: str | None = None
    record: bool = True
    """Record flaky history (with ``commit``) and publish the ``triage.*`` events."""

    @field_validator("file")
    @classmethod
    def _some_file(cls, value: str | list[str]) -> str | list[str]:
        files = [value] if isinstance(value, str) else value
        if not files or any(not item.strip() for item in files):
            raise ValueError("must name at least one file")
        if len(files) > MAX_STEP_FILES:
            raise ValueError(f"at most {MAX_STEP_FILES} files")
        return value

    def files(self) -> list[str]:
        return [self.file] if isinstance(self.file, str) else list(self.file)


class TriageStep:
    name = STEP_KIND_TRIAGE
    params_model: type[BaseModel] = TriageParams

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.clock = clock or (lambda: datetime.now(UTC))

    def execute(self, ctx: StepContext) -> StepResult:
        params = ctx.params
        if not isinstance(params, TriageParams):
            params = TriageParams.model_validate(params.model_dump())
        settings = ctx.settings
        try:
            config = load_triage_config(settings.config_dir)
            roots = [*settings.scripts.allowed_roots, *config.allowed_roots]
            paths = [resolve_input(file, project_dir=settings.project_dir, roots=roots,
                                   refused=[settings.state_dir])
                     for file in params.files()]
            service = configured_service(settings, config, clock=self.clock,
                                         redactor=ctx.redactor, client=ctx.redis, bus=ctx.bus)
            outcome = service.triage(service.parse_paths(paths), commit=params.commit,
                                     record=params.record)
        except PitstopError as exc:
            return StepResult("failed", message=f"triage: {exc}")
        report = outcome.report
        summary = report.summary()
        first = report.groups[0] if report.groups else None
        outputs = {
            "exit_code": 0, "batch_id": outcome.batch_id, "failures": report.failures,
            "groups": len(report.groups),
            "auto_fixable": sum(1 for group in report.groups if group.auto_fixable),
            "top_category": str(first.category) if first else None,
            "top_fingerprint": first.fingerprint if first else None,
            "by_category": summary["by_category"], "flaky": outcome.newly_flaky,
        }
        message = (f"{report.failures} failures in {len(report.groups)} groups"
                   + (f"; first: {first.category} ({first.count})" if first else ""))
        return StepResult("succeeded", outputs=outputs, message=message)


TRIAGE_STEP = register_step_kind(TriageStep())
