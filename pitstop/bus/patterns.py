"""Event types and the one pattern syntax used everywhere (``watch``, ``events``, and the
triggers and alert routes built on them).

Types are dot-separated segments, case-insensitive, stored lower-case. In a pattern ``*`` matches
exactly one segment and ``**`` matches zero or more, so ``phase.*.completed`` never matches
``phase.1.tests.completed`` while ``**.failed`` matches every failure.

Both are bounded (:data:`MAX_TYPE_LENGTH` characters, :data:`MAX_SEGMENTS` segments) and matched
without recursion or back-tracking blow-ups: one pattern in O(type x pattern) steps at worst, many
patterns through :class:`PatternIndex`, whose cost per event does not grow with the number of
patterns.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Generic, TypeVar

from pitstop.kernel.errors import InvalidEventType, InvalidPattern

__all__ = ["MAX_PATTERN_LENGTH", "MAX_SEGMENTS", "MAX_TYPE_LENGTH", "Pattern", "PatternIndex",
           "compile_pattern", "matches", "normalize_type"]

_SEGMENT = re.compile(r"[a-z0-9_-]+")
"""What one segment may hold; always used with ``fullmatch`` (``$`` would accept a newline)."""
MAX_TYPE_LENGTH = 255
MAX_PATTERN_LENGTH = 255
MAX_SEGMENTS = 32
"""The most segments an event type or a pattern may have."""

_ORDER = operator.itemgetter(0)
_VALUE = operator.itemgetter(1)
_STAR = "*"
_GLOBSTAR = "**"

T = TypeVar("T")


def normalize_type(event_type: str) -> str:
    """Return ``event_type`` lower-cased, or raise :class:`InvalidEventType` saying what is wrong."""
    if not isinstance(event_type, str):
        raise InvalidEventType(f"event type must be a string, got {type(event_type).__name__}")
    return _normalize(event_type)


@lru_cache(maxsize=4096)
def _normalize(event_type: str) -> str:
    # Only spaces are trimmed: a newline or tab anywhere is an error, never silently dropped.
    lowered = event_type.strip(" ").lower()
    if not lowered:
        raise InvalidEventType("event type is empty")
    if len(lowered) > MAX_TYPE_LENGTH:
        raise InvalidEventType(f"event type is longer than {MAX_TYPE_LENGTH} characters")
    segments = lowered.split(".")
    if len(segments) > MAX_SEGMENTS:
        raise InvalidEventType(f"event type has {len(segments)} segments, over the limit of "
                               f"{MAX_SEGMENTS}")
    for position, segment in enumerate(segments, start=1):
        if not segment:
            raise InvalidEventType(
                f"event type {event_type!r} has an empty segment (segment {position})"
            )
        if not _SEGMENT.fullmatch(segment):
            raise InvalidEventType(
                f"event type {event_type!r}: segment {segment!r} may only use a-z, 0-9, '_' and '-'"
            )
    return lowered


def _split_pattern(pattern: str) -> tuple[str, ...]:
    if not isinstance(pattern, str):
        raise InvalidPattern(f"pattern must be a string, got {type(pattern).__name__}")
    lowered = pattern.strip(" ").lower()
    if not lowered:
        raise InvalidPattern("pattern is empty")
    if len(lowered) > MAX_PATTERN_LENGTH:
        raise InvalidPattern(f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
    raw = lowered.split(".")
    if len(raw) > MAX_SEGMENTS:
        raise InvalidPattern(f"pattern has {len(raw)} segments, over the limit of {MAX_SEGMENTS}")
    segments: list[str] = []
    for position, segment in enumerate(raw, start=1):
        if segment == _GLOBSTAR:
            if not segments or segments[-1] != _GLOBSTAR:  # '**.**' means what '**' means
                segments.append(segment)
            continue
        if segment == _STAR:
            segments.append(segment)
            continue
        if not segment:
            raise InvalidPattern(f"pattern {pattern!r} has an empty segment (segment {position})")
        if "*" in segment:
            raise InvalidPattern(
                f"pattern {pattern!r}: '*' must stand alone as a segment ('*' or '**'), "
                f"not inside {segment!r}"
            )
        if not _SEGMENT.fullmatch(segment):
            raise InvalidPattern(
                f"pattern {pattern!r}: segment {segment!r} may only use a-z, 0-9, '_', '-', "
                "'*' and '**'"
            )
        segments.append(segment)
    return tuple(segments)


def _match_segments(pattern: tuple[str, ...], segments: list[str]) -> bool:
    # Iterative glob matching that back-tracks only to the last '**': at most
    # len(pattern) x len(segments) steps, never recursion.
    p = s = 0
    star_p, star_s = -1, 0
    while s < len(segments):
        if p < len(pattern) and pattern[p] == _GLOBSTAR:
            star_p, star_s = p, s
            p += 1
        elif p < len(pattern) and (pattern[p] == _STAR or pattern[p] == segments[s]):
            p += 1
            s += 1
        elif star_p >= 0:
            star_s += 1
            s = star_s
            p = star_p + 1
        else:
            return False
    while p < len(pattern) and pattern[p] == _GLOBSTAR:
        p += 1
    return p == len(pattern)


@dataclass(frozen=True)
class Pattern:
    """A compiled event pattern (consecutive ``**`` segments folded into one)."""

    text: str
    segments: tuple[str, ...]

    @property
    def literal_prefix(self) -> str:
        """The leading segments before the first wildcard, joined by dots (may be empty)."""
        prefix: list[str] = []
        for segment in self.segments:
            if segment in (_STAR, _GLOBSTAR):
                break
            prefix.append(segment)
        return ".".join(prefix)

    @property
    def is_literal(self) -> bool:
        return all(segment not in (_STAR, _GLOBSTAR) for segment in self.segments)

    def matches(self, event_type: str) -> bool:
        """True when ``event_type`` (already normalized, or any case) matches this pattern."""
        return _match_segments(self.segments, event_type.lower().split("."))


@lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> Pattern:
    """Parse ``pattern``; raise :class:`InvalidPattern` naming the bad segment."""
    segments = _split_pattern(pattern)
    return Pattern(text=".".join(segments), segments=segments)


def matches(pattern: str, event_type: str) -> bool:
    """Convenience: ``compile_pattern(pattern).matches(event_type)``."""
    return compile_pattern(pattern).matches(event_type)


# --- many patterns ---------------------------------------------------------------------------
class _Node(Generic[T]):
    """A trie node: the patterns that share a prefix of segments."""

    __slots__ = ("globstar", "literal", "loops", "star", "values")

    def __init__(self, *, loops: bool = False) -> None:
        self.literal: dict[str, _Node[T]] = {}
        self.star: _Node[T] | None = None
        self.globstar: _Node[T] | None = None
        self.loops = loops  # reached through '**': stays put over any number of segments
        self.values: list[tuple[int, T]] = []


class _State(Generic[T]):
    """A state of the lazily built automaton: every trie node a prefix of the type can be at."""

    __slots__ = ("nodes", "other", "successors", "values")

    def __init__(self, nodes: tuple[_Node[T], ...]) -> None:
        self.nodes = nodes
        self.successors: dict[str, _State[T]] = {}
        self.other: _State[T] | None = None  # for a segment no pattern names literally
        self.values: tuple[T, ...] | None = None  # what a type ending here matches (lazily)


class _Automaton(Generic[T]):
    """The deterministic automaton of one version of the trie, built as types are matched.

    A state is a set of trie nodes; its successor for a segment is computed once and kept, so
    matching a type costs one dict lookup per segment. Segments no pattern names literally all
    behave alike and share one successor. Once ``budget`` states and transitions are kept, the
    cache starts over, so memory stays bounded whatever the patterns and types (an uncached step
    costs one pass over the state's nodes: still no recursion, no back-tracking).
    """

    def __init__(self, root: _Node[T], version: int, budget: int) -> None:
        self.root = root
        self.version = version
        self.budget = budget
        self.dead: _State[T] = _State(())
        self.dead.other = self.dead
        self.dead.values = ()
        self.states: dict[frozenset[int], _State[T]] = {}
        self.kept = 0
        self.start = self._restart()

    def _restart(self) -> _State[T]:
        self.states = {frozenset(): self.dead}
        self.kept = 0
        closure: dict[int, _Node[T]] = {}
        _close(self.root, closure)
        self.start = self._state(closure)
        return self.start

    def _state(self, nodes: dict[int, _Node[T]]) -> _State[T]:
        key = frozenset(nodes)
        state = self.states.get(key)
        if state is None:
            state = self.states[key] = _State(tuple(nodes.values()))
            self.kept += 1
        return state

    def advance(self, state: _State[T], segment: str | None) -> _State[T]:
        """The successor of ``state`` for ``segment`` (None: a segment no pattern names)."""
        if self.kept >= self.budget:
            self._restart()  # states already handed out stay valid, just no longer shared
        reached: dict[int, _Node[T]] = {}
        for node in state.nodes:
            if node.loops:
                reached[id(node)] = node
            if segment is not None:
                child = node.literal.get(segment)
                if child is not None:
                    _close(child, reached)
            if node.star is not None:
                _close(node.star, reached)
        successor = self._state(reached)
        if segment is None:
            state.other = successor
        else:
            state.successors[segment] = successor
        self.kept += 1
        return successor

    @staticmethod
    def finish(state: _State[T]) -> tuple[T, ...]:
        lists = [node.values for node in state.nodes if node.values]
        if len(lists) == 1:
            found = lists[0]  # kept in the order added
        else:
            found = [item for values in lists for item in values]
            found.sort(key=_ORDER)  # orders are unique: values are never compared
        values = tuple(map(_VALUE, found))
        state.values = values
        return values


def _close(node: _Node[T], into: dict[int, _Node[T]]) -> None:
    """Add ``node`` and what its ``**`` children reach without consuming a segment."""
    current: _Node[T] | None = node
    while current is not None and id(current) not in into:
        into[id(current)] = current
        current = current.globstar


class PatternIndex(Generic[T]):
    """Many patterns, each with a value; :meth:`match` returns the values of every matching one.

    A segment trie run as an automaton that is built lazily and cached: a state is the set of
    trie nodes a type's prefix can be at, and each (state, segment) step is computed once. A
    match then costs one dict lookup per segment of the type, however many patterns there are
    (about a microsecond at 10,000 patterns, against milliseconds for a loop over them; see
    ``bench/patterns.py``). Values come back in the order their patterns were added; a pattern
    added twice gives its value twice.

    :meth:`match` may be called from several threads at once; adding or removing patterns
    while others match is safe too (they see the index before or after the change).
    """

    def __init__(self, items: Iterable[tuple[str | Pattern, T]] = (), *,
                 max_states: int | None = None) -> None:
        """``max_states`` bounds the cached automaton (states plus transitions; default four
        per trie node, at least 16,384): past it the cache starts over."""
        self._root: _Node[T] = _Node()
        self._patterns: dict[int, Pattern] = {}
        self._alphabet: set[str] = set()
        self._counter = 0
        self._nodes = 1
        self._max_states = max_states
        self._version = 0
        self._automaton: _Automaton[T] | None = None
        for pattern, value in items:
            self.add(pattern, value)

    def __len__(self) -> int:
        return len(self._patterns)

    def add(self, pattern: str | Pattern, value: T) -> None:
        """Add ``pattern`` (raises :class:`InvalidPattern`) with ``value``."""
        compiled = compile_pattern(pattern) if isinstance(pattern, str) else pattern
        node = self._root
        for segment in compiled.segments:
            node = self._child(node, segment)
        order = self._counter
        self._counter += 1
        node.values.append((order, value))
        self._patterns[order] = compiled
        self._version += 1  # after the trie changed: an automaton built meanwhile is rebuilt

    def remove(self, pattern: str | Pattern, value: T) -> bool:
        """Remove one entry of ``pattern`` with a value equal to ``value``; False if none."""
        compiled = compile_pattern(pattern) if isinstance(pattern, str) else pattern
        node: _Node[T] | None = self._root
        for segment in compiled.segments:
            if node is None:
                return False
            if segment == _GLOBSTAR:
                node = node.globstar
            elif segment == _STAR:
                node = node.star
            else:
                node = node.literal.get(segment)
        if node is None:
            return False
        for position, (order, held) in enumerate(node.values):
            if held == value:
                del node.values[position]
                del self._patterns[order]
                self._version += 1
                return True
        return False

    def match(self, event_type: str) -> list[T]:
        """The values of every pattern ``event_type`` matches, in the order they were added."""
        automaton = self._automaton
        if automaton is None or automaton.version != self._version:
            version = self._version  # read before building: a later change forces a rebuild
            automaton = self._automaton = _Automaton(
                self._root, version, self._max_states or max(16_384, 4 * self._nodes))
        state = automaton.start
        dead = automaton.dead
        alphabet = self._alphabet
        for segment in event_type.lower().split("."):
            successor = state.successors.get(segment)
            if successor is None:
                if segment in alphabet:
                    successor = automaton.advance(state, segment)
                else:
                    successor = state.other or automaton.advance(state, None)
            state = successor
            if state is dead:
                return []
        values = state.values
        if values is None:
            values = automaton.finish(state)
        return list(values)

    def items(self) -> list[tuple[Pattern, T]]:
        """Every (pattern, value), in the order they were added."""
        found: list[tuple[int, T]] = []
        stack = [self._root]
        while stack:
            node = stack.pop()
            found.extend(node.values)
            stack.extend(node.literal.values())
            stack.extend(child for child in (node.star, node.globstar) if child is not None)
        found.sort(key=lambda item: item[0])
        return [(self._patterns[order], value) for order, value in found]

    def __iter__(self) -> Iterator[T]:
        return iter([value for _, value in self.items()])

    def _child(self, node: _Node[T], segment: str) -> _Node[T]:
        if segment == _GLOBSTAR:
            if node.globstar is None:
                node.globstar = _Node(loops=True)
                self._nodes += 1
            return node.globstar
        if segment == _STAR:
            if node.star is None:
                node.star = _Node()
                self._nodes += 1
            return node.star
        child = node.literal.get(segment)
        if child is None:
            child = node.literal[segment] = _Node()
            self._nodes += 1
            self._alphabet.add(segment)
        return child
