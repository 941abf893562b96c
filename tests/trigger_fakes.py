"""Small fakes of the workstream engine's API for trigger tests (same shapes as
``pitstop.workstreams.WorkstreamCatalog`` and ``Orchestrator.launch_workstream``)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


class FakeCatalog:
    """Workstreams by id, each with the event types it emits."""

    def __init__(self, emits: Mapping[str, Iterable[str]] | Iterable[str],
                 version: str = "cat-1") -> None:
        if isinstance(emits, Mapping):
            self._emits = {ws: set(types) for ws, types in emits.items()}
        else:
            self._emits = {ws: set() for ws in emits}
        self.version = version

    def ids(self) -> list[str]:
        return sorted(self._emits)

    def get(self, workstream_id: str) -> Any:
        return self._emits[workstream_id]

    def emitted_event_types(self, workstream_id: str) -> set[str]:
        base = workstream_id.lower()
        return {f"workstream.{base}.completed", f"workstream.{base}.failed",
                *self._emits[workstream_id]}


@dataclass
class FakeLaunch:
    run_id: str | None
    status: str
    reason: str = ""


@dataclass
class FakeOrchestrator:
    """Records launches; a launch key seen before is a duplicate, as the real one promises."""

    launches: list[dict[str, Any]] = field(default_factory=list)
    keys: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def launch_workstream(self, workstream_id: str, *, event: Any = None,
                          params: dict[str, Any] | None = None, trigger_id: str | None = None,
                          launch_key: str | None = None) -> FakeLaunch:
        with self.lock:
            if launch_key is not None and launch_key in self.keys:
                return FakeLaunch(self.keys[launch_key], "duplicate")
            run_id = f"run-{len(self.launches) + 1}"
            self.launches.append({"workstream": workstream_id, "event": event, "params": params,
                                  "trigger": trigger_id, "launch_key": launch_key,
                                  "run_id": run_id})
            if launch_key is not None:
                self.keys[launch_key] = run_id
            return FakeLaunch(run_id, "queued")
