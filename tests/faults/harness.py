"""What the fault tests share: a project whose one trigger launches a one-step workstream per event,
its workers, and the tallies that say whether anything was lost, stuck or done twice."""

from __future__ import annotations

import signal
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from pitstop.bus.eventbus import EventBus
from pitstop.kernel.constants import EVENT_STREAM
from pitstop.kernel.errors import RedisUnavailable
from pitstop.runs.store import RunStore
from tests.support import Proc, wait_for, worker_args
from tests.trigger_project import decisions, make_project

EVENT = "fault.tick"
WORKSTREAM = "WS-FAULT"

EMIT_WORKSTREAMS = f"""
    workstreams:
      {WORKSTREAM}:
        steps:
          - {{id: note, kind: emit, params: {{type: fault.tocked}}}}
"""
RETRYING_WORKSTREAMS = f"""
    workstreams:
      {WORKSTREAM}:
        steps:
          - {{id: note, kind: emit, retries: 3, backoff: 1, params: {{type: fault.tocked}}}}
"""
"""The same, riding out an outage: a step that could not publish is tried again."""
TRIGGERS = f"""
    triggers:
      - {{id: tick, event: {EVENT}, workstream: {WORKSTREAM}}}
"""


def ledger_workstreams(script: str, ledger: Path) -> str:
    """One ``run`` step whose script appends one line per execution to ``ledger`` (the effect
    ledger): ``<event seq> <script run id>``."""
    return f"""
    workstreams:
      {WORKSTREAM}:
        params: {{seq: "-"}}
        steps:
          - id: effect
            kind: run
            queue: default
            timeout: 60
            params: {{script: {script}, args: ["{ledger}", "{{{{ params.seq }}}}"]}}
"""


LEDGER_TRIGGERS = f"""
    triggers:
      - {{id: tick, event: {EVENT}, workstream: {WORKSTREAM}, params: {{seq: "{{{{ event.data.seq }}}}"}}}}
"""
LEDGER_SCRIPT = """\
#!/usr/bin/env bash
# The step's side effect: one line per execution, appended whole (O_APPEND, one write).
printf '%s %s\\n' "$2" "$PITSTOP_RUN_ID" >> "$1"
"""


@dataclass
class Project:
    home: Path
    env: dict[str, str]
    workers: list[Proc] = field(default_factory=list)

    @classmethod
    def create(cls, home: Path, redis_url: str, *, workstreams: str = EMIT_WORKSTREAMS,
               triggers: str = TRIGGERS, settings: str | None = None,
               extra_env: dict[str, str] | None = None) -> Project:
        kwargs = {} if settings is None else {"settings": settings}
        env = make_project(home, redis_url, triggers=triggers, workstreams=workstreams, **kwargs)
        env.update(extra_env or {})
        return cls(home, env)

    def start_worker(self, name: str, concurrency: int = 2, timeout: float = 90) -> Proc:
        proc = Proc(worker_args(name, concurrency=concurrency), self.env, self.home / f"{name}.log")
        self.workers.append(proc)
        proc.wait_for_output("ready.", timeout)
        return proc

    def start_beat(self, name: str = "beat", *, leader: bool = True, timeout: float = 60) -> Proc:
        """A Beat; with ``leader`` once it holds the singleton lock."""
        proc = Proc(["beat", "-l", "INFO"], self.env, self.home / f"{name}.log")
        self.workers.append(proc)
        proc.wait_for_output("the singleton lock" if leader else "beat: Starting", timeout)
        return proc

    def stop(self) -> None:
        for proc in self.workers:
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.workers:
            proc.stop(timeout=15)

    def decisions(self, **match: Any) -> list[dict[str, Any]]:
        return decisions(self.home, **match)


def publish_retrying(bus: EventBus, data: dict[str, Any], *, timeout: float = 30,
                     event_type: str = EVENT) -> tuple[str, int]:
    """Publish until Redis takes it; returns the accepted event's id and how many tries failed.
    A failed try may still have been stored (the reply was lost): the test counts by ``seq``."""
    failures = 0

    def attempt() -> str | None:
        nonlocal failures
        try:
            return bus.publish(event_type, data).id
        except RedisUnavailable:
            failures += 1
            return None

    event_id = wait_for(attempt, timeout, interval=0.05, message="Redis to take an event")
    return event_id, failures


def stream_event_ids(client: redis.Redis, event_type: str = EVENT) -> dict[str, dict[str, Any]]:
    """Events of ``event_type`` in the stream, by id."""
    from pitstop.bus.streamcodec import decode_event

    found: dict[str, dict[str, Any]] = {}
    last = "-"
    while True:
        batch = client.xrange(EVENT_STREAM, min=last, max="+", count=5000)
        if last != "-":
            batch = batch[1:]
        if not batch:
            return found
        for _, fields in batch:
            raw = fields.get(b"event") or fields.get("event")
            if raw is None:
                continue
            event = decode_event(raw)
            if event.type == event_type:
                found[event.id] = {"seq": event.data.get("seq"), "time": event.time}
        last = batch[-1][0].decode() if isinstance(batch[-1][0], bytes) else batch[-1][0]


def runs_of(client: redis.Redis) -> list[Any]:
    return RunStore(client).list_runs(kind="workstream", workstream_id=WORKSTREAM,
                                      limit=1_000_000)


def unfinished(client: redis.Redis) -> list[str]:
    """The runs not ended yet, each with its steps' states (for a failure message)."""
    return [f"{run.run_id} {run.status} " + ", ".join(
        f"{step_id}={step.get('status')}#{step.get('attempt')}"
        for step_id, step in run.steps.items()) for run in runs_of(client) if not run.terminal]


def runs_per_event(client: redis.Redis) -> Counter[str]:
    return Counter(str((run.event or {}).get("id")) for run in runs_of(client))
