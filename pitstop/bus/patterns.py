"""Event types and the one pattern syntax used everywhere (``watch``, ``events``, and the
triggers and alert routes built on them).

Types are dot-separated segments, case-insensitive, stored lower-case. In a pattern ``*`` matches
exactly one segment and ``**`` matches zero or more, so ``phase.*.completed`` never matches
``phase.1.tests.completed`` while ``**.failed`` matches every failure.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Generic, TypeVar

from pitstop.kernel.errors import InvalidEventType, InvalidPattern

_SEGMENT = re.compile(r"^[a-z0-9_-]+$")
MAX_TYPE_LENGTH = 255

T = TypeVar("T")


def normalize_type(event_type: str) -> str:
    """Return ``event_type`` lower-cased, or raise :class:`InvalidEventType` saying what is wrong."""
    if not isinstance(event_type, str):
        raise InvalidEventType(f"event type must be a string, got {type(event_type).__name__}")
    return _normalize(event_type)


@lru_cache(maxsize=4096)
def _normalize(event_type: str) -> str:
    lowered = event_type.strip().lower()
    if not lowered:
        raise InvalidEventType("event type is empty")
    if len(lowered) > MAX_TYPE_LENGTH:
        raise InvalidEventType(f"event type is longer than {MAX_TYPE_LENGTH} characters")
    for position, segment in enumerate(lowered.split("."), start=1):
        if not segment:
            raise InvalidEventType(
                f"event type {event_type!r} has an empty segment (segment {position})"
            )
        if not _SEGMENT.match(segment):
            raise InvalidEventType(
                f"event type {event_type!r}: segment {segment!r} may only use a-z, 0-9, '_' and '-'"
            )
    return lowered


def _split_pattern(pattern: str) -> tuple[str, ...]:
    if not isinstance(pattern, str):
        raise InvalidPattern(f"pattern must be a string, got {type(pattern).__name__}")
    lowered = pattern.strip().lower()
    if not lowered:
        raise InvalidPattern("pattern is empty")
    segments = tuple(lowered.split("."))
    for position, segment in enumerate(segments, start=1):
        if segment in ("*", "**"):
            continue
        if not segment:
            raise InvalidPattern(f"pattern {pattern!r} has an empty segment (segment {position})")
        if "*" in segment:
            raise InvalidPattern(
                f"pattern {pattern!r}: '*' must stand alone as a segment ('*' or '**'), "
                f"not inside {segment!r}"
            )
        if not _SEGMENT.match(segment):
            raise InvalidPattern(
                f"pattern {pattern!r}: segment {segment!r} may only use a-z, 0-9, '_', '-', "
                "'*' and '**'"
            )
    return segments


def _match_segments(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    # Iterative glob matching with back-tracking to the last '**' (linear for one '**').
    p = s = 0
    star_p, star_s = -1, 0
    while s < len(segments):
        if p < len(pattern) and pattern[p] == "**":
            star_p, star_s = p, s
            p += 1
        elif p < len(pattern) and (pattern[p] == "*" or pattern[p] == segments[s]):
            p += 1
            s += 1
        elif star_p >= 0:
            star_s += 1
            s = star_s
            p = star_p + 1
        else:
            return False
    while p < len(pattern) and pattern[p] == "**":
        p += 1
    return p == len(pattern)


@dataclass(frozen=True)
class Pattern:
    """A compiled event pattern."""

    text: str
    segments: tuple[str, ...]

    @property
    def literal_prefix(self) -> str:
        """The leading segments before the first wildcard, joined by dots (may be empty)."""
        prefix: list[str] = []
        for segment in self.segments:
            if segment in ("*", "**"):
                break
            prefix.append(segment)
        return ".".join(prefix)

    @property
    def is_literal(self) -> bool:
        return all(segment not in ("*", "**") for segment in self.segments)

    def matches(self, event_type: str) -> bool:
        """True when ``event_type`` (already normalized, or any case) matches this pattern."""
        return _match_segments(self.segments, tuple(event_type.lower().split(".")))


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> Pattern:
    """Parse ``pattern``; raise :class:`InvalidPattern` naming the bad segment."""
    segments = _split_pattern(pattern)
    return Pattern(text=".".join(segments), segments=segments)


def matches(pattern: str, event_type: str) -> bool:
    """Convenience: ``compile_pattern(pattern).matches(event_type)``."""
    return compile_pattern(pattern).matches(event_type)


@dataclass
class _Node(Generic[T]):
    children: dict[str, _Node[T]] = field(default_factory=dict)
    values: list[T] = field(default_factory=list)


class PatternIndex(Generic[T]):
    """Many patterns, each with a value; ``match(type)`` returns the values of all matching patterns.

    A segment trie, so matching costs about the depth of the type rather than the number of
    patterns (a loop over 10,000 patterns costs ~3 ms per event; this costs microseconds).
    Values come back in the order their patterns were added.
    """

    def __init__(self) -> None:
        self._root: _Node[tuple[int, T]] = _Node()
        self._counter = 0
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, pattern: str | Pattern, value: T) -> None:
        compiled = compile_pattern(pattern) if isinstance(pattern, str) else pattern
        node = self._root
        for segment in compiled.segments:
            node = node.children.setdefault(segment, _Node())
        node.values.append((self._counter, value))
        self._counter += 1
        self._size += 1

    def match(self, event_type: str) -> list[T]:
        segments = tuple(event_type.lower().split("."))
        found: dict[int, T] = {}
        self._walk(self._root, segments, 0, found, set())
        return [found[order] for order in sorted(found)]

    def _walk(
        self,
        node: _Node[tuple[int, T]],
        segments: tuple[str, ...],
        position: int,
        found: dict[int, T],
        seen: set[tuple[int, int]],
    ) -> None:
        state = (id(node), position)
        if state in seen:
            return
        seen.add(state)
        if position == len(segments):
            for order, value in node.values:
                found[order] = value
        else:
            exact = node.children.get(segments[position])
            if exact is not None:
                self._walk(exact, segments, position + 1, found, seen)
            single = node.children.get("*")
            if single is not None:
                self._walk(single, segments, position + 1, found, seen)
        double = node.children.get("**")
        if double is not None:
            # '**' consumes zero or more segments.
            for consumed in range(position, len(segments) + 1):
                self._walk(double, segments, consumed, found, seen)

    def __iter__(self) -> Iterator[T]:
        collected: list[tuple[int, T]] = []
        stack = [self._root]
        while stack:
            node = stack.pop()
            collected.extend(node.values)
            stack.extend(node.children.values())
        return iter(value for _, value in sorted(collected, key=lambda item: item[0]))

