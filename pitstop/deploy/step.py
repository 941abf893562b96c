"""The ``deploy`` workstream step: deploy a version built by earlier steps.

```yaml
- id: deploy
  kind: deploy
  timeout: 3600                          # includes waiting for an approval
  params:
    environment: staging
    version: "{{ event.data.sha }}"      # or "{{ steps.build.version }}"
```

The step runs the whole deployment on the worker that takes it (deploy command, smoke checks,
automatic rollback) and succeeds only when the deployment ``succeeded``; ``rolled_back``,
``failed`` and ``critical`` fail it, so ``on_failure`` steps (an ``alert``) run. An environment
that needs an approval waits for it within the step's timeout (``pitstop deploy approve ID``);
a cancelled run stops waiting. Outputs: ``deployment_id``, ``status``, ``version``,
``previous_version``, ``rolled_back_to``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

from pitstop.deploy.config import check_environment_name, check_version
from pitstop.deploy.runtime import configured_deployer
from pitstop.kernel.configfile import validate_field
from pitstop.kernel.constants import DEPLOY_QUEUE, STEP_KIND_DEPLOY
from pitstop.kernel.errors import PitstopError
from pitstop.kernel.settings import Settings
from pitstop.workstreams.steps import StepContext, StepResult, register_step_kind

__all__ = ["DeployParams", "DeployStep"]


class DeployParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    environment: str
    version: str
    by: str | None = None
    """Who the deployment is recorded as requested by (default ``workstream:<id>``)."""

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: str) -> str:
        if "{{" in value:
            return value  # rendered before the step runs, checked then
        return validate_field(check_environment_name, value)

    @field_validator("version")
    @classmethod
    def _version(cls, value: str) -> str:
        if "{{" in value:
            return value
        return validate_field(check_version, value)


class DeployStep:
    name = STEP_KIND_DEPLOY
    params_model: type[BaseModel] = DeployParams

    def default_queue(self, settings: Settings) -> str:
        return DEPLOY_QUEUE

    def execute(self, ctx: StepContext) -> StepResult:
        params = ctx.params
        if not isinstance(params, DeployParams):
            params = DeployParams.model_validate(params.model_dump())
        trigger = f"workstream:{ctx.workstream_id}/{ctx.run_id}/{ctx.step_id}"
        try:
            deployer = configured_deployer(ctx.settings, ctx.redis, ctx.bus, ctx.redactor)
            record = deployer.request(params.environment, params.version,
                                      by=params.by or f"workstream:{ctx.workstream_id}",
                                      trigger=trigger, trace_id=ctx.trace_id)
            if record["status"] == "awaiting_approval":
                record = deployer.wait_for_approval(record["id"], cancelled=ctx.cancelled)
                if record["status"] == "awaiting_approval":  # cancelled while waiting
                    record = deployer.withdraw(record["id"], reason="its workstream run was "
                                               "cancelled")
            else:
                record = deployer.execute(record["id"])
        except PitstopError as exc:
            return StepResult("failed", message=f"deploy: {exc}")
        outputs = {key: record.get(key) for key in (
            "status", "version", "previous_version", "rolled_back_to")}
        outputs["deployment_id"] = record["id"]
        outputs["exit_code"] = 0 if record["status"] == "succeeded" else 1
        message = (f"deployment {record['id']} of {record['version']} to {record['env']}: "
                   f"{record['status']}")
        if record.get("reason") or record.get("error"):
            message += f" ({record.get('error') or record.get('reason')})"
        return StepResult("succeeded" if record["status"] == "succeeded" else "failed",
                          outputs=outputs, message=message)


register_step_kind(DeployStep())
