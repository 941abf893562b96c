"""Routing decisions: one record per (event, matching rule), appended to
``.state/trigger_executions.jsonl`` whatever the outcome."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Literal, Protocol

__all__ = ["DECISIONS", "Decision", "LaunchOutcome", "Launcher"]

DecisionKind = Literal[
    "launched",          # the workstream was launched (run_id)
    "deduped",           # this (event, rule) launched before, or the rule's dedupe key is taken
    "throttled",         # over the rule's throttle
    "debounced",         # held: the burst launches after its quiet period, with its last event
    "disabled",          # the rule is disabled (in the file, or at run time)
    "condition_false",   # a condition did not hold (reason names it)
    "hop_limit",         # the event is too deep in its chain: a loop is stopped
    "skipped",           # the orchestrator declined (concurrency policy …; reason says)
    "failed",            # a template or the launch failed (reason says)
    "missed",            # schedule slots passed while nothing fired them (catch-up policy)
    "dropped",           # a pending debounced launch whose rule is gone
    "would_launch",      # dry run: it would launch
]
DECISIONS: tuple[str, ...] = DecisionKind.__args__  # type: ignore[attr-defined]
WORKER = f"{socket.gethostname()}/{os.getpid()}"


class LaunchOutcome(Protocol):
    run_id: str | None
    status: str
    reason: str


class Launcher(Protocol):
    """What the router needs of ``pitstop.workstreams.Orchestrator``."""

    def launch_workstream(self, workstream_id: str, *, event: Any = None,
                          params: dict[str, Any] | None = None, trigger_id: str | None = None,
                          launch_key: str | None = None) -> Any: ...


@dataclass
class Decision:
    decision: str
    rule: str
    workstream: str
    config_version: str
    event_id: str | None = None
    event_type: str | None = None
    trace_id: str | None = None
    hops: int | None = None
    run_id: str | None = None
    status: str | None = None
    reason: str = ""
    slot: str | None = None

    @property
    def fired(self) -> bool:
        return self.decision in ("launched", "would_launch")

    def to_record(self) -> dict[str, Any]:
        record = {key: value for key, value in self.__dict__.items()
                  if value is not None and value != ""}
        record["worker"] = WORKER
        return record
