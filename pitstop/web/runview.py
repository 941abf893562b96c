"""What the runs pages read: a page of recent runs, and a workstream run as a graph of its stages
(the steps of a parallel group side by side) with each step's state, timing and attempts.

Runs are read straight from the run index (``ZREVRANGE`` + ``MGET``), one page at a time; a
filtered page scans at most :data:`MAX_SCAN` records, skipping on their raw bytes the ones
that cannot match before parsing any.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import redis

from pitstop.bus.streamcodec import text_of
from pitstop.kernel.constants import RUN_INDEX, RUN_KEY_PREFIX, RUN_KIND_WORKSTREAM
from pitstop.kernel.errors import RedisUnavailable
from pitstop.kernel.redaction import Redactor
from pitstop.runs.store import Run
from pitstop.workstreams.kinds import child_run_id
from pitstop.workstreams.plan import StepState
from pitstop.workstreams.spec import KIND_RUN, WorkstreamSpec

__all__ = ["Graph", "RunsPage", "StepView", "graph_of", "graph_state", "recent_runs"]

MAX_SCAN = 5000
_PAGE = 200


@dataclass
class RunsPage:
    runs: list[Run]
    offset: int
    next_offset: int | None
    scanned: int
    complete: bool


def recent_runs(client: redis.Redis, *, offset: int = 0, limit: int = 50,
                status: str | None = None, kind: str | None = None,
                workstream: str | None = None, max_scan: int = MAX_SCAN) -> RunsPage:
    """Runs newest first from index position ``offset``; with filters, the next ``limit``
    matching runs among at most ``max_scan`` records."""
    needles = [f'"{name}":"{value}"'.encode() for name, value in
               (("status", status), ("kind", kind), ("workstream_id", workstream)) if value]
    found: list[Run] = []
    position = offset
    scanned = 0
    try:
        while len(found) < limit and scanned < max_scan:
            count = limit if not needles else min(_PAGE, max_scan - scanned)
            ids = [text_of(i) for i in cast("list[Any]", client.zrevrange(
                RUN_INDEX, position, position + count - 1))]
            if not ids:
                return RunsPage(found, offset, None, scanned, True)
            raws = client.mget([RUN_KEY_PREFIX + run_id for run_id in ids])
            for raw in raws:
                position += 1
                scanned += 1
                if raw is None:
                    continue
                data = raw if isinstance(raw, bytes) else str(raw).encode()
                if any(needle not in data for needle in needles):
                    continue
                try:
                    found.append(Run.model_validate_json(data))
                except ValueError:
                    continue
                if len(found) >= limit:
                    break
            if len(ids) < count:
                return RunsPage(found, offset, None, scanned, True)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise RedisUnavailable(f"Redis is unreachable while reading runs: {exc}") from exc
    more = int(client.zcard(RUN_INDEX)) > position
    return RunsPage(found, offset, position if more else None, scanned,
                    len(found) >= limit or not more)


def get_run(client: redis.Redis, run_id: str) -> Run | None:
    raw = client.get(RUN_KEY_PREFIX + run_id)
    if raw is None:
        return None
    try:
        return Run.model_validate_json(cast(bytes, raw))
    except ValueError:
        return None


def seconds_between(start: datetime | None, end: datetime | None, now: datetime) -> float | None:
    if start is None:
        return None
    return max(0.0, ((end or now) - start).total_seconds())


def took(start: datetime | None, end: datetime | None, now: datetime) -> str:
    """``1.23s`` (``4.5s…`` while still running; empty before it started)."""
    seconds = seconds_between(start, end, now)
    if seconds is None:
        return ""
    text = f"{seconds:.2f}s" if seconds < 120 else f"{seconds / 60:.1f}m"
    return text if end is not None else text + "…"


@dataclass
class StepView:
    id: str
    kind: str
    status: str
    attempt: int
    attempts: int
    """Attempts allowed (retries + 1)."""
    took: str
    queue: str
    host: str
    message: str
    exit_code: int | None
    child_run: str | None
    earlier: list[str] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        """What a live update sends for this step."""
        return {"status": self.status, "attempt": self.attempt, "attempts": self.attempts,
                "took": self.took, "host": self.host, "message": self.message,
                "exit_code": self.exit_code, "child_run": self.child_run}


@dataclass
class Stage:
    steps: list[StepView]
    parallel: bool


@dataclass
class Graph:
    main: list[Stage]
    on_failure: list[Stage]

    def steps(self) -> list[StepView]:
        return [step for stage in (*self.main, *self.on_failure) for step in stage.steps]


def _step_view(run: Run, step: dict[str, Any], now: datetime, redactor: Redactor) -> StepView:
    step_id = str(step.get("id"))
    kind = str(step.get("kind"))
    state = StepState.model_validate(run.steps.get(step_id) or {})
    status: str = state.status
    if status == "running" and state.stop_requested:
        status = "stopping"
    child: str | None = None
    if kind == KIND_RUN and state.attempt and state.status not in ("pending", "skipped", "queued"):
        child = child_run_id(run.run_id, step_id, state.attempt)
    elif state.child_run_id or state.outputs.get("run_id"):
        child = str(state.child_run_id or state.outputs.get("run_id"))
    exit_code = state.outputs.get("exit_code")
    earlier = [f"#{h.get('attempt')} {h.get('status')}" for h in state.history
               if h.get("attempt") != state.attempt]
    return StepView(
        id=step_id, kind=kind, status=status, attempt=state.attempt,
        attempts=int(step.get("retries") or 0) + 1,
        took=took(state.started_at, state.finished_at, now), queue=state.queue or "",
        host=state.host or "", message=redactor.redact_text(state.message or ""),
        exit_code=exit_code if isinstance(exit_code, int) else None, child_run=child,
        earlier=earlier)


def graph_of(run: Run, *, now: datetime, redactor: Redactor) -> Graph | None:
    """The run's stages as a graph (None for a run that is not a workstream run)."""
    spec = run.orchestration.get("spec") if run.kind == RUN_KIND_WORKSTREAM else None
    if not isinstance(spec, dict):
        return None

    def stages(part: str) -> list[Stage]:
        out = []
        for stage in spec.get(part) or []:
            steps = [_step_view(run, step, now, redactor) for step in stage
                     if isinstance(step, dict)]
            out.append(Stage(steps, parallel=len(steps) > 1))
        return out

    return Graph(main=stages("stages"), on_failure=stages("on_failure"))


def run_summary(run: Run, now: datetime) -> dict[str, Any]:
    return {"status": run.status, "terminal": run.terminal,
            "took": took(run.started_at, run.finished_at, now), "exit_code": run.exit_code,
            "error": run.error or "", "attempts": run.attempts}


def graph_state(run: Run, *, now: datetime, redactor: Redactor) -> dict[str, Any]:
    """A live update of a workstream run: its own state and each step's."""
    graph = graph_of(run, now=now, redactor=redactor)
    state = run_summary(run, now)
    state["error"] = redactor.redact_text(state["error"])
    state["finalized"] = bool(run.orchestration.get("finalized")) or run.kind != RUN_KIND_WORKSTREAM
    state["steps"] = {} if graph is None else {step.id: step.state() for step in graph.steps()}
    return state


def spec_of(run: Run) -> WorkstreamSpec | None:
    spec = run.orchestration.get("spec")
    if not isinstance(spec, dict):
        return None
    try:
        return WorkstreamSpec.from_dict(spec)
    except (KeyError, TypeError, ValueError):
        return None
