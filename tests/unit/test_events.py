from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pitstop.bus.events import Event, make_event
from pitstop.bus.patterns import matches
from pitstop.bus.streamcodec import decode_entry, decode_event
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


# --- decoding what a stream holds: only ValidationError, whatever was written ------------------
_DROP = object()


def _envelope(**changes: object) -> dict[str, object]:
    raw = make_event("x.y", {"k": [1, "two"]}, source="ci", now=NOW).to_dict()
    raw.update(changes)
    return {key: value for key, value in raw.items() if value is not _DROP}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"id":"p","type":"x.y","time":"t","hops":1e400}', "out of range"),
        (json.dumps(_envelope(hops=1.5)), "'hops' must be a whole number"),
        (json.dumps(_envelope(hops=True)), "'hops' must be a whole number"),
        (json.dumps(_envelope(hops="3")), "'hops' must be a whole number"),
        (json.dumps(_envelope(hops=-1)), "'hops' must be a whole number"),
        (json.dumps(_envelope(id=_DROP)), "'id' must be a non-empty string, got nothing"),
        (json.dumps(_envelope(id="")), "'id' must be a non-empty string"),
        (json.dumps(_envelope(id=7)), "'id' must be a non-empty string, got 7"),
        (json.dumps(_envelope(time=_DROP)), "'time' must be"),
        (json.dumps(_envelope(time=["2026"])), "'time' must be"),
        (json.dumps(_envelope(type=_DROP)), "'type' must be a string"),
        (json.dumps(_envelope(type="deploy\n.failed")), "may only use"),
        (json.dumps(_envelope(type="a..b")), "empty segment"),
        (json.dumps(_envelope(data=[[1, 2]])), "'data' must be an object"),
        (json.dumps(_envelope(data="text")), "'data' must be an object"),
        (json.dumps(_envelope(source=5)), "'source' must be a string"),
        (json.dumps(_envelope(source="a\x1b[2Jb")), "printable"),
        (json.dumps(_envelope(trace_id={"a": 1})), "'trace_id' must be a non-empty string"),
        (json.dumps(_envelope(parent_id=3)), "'parent_id' must be a non-empty string"),
        (json.dumps(_envelope(id="i" * 201)), "over the limit of 200"),
        (json.dumps(_envelope(data={"x": float("nan")})), "NaN is not a JSON number"),
        (json.dumps(_envelope(data={"x": float("inf")})), "Infinity is not a JSON number"),
        (json.dumps(_envelope(data={"x": 1e308 * 10})), "Infinity is not a JSON number"),
        (json.dumps(_envelope()).replace('"k"', '"k":' + "[" * 70 + "]" * 70 + ',"z"'),
         "nested deeper than 64 levels"),
        ('{"x": ' + "[" * 100_000 + "]" * 100_000 + "}", "not valid JSON"),
        ('{"id": 1' + "0" * 5000 + "}", "not valid JSON"),
        ("[1, 2]", "must be an object"),
        ("not json", "not valid JSON"),
        (b"\xff\xfe{}", "not valid JSON"),
        ("", "not valid JSON"),
    ],
)
def test_a_malformed_envelope_is_a_validation_error_naming_what_is_wrong(
        text: str | bytes, fragment: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(fragment)):
        decode_event(text)


def test_decode_entry_names_a_missing_field_and_refuses_what_is_not_fields() -> None:
    with pytest.raises(ValidationError, match="no 'event' field"):
        decode_entry({b"other": b"x"})
    with pytest.raises(ValidationError, match="not a mapping"):
        decode_entry([b"event", b"{}"])  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="must be text"):
        decode_entry({b"event": 5})  # type: ignore[dict-item]


def _assert_usable(event: Event) -> None:
    """What a consumer, ``events`` and ``watch`` do with a decoded event must not raise."""
    assert decode_event(event.to_json()) == event
    assert event.severity in ("debug", "info", "warning", "error", "critical", "failed")
    assert matches("**", event.type)
    for text in (event.id, event.time, event.trace_id, event.source):
        assert text.isprintable()
    json.dumps(event.data)


any_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=15,
)
envelope_fields = st.sampled_from(["id", "type", "source", "time", "data", "trace_id",
                                   "parent_id", "hops", "extra"])


@given(st.binary(max_size=300) | st.text(max_size=300))
def test_fuzz_arbitrary_bytes_decode_or_raise_validation_error(raw: bytes | str) -> None:
    try:
        event = decode_event(raw)
    except ValidationError:
        return
    _assert_usable(event)


@given(st.dictionaries(envelope_fields, any_json, max_size=9), st.booleans())
def test_fuzz_envelopes_with_any_field_values(fields: dict[str, object], based: bool) -> None:
    raw = {**_envelope(), **fields} if based else fields
    text = json.dumps(raw, allow_nan=True)  # NaN/Infinity as a forger might write them
    try:
        event = decode_event(text)
    except ValidationError:
        return
    _assert_usable(event)


@given(st.dictionaries(st.binary(max_size=8) | st.sampled_from([b"event", "event"]),
                       st.binary(max_size=200) | st.text(max_size=200), max_size=4))
def test_fuzz_stream_entry_fields(fields: dict[bytes | str, bytes | str]) -> None:
    try:
        event = decode_entry(fields)
    except ValidationError:
        return
    _assert_usable(event)
