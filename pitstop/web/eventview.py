"""What the events pages read: history (bounded scans of the stream), one event by id, and the
trace of an event as a tree of events, trigger decisions and runs.

Every scan of the stream is bounded (entries read, not events matched), so a rare pattern over
100,000 stored events costs a known amount; a page says when it stopped early. Entries that
cannot match are skipped on their raw bytes before being decoded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis

from pitstop.bus.eventbus import EventBus, stream_id_at
from pitstop.bus.events import Event
from pitstop.bus.patterns import Pattern, compile_pattern
from pitstop.bus.streamcodec import EVENT_FIELD, decode_entry, text_of, unavailable
from pitstop.kernel.constants import RUN_KEY_PREFIX
from pitstop.kernel.errors import ValidationError
from pitstop.runs.store import Run
from pitstop.workstreams.kinds import child_run_id
from pitstop.workstreams.spec import KIND_RUN

__all__ = ["EventPage", "TraceNode", "event_ms", "find_event", "load_runs", "recent_events",
           "run_ids_of", "trace_events", "trace_tree"]

_PAGE = 500
MAX_SCAN = 30_000
"""Stream entries a history page reads at most."""
TRACE_SCAN = 20_000
"""Stream entries read forward from a trace's root to find its events."""
TRACE_MAX_EVENTS = 500
TRACE_MAX_RUNS = 200


@dataclass
class EventPage:
    events: list[tuple[str, Event]]
    """(stream id, event), newest first."""
    scanned: int
    complete: bool
    """False when the scan stopped at :data:`MAX_SCAN` entries before reaching ``since``."""
    skipped: int = 0
    """Entries that were not events."""


_FILTER = """
local entries = redis.call(ARGV[1], KEYS[1], ARGV[2], ARGV[3], 'COUNT', tonumber(ARGV[4]))
local needle = ARGV[5]
local out = {}
for _, entry in ipairs(entries) do
  local fields = entry[2]
  for j = 1, #fields, 2 do
    if fields[j] == ARGV[6] then
      if needle == '' or string.find(fields[j + 1], needle, 1, true) then
        out[#out + 1] = {entry[1], fields[j + 1]}
      end
      break
    end
  end
end
local last = ''
if #entries > 0 then last = entries[#entries][1] end
return {#entries, last, out}
"""
"""One page of the stream, filtered inside Redis: only the envelopes holding ``needle`` (a
plain substring) cross the network and get parsed. Returns (entries read, last id read,
[(id, envelope)...])."""


def _needle(pattern: Pattern) -> str:
    """A substring every envelope of a matching event holds ("" when none is known): its
    literal leading segments, else its literal last segment. Envelopes are compact JSON
    written id, type, source... (``Event.to_dict``'s order); matches are checked again."""
    prefix = pattern.literal_prefix
    if prefix:
        return f'"type":"{prefix}'
    last = pattern.segments[-1] if pattern.segments else "**"
    return f'{last}","source":"' if last not in ("*", "**") else ""


def _page(bus: EventBus, *, reverse: bool, start: str, end: str, count: int,
          needle: str) -> tuple[int, str, list[tuple[str, bytes]]]:
    script = bus.client.register_script(_FILTER)
    command = "XREVRANGE" if reverse else "XRANGE"
    try:
        read, last, found = script(keys=[bus.stream],
                                   args=[command, start, end, count, needle, EVENT_FIELD])
    except redis.RedisError as exc:
        raise unavailable(bus.client, exc, "read events") from exc
    return int(read), text_of(last), [(text_of(i), raw) for i, raw in found]


def _decode(raw: bytes) -> Event | None:
    try:
        return decode_entry({EVENT_FIELD: raw})
    except ValidationError:
        return None


def recent_events(bus: EventBus, *, pattern: str = "**", since: datetime | None = None,
                  limit: int = 100, max_scan: int = MAX_SCAN) -> EventPage:
    """The newest ``limit`` events matching ``pattern`` (newer than ``since``), reading at
    most ``max_scan`` stream entries."""
    compiled = compile_pattern(pattern)
    needle = _needle(compiled)
    low = "-" if since is None else stream_id_at(since)
    high = "+"
    found: list[tuple[str, Event]] = []
    scanned = skipped = 0
    while len(found) < limit and scanned < max_scan:
        count = min(_PAGE if not needle else 2000, max_scan - scanned)
        read, last, entries = _page(bus, reverse=True, start=high, end=low, count=count,
                                    needle=needle)
        scanned += read
        for stream_id, raw in entries:
            event = _decode(raw)
            if event is None:
                skipped += 1
            elif compiled.matches(event.type):
                found.append((stream_id, event))
                if len(found) >= limit:
                    return EventPage(found, scanned, True, skipped)
        if read < count:
            return EventPage(found, scanned, True, skipped)
        high = f"({last}"
    return EventPage(found, scanned, len(found) >= limit, skipped)


def event_ms(event_id: str) -> int | None:
    """The creation time (ms) in a UUIDv7-layout event id, None for other ids."""
    digits = event_id.replace("-", "")
    if len(digits) != 32 or digits[12:13] != "7":
        return None
    try:
        return int(digits[:12], 16)
    except ValueError:
        return None


def _scan(bus: EventBus, low: str, high: str, needle: str, max_scan: int,
          max_found: int) -> tuple[list[tuple[str, Event]], int]:
    found: list[tuple[str, Event]] = []
    scanned = 0
    while scanned < max_scan and len(found) < max_found:
        count = min(5000, max_scan - scanned)
        read, last, entries = _page(bus, reverse=False, start=low, end=high, count=count,
                                    needle=needle)
        scanned += read
        for stream_id, raw in entries:
            event = _decode(raw)
            if event is not None:
                found.append((stream_id, event))
        if read < count:
            break
        low = f"({last}"
    return found, scanned


