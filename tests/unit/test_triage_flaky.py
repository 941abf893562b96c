"""Flaky history on fakeredis: per test id and commit, flip rate over a window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import fakeredis
import pytest

from pitstop.kernel.errors import ValidationError
from pitstop.triage import FlakyHistory

pytestmark = pytest.mark.timeout(30)

T0 = datetime(2024, 5, 14, 9, 0, tzinfo=UTC)


def history(window: int = 20) -> FlakyHistory:
    return FlakyHistory(fakeredis.FakeRedis(), window=window)


def test_passing_and_failing_on_one_commit_is_flaky() -> None:
    store = history()
    assert store.record("abc123", [("tests/test_a.py::test_x", "f")], now=T0) == []
    flaky = store.record("abc123", [("tests.test_a.test_x", "p")], now=T0 + timedelta(minutes=1))
    assert [stats.test_id for stats in flaky] == ["tests.test_a.test_x"]
    assert store.is_flaky("tests/test_a.py::test_x")  # pytest's and JUnit's ids are one test
    stats = store.flaky_tests()[0]
    assert stats.flaky_commits == ["abc123"] and stats.runs == 2 and stats.flip_rate == 1.0
    assert stats.last_seen == T0 + timedelta(minutes=1)


def test_failing_on_two_commits_is_not_flaky() -> None:
    store = history()
    store.record("abc123", [("t.test_x", "f")], now=T0)
    assert store.record("def456", [("t.test_x", "f")], now=T0) == []
    assert not store.is_flaky("t.test_x") and store.flaky_tests() == []
    assert store.stats("t.test_x").failed == 2


def test_flip_rate_over_the_window_only() -> None:
    store = history(window=4)
    outcomes = ["p", "f", "p", "f", "p", "p", "p", "p"]
    for index, outcome in enumerate(outcomes):
        store.record(f"c{index}", [("t.test_y", outcome)], now=T0 + timedelta(seconds=index))
    stats = store.stats("t.test_y")
    assert stats.runs == 4 and stats.flips == 0 and stats.flip_rate == 0.0
    store.record("c7", [("t.test_y", "f")], now=T0 + timedelta(seconds=9))
    assert store.stats("t.test_y").flip_rate == pytest.approx(1 / 3)
    assert store.is_flaky("t.test_y")  # c7 both passed and failed
    for index in range(8, 12):  # the flaky commit leaves the window: no longer flaky
        store.record(f"c{index}", [("t.test_y", "p")], now=T0 + timedelta(seconds=10 + index))
    assert not store.is_flaky("t.test_y")


def test_commit_must_be_one_word() -> None:
    with pytest.raises(ValidationError):
        history().record("two words", [("t", "p")], now=T0)
