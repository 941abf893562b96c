"""What the triggers page reads: the rules in force (the fleet's config in Redis, else this
project's files), whether each is enabled, its limits, and its recent decisions from
``.state/trigger_executions.jsonl``; and what enable/disable change (the fleet-wide flag every
router reads, as ``pitstop triggers enable|disable``).

Compiling a config costs tens of milliseconds, so the compiled one is kept per version.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from pitstop.bus.patterns import compile_pattern
from pitstop.kernel.constants import LOG_TRIGGER_EXECUTIONS
from pitstop.kernel.errors import ConfigError, ValidationError
from pitstop.triggers.rules import Rule
from pitstop.triggers.source import ConfigSource, LoadedConfig
from pitstop.triggers.state import TriggerState
from pitstop.web.jsonltail import tail_records

__all__ = ["RuleView", "TriggerBook", "TriggersPage"]

DECISIONS_READ = 5000
"""The newest decisions read for the page (their rules' recent decisions and last firing)."""
PER_RULE = 10


@dataclass
class RuleView:
    id: str
    on: str
    workstream: str
    description: str
    conditions: str
    limits: list[str]
    params: str
    enabled: bool
    disabled_by: str | None
    disabled_reason: str | None
    line: int | None
    last_fired: dict[str, Any] | None = None
    decisions: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class TriggersPage:
    version: str | None
    loaded_at: str
    loaded_by: str
    source: str
    rules: list[RuleView]
    refused: dict[str, str] | None
    error: str | None = None


def _limits(rule: Rule) -> list[str]:
    out = []
    if rule.debounce is not None:
        key = f" by {rule.debounce.key.text}" if rule.debounce.key is not None else ""
        out.append(f"debounce {rule.debounce.window:g}s{key}")
    if rule.throttle is not None:
        key = f" by {rule.throttle.key.text}" if rule.throttle.key is not None else ""
        out.append(f"throttle {rule.throttle.max} per {rule.throttle.per:g}s{key}")
    if rule.dedupe is not None:
        out.append(f"dedupe {rule.dedupe.key.text} for {rule.dedupe.window:g}s")
    if rule.schedule is not None:
        out.append(f"catch-up {rule.schedule.catch_up}, grace {rule.schedule.grace:g}s")
    return out


def _dump(value: Any) -> str:
    if value in (None, {}, []):
        return ""
    return json.dumps(value, indent=1, sort_keys=True, default=str)


class TriggerBook:
    """Reads (and enables/disables) the trigger rules in force for the web view."""

    def __init__(self, client: redis.Redis, config_dir: Path, state_dir: Path) -> None:
        self.state = TriggerState(client)
        self.source = ConfigSource(config_dir, self.state)
        self.state_dir = state_dir
        self._cache: dict[str, LoadedConfig] = {}
        self._lock = threading.Lock()

    def loaded(self) -> LoadedConfig:
        """The config in force (cached by version), else this project's files."""
        version = self.state.active_version()
        if version is not None:
            with self._lock:
                cached = self._cache.get(version)
            if cached is not None:
                return cached
            loaded = self.source.active()
            if loaded is not None:
                with self._lock:
                    self._cache = {version: loaded}
                return loaded
        # Nothing in force yet (no router started): this project's files, compiled again only
        # when they change.
        stamp = repr(self.source.files_stamp())
        with self._lock:
            cached = self._cache.get(stamp)
        if cached is None:
            cached = self.source.load_files()
            with self._lock:
                self._cache = {stamp: cached}
        return cached

    def decisions(self, *, needle: bytes | None = None,
                  limit: int = DECISIONS_READ) -> list[dict[str, Any]]:
        return tail_records(LOG_TRIGGER_EXECUTIONS, self.state_dir, limit=limit, needle=needle)

    def page(self) -> TriggersPage:
        try:
            loaded = self.loaded()
        except ConfigError as exc:
            return TriggersPage(None, "", "", "", [], self.state.last_error(), error=str(exc))
        disabled = self.state.disabled()
        recent = self.decisions()
        by_rule: dict[str, list[dict[str, Any]]] = {}
        for record in recent:
            by_rule.setdefault(str(record.get("rule")), []).append(record)
        views = []
        for rule in loaded.config.rules.values():
            off = disabled.get(rule.id)
            mine = by_rule.get(rule.id, [])
            fired = [d for d in mine if d.get("decision") == "launched"]
            views.append(RuleView(
                id=rule.id, on=rule.on, workstream=rule.workstream,
                description=rule.description, conditions=_dump(rule.conditions_raw),
                limits=_limits(rule), params=_dump(_plain(rule.params)),
                enabled=rule.enabled and off is None,
                disabled_by=(off or {}).get("by") if off is not None else
                ("config" if not rule.enabled else None),
                disabled_reason=(off or {}).get("reason") if off else None, line=rule.line,
                last_fired=fired[-1] if fired else None, decisions=mine[-PER_RULE:][::-1],
                counts=dict(Counter(str(d.get("decision")) for d in mine))))
        snapshot = loaded.snapshot
        return TriggersPage(loaded.config.version, snapshot.loaded_at, snapshot.loaded_by,
                            snapshot.triggers_file, views, self.state.last_error())

    def set_enabled(self, rule_id: str, enabled: bool, *, by: str, reason: str,
                    at: str) -> None:
        """Enable or disable ``rule_id`` fleet-wide; :class:`ValidationError` for an unknown
        rule."""
        self.loaded().config.get(rule_id)
        self.state.set_enabled(rule_id, enabled, at=at, by=by, reason=reason)

    def matches_for(self, event_type: str, event_id: str) -> tuple[list[dict[str, Any]],
                                                                    list[tuple[str, str]]]:
        """For one event: the decisions recorded for it, and why every other rule did not
        decide on it (its pattern does not match, or it fires on a schedule)."""
        decisions = [d for d in self.decisions(needle=event_id.encode(), limit=200)
                     if d.get("event_id") == event_id]
        try:
            rules = self.loaded().config.rules.values()
        except ConfigError:
            return decisions, []
        decided = {str(d.get("rule")) for d in decisions}
        others = []
        for rule in rules:
            if rule.id in decided:
                continue
            if rule.pattern is None:
                others.append((rule.id, f"fires on a schedule ({rule.on})"))
            elif not compile_pattern(rule.pattern).matches(event_type):
                others.append((rule.id, f"pattern {rule.pattern} does not match"))
            else:
                others.append((rule.id, "matches, but no decision is recorded on this machine "
                                        "(not routed yet, or routed elsewhere)"))
        return decisions, others


def _plain(value: Any) -> Any:
    """Compiled params (templates inside) back to plain JSON for display."""
    if hasattr(value, "text") and isinstance(value.text, str):
        return value.text
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def check_rule_id(rule_id: str) -> str:
    if not rule_id or len(rule_id) > 200:
        raise ValidationError("no such rule")
    return rule_id
