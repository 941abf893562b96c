from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pitstop.bus.patterns import PatternIndex, compile_pattern, matches, normalize_type
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
