"""What an event looks like to alerting: its labels, its severity, its subject, and matchers.

Labels are flat strings: ``type``, ``subject`` (the type without its status segment, so
``build.linux.failed`` and ``build.linux.succeeded`` share ``build.linux``), ``severity``,
``source`` and ``data.<key>`` for each scalar top-level data field. Routes group and match on them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pitstop.bus.events import Event
from pitstop.bus.patterns import Pattern, compile_pattern

__all__ = [
    "SEVERITY_RANK",
    "STATUS_WORDS",
    "Matcher",
    "event_labels",
    "group_values",
    "max_severity",
    "subject_of",
]

SEVERITY_RANK: dict[str, int] = {"debug": 0, "info": 1, "warning": 2, "error": 3, "failed": 3,
                                 "critical": 4}
"""Order of severities (``failed`` ranks with ``error``)."""

STATUS_WORDS = frozenset({
    "failed", "failure", "error", "errored", "critical", "warning", "succeeded", "success",
    "completed", "passed", "ok", "resolved", "recovered", "fixed", "started", "info",
})
"""Last type segments that say how something went rather than what it is."""

EVERY_EVENT = "..."
"""``group_by: ['...']``: every event is a group of its own (as in Prometheus Alertmanager)."""

_MAX_LABEL_CHARS = 200


def subject_of(event_type: str) -> str:
    """``build.linux.failed`` -> ``build.linux``; a type without a status segment is itself."""
    head, _, last = event_type.rpartition(".")
    return head if head and last in STATUS_WORDS else event_type


def event_labels(event: Event) -> dict[str, str]:
    """The labels of ``event`` (scalar data fields only, each cut to 200 characters)."""
    labels = {"type": event.type, "subject": subject_of(event.type),
              "severity": event.severity, "source": event.source}
    for key, value in (event.data or {}).items():
        if isinstance(value, bool):
            labels[f"data.{key}"] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            labels[f"data.{key}"] = str(value)[:_MAX_LABEL_CHARS]
    return labels


def group_values(group_by: Sequence[str], labels: Mapping[str, str],
                 event_id: str) -> dict[str, str]:
    """The values of the ``group_by`` labels (missing ones are empty); ``...``: the event id."""
    if EVERY_EVENT in group_by:
        return {"event": event_id}
    return {name: labels.get(name, "") for name in group_by}


def max_severity(first: str, second: str) -> str:
    return first if SEVERITY_RANK.get(first, 1) >= SEVERITY_RANK.get(second, 1) else second


@dataclass(frozen=True)
class Matcher:
    """Type patterns, severities, sources and data values an event must all satisfy.

    Empty parts match anything; a part with several values matches any of them.
    """

    types: tuple[Pattern, ...] = ()
    severities: frozenset[str] = frozenset()
    sources: tuple[str, ...] = ()
    data: tuple[tuple[str, frozenset[str]], ...] = ()

    @classmethod
    def build(cls, types: Sequence[str] = (), severities: Sequence[str] = (),
              sources: Sequence[str] = (), data: Mapping[str, Sequence[str]] | None = None,
              ) -> Matcher:
        """Raises :class:`pitstop.kernel.errors.InvalidPattern` for a bad type pattern."""
        return cls(types=tuple(compile_pattern(text) for text in types),
                   severities=frozenset(s.lower() for s in severities),
                   sources=tuple(sources),
                   data=tuple((key, frozenset(str(v) for v in values))
                              for key, values in (data or {}).items()))

    @property
    def empty(self) -> bool:
        return not (self.types or self.severities or self.sources or self.data)

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.types and not any(p.matches(labels.get("type", "")) for p in self.types):
            return False
        if self.severities and labels.get("severity", "") not in self.severities:
            return False
        if self.sources and labels.get("source", "") not in self.sources:
            return False
        return all(labels.get(f"data.{key}") in values for key, values in self.data)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.types:
            out["type"] = [p.text for p in self.types]
        if self.severities:
            out["severity"] = sorted(self.severities)
        if self.sources:
            out["source"] = list(self.sources)
        if self.data:
            out["data"] = {key: sorted(values) for key, values in self.data}
        return out
