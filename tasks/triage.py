"""``triage``: the Celery shell around :class:`pitstop.triage.TriageService`.

Takes paths on the worker's machine (resolved inside the project and the allowed roots) and/or
texts sent with the message (``contents``: ``[{"name": ..., "text": ...}]``, capped by
``triage.max_input_mb``), and returns the report ``pitstop triage --json`` prints, plus the
batch id and the events published. A Redis outage before anything was recorded is retried.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from celery import Task, shared_task

from pitstop.kernel.constants import TASK_TRIAGE
from pitstop.kernel.errors import PathNotAllowed, RedisUnavailable, TriageInputError, ValidationError
from pitstop.triage import configured_service, load_triage_config, resolve_input
from workers import context


def _now() -> datetime:
    return datetime.now(UTC)


@shared_task(name=TASK_TRIAGE, bind=True, acks_late=True, max_retries=3, default_retry_delay=2,
             throws=(TriageInputError, PathNotAllowed, ValidationError))
def triage(self: Task, paths: list[str] | None = None, contents: list[dict[str, str]] | None = None,
           commit: str | None = None, record: bool = True) -> dict[str, Any]:
    settings = context.settings()
    config = load_triage_config(settings.config_dir)
    roots = [*settings.scripts.allowed_roots, *config.allowed_roots]
    redactor = context.new_redactor()
    service = configured_service(settings, config, clock=_now, redactor=redactor,
                                 client=context.redis_client(), bus=context.bus())
    files = [resolve_input(path, project_dir=settings.project_dir, roots=roots)
             for path in paths or []]
    texts = [(str(item.get("name") or f"content-{index}"), str(item.get("text", "")).encode())
             for index, item in enumerate(contents or [])]
    if not files and not texts:
        raise ValidationError("triage needs paths or contents")
    parsed = service.parse_paths(files) + service.parse_contents(texts)
    try:
        outcome = service.triage(parsed, commit=commit, record=record)
    except RedisUnavailable as exc:
        raise self.retry(exc=exc) from exc
    result: dict[str, Any] = redactor.redact(outcome.to_dict())
    return result
