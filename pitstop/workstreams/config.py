"""The shape of ``config/workstreams.yaml``, as pydantic models (validated by the catalog)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from pitstop.kernel.constants import RUN_TTL_SECONDS
from pitstop.kernel.settings import QueueName
from pitstop.workstreams.spec import ConcurrencyPolicy

__all__ = ["ID_PATTERN", "CatalogModel", "ParallelModel", "StepModel", "WorkstreamModel"]

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
Ident = Annotated[str, Field(pattern=ID_PATTERN)]
ParamDefault = str | int | float | bool | None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepModel(_Model):
    id: Ident
    kind: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(default_factory=dict)
    queue: QueueName | None = None
    timeout: float | None = Field(None, gt=0, allow_inf_nan=False)
    queue_timeout: float | None = Field(None, gt=0, le=RUN_TTL_SECONDS, allow_inf_nan=False)
    retries: int = Field(0, ge=0, le=100)
    backoff: float = Field(5.0, ge=0, le=86400, allow_inf_nan=False)
    backoff_factor: float = Field(2.0, ge=1, le=10, allow_inf_nan=False)
    max_backoff: float = Field(600.0, ge=0, le=86400, allow_inf_nan=False)
    description: str = ""


class ParallelModel(_Model):
    parallel: list[dict[str, Any]] = Field(min_length=1)


class ConcurrencyModel(_Model):
    policy: ConcurrencyPolicy = "allow"
    key: str = ""


class WorkstreamModel(_Model):
    description: str = ""
    params: dict[Ident, ParamDefault] = Field(default_factory=dict)
    timeout: float | None = Field(None, gt=0, allow_inf_nan=False)
    concurrency: ConcurrencyModel = ConcurrencyModel()
    steps: list[dict[str, Any]] = Field(min_length=1)
    on_failure: list[dict[str, Any]] = Field(default_factory=list)


class CatalogModel(_Model):
    workstreams: dict[str, dict[str, Any]] = Field(default_factory=dict)
