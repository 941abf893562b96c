from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pitstop.bus.events import Event, make_event
from pitstop.kernel.errors import HopLimitExceeded, InvalidEventType, PayloadTooLarge, ValidationError
from pitstop.kernel.ids import new_id

NOW = datetime(2026, 11, 26, 12, 0, 0, 123000, tzinfo=UTC)


def test_envelope_fields() -> None:
    event = make_event("Phase.1.Completed", {"x": 1}, source="ci", now=NOW)
    assert event.type == "phase.1.completed"
    assert event.time == "2026-11-26T12:00:00.123Z"
    assert event.trace_id == event.id
    assert event.parent_id is None
    assert event.hops == 0
    assert event.source == "ci"


def test_child_joins_trace_and_counts_hops() -> None:
    root = make_event("a.started", now=NOW)
    child = make_event("a.completed", parent=root, now=NOW)
    grandchild = make_event("b.completed", parent=child, now=NOW)
    assert child.trace_id == root.id == grandchild.trace_id
    assert grandchild.parent_id == child.id
    assert grandchild.hops == 2


def test_hop_limit_stops_runaway_chains() -> None:
    event = make_event("loop", now=NOW)
    for _ in range(3):
        event = make_event("loop", parent=event, max_hops=3, now=NOW)
    with pytest.raises(HopLimitExceeded, match="limit of 3"):
        make_event("loop", parent=event, max_hops=3, now=NOW)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ([1, 2], ValidationError),
        ("text", ValidationError),
        ({"x": float("nan")}, ValidationError),
        ({"x": object()}, ValidationError),
        ({"blob": "x" * 2000}, PayloadTooLarge),
    ],
)
def test_bad_data_is_refused(data: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        make_event("a.b", data, max_data_bytes=1024)  # type: ignore[arg-type]


def test_empty_segment_is_refused() -> None:
    with pytest.raises(InvalidEventType, match="empty segment"):
        make_event("phase..completed")


@pytest.mark.parametrize(
    ("event_type", "data", "severity"),
    [
        ("tool.failed", {}, "failed"),
        ("deploy.prod.error", {}, "error"),
        ("x.critical", {}, "critical"),
        ("phase.1.completed", {}, "info"),
        ("phase.1.completed", {"severity": "CRITICAL"}, "critical"),
        ("tool.failed", {"severity": "bogus"}, "failed"),
    ],
)
def test_severity(event_type: str, data: dict[str, str], severity: str) -> None:
    assert make_event(event_type, data).severity == severity


def test_ids_sort_by_time_and_are_unique() -> None:
    ids = [new_id(ms) for ms in (1000, 2000, 3000)]
    assert ids == sorted(ids)
    assert len({new_id(5) for _ in range(1000)}) == 1000
    assert new_id()[14] == "7"  # UUIDv7 version nibble


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**9, 10**9) | st.text(max_size=20),
    lambda children: (st.lists(children, max_size=3)
                      | st.dictionaries(st.text(max_size=5), children, max_size=3)),
    max_leaves=10,
)


@given(st.dictionaries(st.text(max_size=10), json_values, max_size=5))
def test_json_round_trip(data: dict[str, object]) -> None:
    event = make_event("round.trip", data)
    assert Event.from_json(event.to_json()) == event


# --- source: short and printable -------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("x" * 201, "201 characters, over the limit of 200"),
        ("s" * (5 * 1024 * 1024), "over the limit of 200"),
        ("ci\nfake: line", "printable"),
        ("ci\x1b[31mred", "printable"),
        ("ci\tx", "printable"),
    ],
)
def test_an_oversized_or_unprintable_source_is_refused(source: str, fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment) as caught:
        make_event("a.b", source=source, now=NOW)
    assert source not in str(caught.value)
    kept = "ci/" + "r" * 197  # at the limit
    assert make_event("a.b", source=kept, now=NOW).source == kept


# --- data: nesting depth -----------------------------------------------------------------------


def _nested(depth: int) -> dict[str, object]:
    value: object = []
    for _ in range(depth - 2):
        value = [value]
    return {"x": value}


@pytest.mark.parametrize("depth", [65, 500, 5000])
def test_data_nested_too_deeply_is_a_validation_error(depth: int) -> None:
    with pytest.raises(ValidationError, match="nested deeper than 64 levels"):
        make_event("a.b", _nested(depth), now=NOW)
    assert make_event("a.b", _nested(64), now=NOW).data == _nested(64)  # at the limit