def find_event(bus: EventBus, event_id: str) -> tuple[str, Event] | None:
    """The stored event ``event_id`` (searched around the time its id carries), or None."""
    needle = f'"id":"{event_id}"'
    ms = event_ms(event_id)
    windows = [(10_000, 50_000), (300_000, 200_000)] if ms is not None else [(0, 50_000)]
    for span, budget in windows:
        if ms is None:
            low, high = "-", "+"
        else:
            low, high = f"{max(0, ms - span)}-0", f"{ms + span}-0"
        found, _ = _scan(bus, low, high, needle, budget, 50)
        for stream_id, event in found:
            if event.id == event_id:
                return stream_id, event
    return None


@dataclass
class TraceNode:
    kind: str
    """``event``, ``run`` or ``decision``."""
    event: Event | None = None
    run: Run | None = None
    decision: dict[str, Any] | None = None
    children: list[TraceNode] = field(default_factory=list)


def trace_events(bus: EventBus, trace_id: str, *, around_ms: int | None) -> tuple[list[Event], bool]:
    """The events of trace ``trace_id``, oldest first (read forward from its root's time)."""
    start_ms = event_ms(trace_id) or around_ms or 0
    low = f"{max(0, start_ms - 5_000)}-0"
    found, scanned = _scan(bus, low, "+", f'"trace_id":"{trace_id}"', TRACE_SCAN,
                           TRACE_MAX_EVENTS)
    events = [event for _, event in found if event.trace_id == trace_id]
    return events, scanned < TRACE_SCAN and len(found) < TRACE_MAX_EVENTS


def run_ids_of(events: Iterable[Event], decisions: Iterable[dict[str, Any]]) -> list[str]:
    ids: dict[str, None] = {}
    for decision in decisions:
        if isinstance(decision.get("run_id"), str):
            ids.setdefault(decision["run_id"], None)
    for event in events:
        run_id = event.data.get("run_id") if isinstance(event.data, dict) else None
        if isinstance(run_id, str) and 0 < len(run_id) <= 200:
            ids.setdefault(run_id, None)
    return list(ids)


def _children_of(run: Run) -> list[str]:
    """The script runs and sub-workstream runs a workstream run's steps made."""
    if not run.steps:
        return []
    kinds = {}
    for stage in [*run.orchestration.get("spec", {}).get("stages", []),
                  *run.orchestration.get("spec", {}).get("on_failure", [])]:
        for step in stage:
            kinds[step.get("id")] = step.get("kind")
    found = []
    for step_id, raw in run.steps.items():
        attempt = int(raw.get("attempt") or 0)
        if kinds.get(step_id) == KIND_RUN and attempt:
            found += [child_run_id(run.run_id, step_id, n) for n in range(1, attempt + 1)]
        child = raw.get("child_run_id") or (raw.get("outputs") or {}).get("run_id")
        if isinstance(child, str):
            found.append(child)
    return found


def load_runs(client: redis.Redis, run_ids: list[str]) -> dict[str, Run]:
    """The runs named, and the runs their steps made (breadth first, bounded)."""
    found: dict[str, Run] = {}
    pending = list(dict.fromkeys(run_ids))
    while pending and len(found) < TRACE_MAX_RUNS:
        batch = [run_id for run_id in pending[:100] if run_id not in found]
        pending = pending[100:]
        if not batch:
            continue
        for raw in client.mget([RUN_KEY_PREFIX + run_id for run_id in batch]):
            if raw is None:
                continue
            try:
                run = Run.model_validate_json(raw)
            except ValueError:
                continue
            found[run.run_id] = run
            pending += [child for child in _children_of(run) if child not in found]
    return found


def trace_tree(events: list[Event], runs: dict[str, Run],
               decisions: list[dict[str, Any]]) -> list[TraceNode]:
    """Events under the run they report on (``data.run_id``) or else the event that caused
    them (``parent_id``); runs under the run whose step made them or else the event that
    launched them; trigger decisions under their event. A node whose parents would loop back
    to it (a malformed chain) is shown at the top instead."""
    nodes: dict[str, TraceNode] = {}
    parents: dict[str, str] = {}
    for event in events:
        nodes["e:" + event.id] = TraceNode("event", event=event)
    for run in sorted(runs.values(), key=lambda r: r.created_at):
        nodes["r:" + run.run_id] = TraceNode("run", run=run)
    for event in events:
        run_id = event.data.get("run_id") if isinstance(event.data, dict) else None
        if isinstance(run_id, str) and "r:" + run_id in nodes:
            parents["e:" + event.id] = "r:" + run_id
        elif event.parent_id and "e:" + event.parent_id in nodes:
            parents["e:" + event.id] = "e:" + event.parent_id
    for run in runs.values():
        launcher = (run.event or {}).get("id")
        if run.parent_run_id and "r:" + run.parent_run_id in nodes:
            parents["r:" + run.run_id] = "r:" + run.parent_run_id
        elif isinstance(launcher, str) and "e:" + launcher in nodes:
            parents["r:" + run.run_id] = "e:" + launcher
    for key in list(parents):
        seen, at = {key}, parents.get(key)
        while at is not None:
            if at in seen:
                del parents[key]
                break
            seen.add(at)
            at = parents.get(at)
    roots: list[TraceNode] = []
    for key, node in nodes.items():
        parent = parents.get(key)
        (nodes[parent].children if parent is not None else roots).append(node)
    for decision in decisions:
        target = nodes.get(f"e:{decision.get('event_id')}")
        if target is not None:
            target.children.insert(0, TraceNode("decision", decision=decision))
    return roots
