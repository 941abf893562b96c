from __future__ import annotations

import fnmatch
import threading
import time
from functools import cache

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pitstop.bus.patterns import (
    MAX_SEGMENTS,
    PatternIndex,
    compile_pattern,
    matches,
    normalize_type,
)
from pitstop.kernel.errors import InvalidEventType, InvalidPattern


@pytest.mark.parametrize(
    ("pattern", "event_type", "expected"),
    [
        ("phase.*.completed", "phase.1.completed", True),
        ("phase.*.completed", "phase.1.tests.completed", False),
        ("phase.*.completed", "phase.completed", False),
        ("**.failed", "tool.failed", True),
        ("**.failed", "deploy.prod.failed", True),
        ("**.failed", "failed", True),
        ("**.failed", "tool.failed.retry", False),
        ("**", "anything.at.all", True),
        ("*", "one", True),
        ("*", "one.two", False),
        ("deploy.**", "deploy", True),
        ("deploy.**", "deploy.staging.failed", True),
        ("a.**.z", "a.z", True),
        ("a.**.z", "a.b.c.z", True),
        ("a.**.z", "a.b.c.y", False),
        ("**.b.**", "a.b.c", True),
        ("**.b.**", "a.c", False),
        ("Phase.*.COMPLETED", "PHASE.2.completed", True),
        ("tool.invoked", "tool.invoked", True),
        ("tool.invoked", "tool.invoked.x", False),
        ("*.*", "a.b", True),
        ("*.*", "a", False),
    ],
)
def test_pattern_semantics(pattern: str, event_type: str, expected: bool) -> None:
    assert matches(pattern, event_type) is expected
    index: PatternIndex[str] = PatternIndex()
    index.add(pattern, "hit")
    assert (index.match(event_type) == ["hit"]) is expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "empty"),
        ("phase..completed", "empty segment"),
        (".phase", "empty segment"),
        ("phase.", "empty segment"),
        ("phase.1 done", "may only use"),
        ("phase.*.x", "may only use"),
        ("x" * 300, "longer than"),
    ],
)
def test_invalid_event_types(raw: str, message: str) -> None:
    with pytest.raises(InvalidEventType, match=message):
        normalize_type(raw)


def test_event_types_are_stored_lower_case() -> None:
    assert normalize_type("  Deploy.Staging.FAILED ") == "deploy.staging.failed"


@pytest.mark.parametrize("raw", ["", "a..b", "a*.b", "a.b*", "a.***", "a.$"])
def test_invalid_patterns(raw: str) -> None:
    with pytest.raises(InvalidPattern):
        compile_pattern(raw)


def test_literal_prefix() -> None:
    assert compile_pattern("phase.*.completed").literal_prefix == "phase"
    assert compile_pattern("**.failed").literal_prefix == ""
    assert compile_pattern("a.b.c").literal_prefix == "a.b.c"
    assert compile_pattern("a.b.c").is_literal


def test_index_returns_values_in_insertion_order_and_duplicates() -> None:
    index: PatternIndex[int] = PatternIndex()
    for number, pattern in enumerate(["**", "phase.*.completed", "phase.1.completed", "**"]):
        index.add(pattern, number)
    assert index.match("phase.1.completed") == [0, 1, 2, 3]
    assert index.match("other") == [0, 3]
    assert len(index) == 4
    assert list(index) == [0, 1, 2, 3]


segment = st.sampled_from(["a", "b", "c", "phase", "1"])
pattern_segment = st.sampled_from(["a", "b", "*", "**", "1"])




@given(st.lists(pattern_segment, min_size=1, max_size=4), st.lists(segment, min_size=1, max_size=5))
def test_index_agrees_with_single_pattern_matcher(pattern_parts: list[str], type_parts: list[str]) -> None:
    pattern = ".".join(pattern_parts)
    event_type = ".".join(type_parts)
    index: PatternIndex[str] = PatternIndex()
    index.add(pattern, "x")
    assert (index.match(event_type) == ["x"]) == matches(pattern, event_type)
    if "**" not in pattern_parts:
        # Without '**' the semantics equal fnmatch per segment with equal segment counts.
        expected = len(pattern_parts) == len(type_parts) and all(
            fnmatch.fnmatchcase(t, p) for p, t in zip(pattern_parts, type_parts, strict=True)
        )
        assert matches(pattern, event_type) == expected


# --- bounds, full matches, and matching without recursion or blow-ups ---------------------------
@pytest.mark.parametrize("raw", ["deploy\n.failed", "deploy.failed\n", "\ndeploy.failed",
                                 "deploy.fa\niled", "deploy\t.failed", "deploy.failed\r",
                                 "deploy.failed\x00"])
def test_a_newline_or_control_character_anywhere_is_refused(raw: str) -> None:
    with pytest.raises(InvalidEventType):
        normalize_type(raw)
    with pytest.raises(InvalidPattern):
        compile_pattern(raw)
    with pytest.raises(InvalidPattern):
        compile_pattern(raw.replace("deploy", "*"))


def test_types_and_patterns_have_a_bounded_number_of_segments() -> None:
    assert normalize_type(".".join(["a"] * MAX_SEGMENTS))
    with pytest.raises(InvalidEventType, match=f"limit of {MAX_SEGMENTS}"):
        normalize_type(".".join(["a"] * (MAX_SEGMENTS + 1)))
    assert compile_pattern(".".join(["*"] * MAX_SEGMENTS))
    with pytest.raises(InvalidPattern, match=f"limit of {MAX_SEGMENTS}"):
        compile_pattern(".".join(["*"] * (MAX_SEGMENTS + 1)))


