"""The ``alert`` step kind: a workstream raises an alert (typically in ``on_failure``).

The step publishes an event (``alert.<workstream>.<severity>`` unless it names a ``type``) with
``data.severity`` and a summary; the alert manager routes it like any other, so routes,
grouping, silences and acks apply. A redelivered step publishes once (a dedupe key per run, step
and attempt).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pitstop.bus.events import Event
from pitstop.bus.patterns import normalize_type
from pitstop.kernel.configfile import validate_field
from pitstop.kernel.constants import ALERT_STEP_DEDUPE_PREFIX, ALERTS_TTL_SECONDS, STEP_KIND_ALERT
from pitstop.kernel.errors import PitstopError
from pitstop.workstreams.steps import StepContext, StepResult, register_step_kind

__all__ = ["AlertParams", "AlertStep"]

_SEGMENT_JUNK = re.compile(r"[^a-z0-9_-]+")


class AlertParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    severity: Literal["warning", "error", "critical"] = "error"
    summary: str = Field("", max_length=2000)
    """One line for the message (templates rendered by the engine before the step runs)."""
    type: str | None = None
    """Event type to publish (default ``alert.<workstream>.<severity>``)."""
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _event_type(cls, value: str | None) -> str | None:
        return None if value is None else validate_field(normalize_type, value)


def _segment(text: str) -> str:
    return _SEGMENT_JUNK.sub("-", text.lower()).strip("-") or "workstream"


class AlertStep:
    name = STEP_KIND_ALERT
    params_model: type[BaseModel] = AlertParams

    def execute(self, ctx: StepContext) -> StepResult:
        params = ctx.params
        if not isinstance(params, AlertParams):
            return StepResult("failed", message="alert step got parameters of another kind")
        event_type = params.type or f"alert.{_segment(ctx.workstream_id)}.{params.severity}"
        key = f"{ALERT_STEP_DEDUPE_PREFIX}{ctx.run_id}:{ctx.step_id}:{ctx.attempt}"
        earlier = ctx.redis.get(key)
        if earlier is not None:
            event_id = earlier.decode() if isinstance(earlier, bytes) else str(earlier)
            return StepResult("succeeded", outputs={"event_id": event_id, "type": event_type},
                              message=f"alert {event_type} was already raised ({event_id})")
        data = ctx.redactor.redact({
            **params.data, "severity": params.severity, "summary": params.summary,
            "workstream": ctx.workstream_id, "run_id": ctx.run_id, "step": ctx.step_id})
        try:
            parent = Event.from_dict(ctx.event) if ctx.event else None
        except PitstopError:
            parent = None
        try:
            event = ctx.bus.publish(event_type, data, parent=parent,
                                    trace_id=None if parent else ctx.trace_id)
        except PitstopError as exc:
            return StepResult("failed", message=f"could not raise the alert: {exc}")
        ctx.redis.set(key, event.id, nx=True, ex=ALERTS_TTL_SECONDS)
        return StepResult("succeeded", outputs={"event_id": event.id, "type": event_type},
                          message=f"raised {params.severity} alert {event_type}")


register_step_kind(AlertStep())