@pytest.mark.parametrize("count", [900, 1100, 5000])
def test_a_huge_pattern_is_refused_at_once(count: int) -> None:
    started = time.perf_counter()
    index: PatternIndex[str] = PatternIndex()
    with pytest.raises(InvalidPattern, match="longer than"):
        index.add(".".join(["**"] * count), "x")
    assert time.perf_counter() - started < 0.1


def test_consecutive_double_stars_fold_into_one() -> None:
    assert compile_pattern("a.**.**.**.b").segments == ("a", "**", "b")
    assert compile_pattern("**.**").text == "**"


def test_the_worst_patterns_within_the_bounds_match_quickly() -> None:
    # Alternating wildcards are the classic back-tracking trap; a type of the longest kind
    # that almost matches makes a naive matcher try every split.
    evil = [".".join(["**", "a"] * (MAX_SEGMENTS // 2)),
            ".".join(["*", "**"] * (MAX_SEGMENTS // 2)),
            ".".join(["**", "a", "*"] * (MAX_SEGMENTS // 3))]
    types = [".".join(["a"] * MAX_SEGMENTS), ".".join(["a"] * (MAX_SEGMENTS - 1) + ["b"]),
             "x" * 200 + ".a"]
    index: PatternIndex[int] = PatternIndex((pattern, n) for n, pattern in enumerate(evil))
    started = time.perf_counter()
    for _ in range(50):
        for event_type in types:
            assert index.match(event_type) == [n for n, pattern in enumerate(evil)
                                               if matches(pattern, event_type)]
    assert time.perf_counter() - started < 2.0  # ~20 ms; seconds when it back-tracks


@cache
def _reference(pattern: tuple[str, ...], segments: tuple[str, ...]) -> bool:
    """Glob semantics by definition (small inputs only): '*' one segment, '**' zero or more."""
    if not pattern:
        return not segments
    head, rest = pattern[0], pattern[1:]
    if head == "**":
        return any(_reference(rest, segments[skip:]) for skip in range(len(segments) + 1))
    return bool(segments) and head in ("*", segments[0]) and _reference(rest, segments[1:])


patterns_st = st.lists(pattern_segment, min_size=1, max_size=5).map(".".join)
types_st = st.lists(segment, min_size=1, max_size=6).map(".".join)


@given(st.lists(patterns_st, max_size=12), st.lists(types_st, min_size=1, max_size=8),
       st.integers(min_value=1, max_value=6))
def test_index_returns_every_matching_value_in_order(patterns: list[str], types: list[str],
                                                     budget: int) -> None:
    # A tiny max_states makes the automaton start over all the time: still the same answers.
    indexes: list[PatternIndex[int]] = [PatternIndex(), PatternIndex(max_states=budget)]
    for index in indexes:
        for number, pattern in enumerate(patterns):
            index.add(pattern, number)
        for event_type in types + types:
            expected = [n for n, p in enumerate(patterns)
                        if _reference(compile_pattern(p).segments, tuple(event_type.split(".")))]
            assert index.match(event_type) == expected
            assert [n for n, p in enumerate(patterns) if matches(p, event_type)] == expected


def test_adding_or_removing_after_matching_is_seen_at_once() -> None:
    index: PatternIndex[str] = PatternIndex([("a.*", "one")])
    assert index.match("a.b") == ["one"]
    index.add("**.b", "two")
    index.add("a.*", "three")
    assert index.match("a.b") == ["one", "two", "three"]
    assert index.remove("a.*", "one") is True
    assert index.remove("a.*", "missing") is False
    assert index.remove("x.y", "one") is False
    assert index.match("a.b") == ["two", "three"]
    assert [(p.text, v) for p, v in index.items()] == [("**.b", "two"), ("a.*", "three")]
    assert len(index) == 2


def test_matching_from_many_threads_while_patterns_are_added() -> None:
    index: PatternIndex[int] = PatternIndex()
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        try:
            while not stop.is_set():
                found = index.match("svc.build.failed")
                assert found == sorted(found)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for number in range(300):
            index.add(["svc.*.failed", "**.failed", f"svc{number}.**", "svc.build.*"][number % 4],
                      number)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert not errors
    assert index.match("svc.build.failed") == [n for n in range(300) if n % 4 != 2]


def test_index_is_far_faster_than_a_loop_over_the_patterns() -> None:
    rules = [f"svc{n}.build.failed" for n in range(1000)] + [f"svc{n}.*.failed" for n in range(500)]
    rules += [f"svc{n}.**" for n in range(300)] + ["**.failed", "deploy.**.prod"] * 100
    compiled = [(compile_pattern(rule), n) for n, rule in enumerate(rules)]
    index: PatternIndex[int] = PatternIndex(compiled)
    types = [f"svc{n * 7 % 1200}.{stage}.failed" for n in range(100) for stage in ("build", "test")]
    for event_type in types:
        assert index.match(event_type) == [n for p, n in compiled if p.matches(event_type)]

    def per_event(call: object) -> float:
        started = time.perf_counter()
        for event_type in types:
            call(event_type)  # type: ignore[operator]
        return (time.perf_counter() - started) / len(types)

    looped = min(per_event(lambda t: [n for p, n in compiled if p.matches(t)]) for _ in range(2))
    indexed = min(per_event(index.match) for _ in range(3))
    assert looped / indexed > 30  # ~1000x on an idle machine: bench/patterns.py
