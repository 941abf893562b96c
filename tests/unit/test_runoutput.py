"""A run's output stream, its cancel flag, and reaping lost runs (fakeredis)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
import redis

from pitstop.kernel.constants import RUN_OUTPUT_PREFIX
from pitstop.kernel.errors import RedisUnavailable
from pitstop.runs.output import (
    OutputEnd,
    OutputLine,
    RunOutput,
    dropped_note,
    pack_lines,
    reap_lost_runs,
)
from pitstop.runs.store import RunStore
from tests.support import FakeClock, wait_for


def test_lines_then_end_in_order() -> None:
    output = RunOutput(fakeredis.FakeRedis())
    output.append("r1", "stdout", "one")
    output.append("r1", "stderr", "two ✓")
    output.close("r1", status="failed", exit_code=3)
    items = list(output.follow("r1", block_ms=1))
    assert [(i.stream, i.line) for i in items if isinstance(i, OutputLine)] == [
        ("stdout", "one"), ("stderr", "two ✓")]
    end = items[-1]
    assert isinstance(end, OutputEnd)
    assert (end.status, end.exit_code) == ("failed", 3)


def test_follow_resumes_after_a_given_entry() -> None:
    output = RunOutput(fakeredis.FakeRedis())
    output.append("r1", "stdout", "seen")
    first = next(iter(output.follow("r1", block_ms=1)))
    assert isinstance(first, OutputLine)
    output.append("r1", "stdout", "new")
    output.close("r1", status="succeeded", exit_code=0)
    lines = [i.line for i in output.follow("r1", after=first.entry_id, block_ms=1)
             if isinstance(i, OutputLine)]
    assert lines == ["new"]


def test_cancel_flag_is_per_run() -> None:
    output = RunOutput(fakeredis.FakeRedis())
    output.request_cancel("r1")
    assert output.cancel_requested("r1")
    assert not output.cancel_requested("r2")


def test_reaping_marks_lost_asks_to_cancel_and_ends_the_output() -> None:
    client = fakeredis.FakeRedis()
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    store = RunStore(client, clock=clock)
    output = RunOutput(client)
    silent = store.create_run(kind="script")
    store.claim_run(silent.run_id, host="h", worker_pid=1)
    clock.advance(seconds=120)
    alive = store.create_run(kind="script")
    store.claim_run(alive.run_id, host="h", worker_pid=2)

    lost = reap_lost_runs(store, output, stale_after=timedelta(seconds=60))

    assert [run.run_id for run in lost] == [silent.run_id]
    assert store.get_run(silent.run_id).status == "lost"
    assert store.get_run(alive.run_id).status == "running"
    assert output.cancel_requested(silent.run_id)
    end = list(output.follow(silent.run_id, block_ms=1))[-1]
    assert isinstance(end, OutputEnd) and end.status == "lost"


def test_writer_sends_every_line_in_order_then_the_end() -> None:
    from pitstop.runs.output import OutputWriter

    output = RunOutput(fakeredis.FakeRedis())
    writer = OutputWriter(output, "r1", max_batch=7)
    for number in range(2000):
        writer.write("stdout" if number % 3 else "stderr", f"line {number}")
    writer.close(status="succeeded", exit_code=0)
    items = list(output.follow("r1", block_ms=1))
    assert [i.line for i in items if isinstance(i, OutputLine)] == [
        f"line {n}" for n in range(2000)]
    assert isinstance(items[-1], OutputEnd) and items[-1].exit_code == 0


def test_writer_batches_what_piles_up_while_a_write_is_in_flight() -> None:
    import threading

    from pitstop.runs.output import OutputWriter

    class SlowOutput(RunOutput):
        def __init__(self) -> None:
            super().__init__(fakeredis.FakeRedis())
            self.batches: list[int] = []
            self.release = threading.Event()

        def append_many(self, run_id: str, lines: Sequence[tuple[str, str]], *,
                        first_line: int = 1) -> int:
            self.batches.append(len(lines))
            self.release.wait(10)  # the first write is "in flight" until the test says
            return super().append_many(run_id, lines, first_line=first_line)

    output = SlowOutput()
    writer = OutputWriter(output, "r1")
    writer.write("stdout", "first")
    wait_for(lambda: output.batches == [1])
    for number in range(50):
        writer.write("stdout", f"queued {number}")
    output.release.set()
    writer.close(status="succeeded", exit_code=0)
    assert output.batches == [1, 50]


def test_reaping_expires_overdue_queued_runs_and_ends_their_output() -> None:
    client = fakeredis.FakeRedis()
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    store = RunStore(client, clock=clock)
    output = RunOutput(client)
    stale = store.create_run(kind="script", queue="gpu", queue_ttl=30)
    fresh = store.create_run(kind="script", queue="gpu", queue_ttl=300)
    silent = store.create_run(kind="script")
    store.claim_run(silent.run_id, host="h", worker_pid=1)
    clock.advance(seconds=120)

    ended = reap_lost_runs(store, output, stale_after=timedelta(seconds=60))

    assert [(run.run_id, run.status) for run in ended] == [
        (silent.run_id, "lost"), (stale.run_id, "expired")]
    assert store.get_run(stale.run_id).status == "expired"
    assert store.get_run(fresh.run_id).status == "queued"
    assert not output.cancel_requested(stale.run_id)  # nothing runs: nothing to cancel
    end = list(output.follow(stale.run_id, block_ms=1))[-1]
    assert isinstance(end, OutputEnd) and end.status == "expired" and end.exit_code is None
    # only the given runs, when asked about some
    clock.advance(seconds=300)
    assert reap_lost_runs(store, output, stale_after=timedelta(seconds=60),
                          run_ids=iter([stale.run_id])) == []
    assert [r.run_id for r in reap_lost_runs(store, output, stale_after=timedelta(seconds=60),
                                             run_ids=iter([fresh.run_id]))] == [fresh.run_id]


# --- packing, numbering, gaps, outages ------------------------------------------------------------


def _lines(items: list[OutputLine | OutputEnd | None]) -> list[str]:
    return [i.line for i in items if isinstance(i, OutputLine)]


def test_lines_are_packed_into_bounded_numbered_entries() -> None:
    entries = pack_lines([("stdout", "a" * 30)] * 7 + [("stderr", "b" * 200)]
                         + [("stderr", "two\nlines"), ("stdout", "")],
                         first_line=5, max_entry_bytes=100)
    assert [(e["n"], e["s"]) for e in entries] == [
        ("5", "ooo"), ("8", "ooo"), ("11", "o"), ("12", "e"), ("13", "eeo")]
    assert entries[0]["l"] == "\n".join(["a" * 30] * 3)
    assert entries[3]["l"] == "b" * 200  # longer than an entry: alone in one
    assert entries[4]["l"] == "two\nlines\n"
    assert all(len(e["l"].encode()) + len(e["s"]) <= 100 for e in entries if e["n"] != "12")
    assert pack_lines([]) == []


def test_packed_lines_are_followed_line_by_line_with_their_numbers() -> None:
    output = RunOutput(fakeredis.FakeRedis())
    assert output.append_many("r1", [("stdout", "one"), ("stderr", "two ✓"), ("stdout", "")],
                              first_line=1) == 1
    output.close("r1", status="failed", exit_code=3, next_line=4)
    items = list(output.follow("r1", block_ms=1))
    assert [(i.stream, i.line, i.number) for i in items if isinstance(i, OutputLine)] == [
        ("stdout", "one", 1), ("stderr", "two ✓", 2), ("stdout", "", 3)]
    assert isinstance(items[-1], OutputEnd) and items[-1].exit_code == 3


def test_a_follower_is_told_how_many_lines_were_trimmed_away() -> None:
    client = fakeredis.FakeRedis()
    output = RunOutput(client)
    for number in range(1, 11):
        output.append_many("r1", [("stdout", f"line {number}")], first_line=number)
    client.xtrim(f"{RUN_OUTPUT_PREFIX}r1", maxlen=3, approximate=False)  # as MAXLEN would
    output.close("r1", status="succeeded", exit_code=0, next_line=11)
    items = list(output.follow("r1", block_ms=1))
    assert _lines(items) == [dropped_note(7), "line 8", "line 9", "line 10"]
    note = items[0]
    assert isinstance(note, OutputLine)
    assert (note.stream, note.dropped, note.line) == (
        "stderr", 7, "[pitstop] 7 lines of output were dropped")
    # resuming after a given entry: the numbers before are unknown, so nothing is made up
    assert _lines(list(output.follow("r1", after=items[1].entry_id, block_ms=1))) == [
        "line 9", "line 10"]


def test_lines_missing_before_the_end_are_reported_too() -> None:
    output = RunOutput(fakeredis.FakeRedis())
    output.append_many("r1", [("stdout", "sent")], first_line=1)
    output.close("r1", status="succeeded", exit_code=0, next_line=4)  # lines 2 and 3 never came
    items = list(output.follow("r1", block_ms=1))
    assert _lines(items) == ["sent", "[pitstop] 2 lines of output were dropped"]
    assert isinstance(items[-1], OutputEnd)


def test_lines_written_twice_by_a_retry_are_shown_once() -> None:
    output = RunOutput(fakeredis.FakeRedis())
    output.append_many("r1", [("stdout", "1"), ("stdout", "2"), ("stdout", "3")], first_line=1)
    output.append_many("r1", [("stdout", "2"), ("stdout", "3")], first_line=2)  # the retry
    output.append_many("r1", [("stdout", "4")], first_line=4)
    output.close("r1", status="succeeded", exit_code=0, next_line=5)
    assert _lines(list(output.follow("r1", block_ms=1))) == ["1", "2", "3", "4"]


def test_the_output_ends_once_whoever_closes_it_first() -> None:
    client = fakeredis.FakeRedis()
    clock = FakeClock(datetime(2026, 1, 1, tzinfo=UTC))
    store = RunStore(client, clock=clock)
    output = RunOutput(client)
    run = store.create_run(kind="script")
    store.claim_run(run.run_id, host="h", worker_pid=1)
    # The worker ends the output with its result, but could not record it (Redis was down) …
    assert output.close(run.run_id, status="succeeded", exit_code=0, next_line=1)
    assert not output.close(run.run_id, status="succeeded", exit_code=0)  # a retried close
    # … then the reaper marks the silent run lost: the end entry stays the worker's.
    clock.advance(seconds=120)
    assert reap_lost_runs(store, output, stale_after=timedelta(seconds=60))
    ends = [fields for _, fields in client.xrange(f"{RUN_OUTPUT_PREFIX}{run.run_id}")
            if b"end" in fields]
    assert ends == [{b"end": b"succeeded", b"exit_code": b"0", b"n": b"1"}]
    end = list(output.follow(run.run_id, block_ms=1))[-1]
    assert isinstance(end, OutputEnd) and (end.status, end.exit_code) == ("succeeded", 0)


def test_a_chatty_writer_packs_lines_and_splits_lines_holding_newlines() -> None:
    from pitstop.runs.output import OutputWriter

    client = fakeredis.FakeRedis()
    output = RunOutput(client)
    writer = OutputWriter(output, "r1")
    for number in range(20_000):
        writer.write("stdout", f"{number}")
    writer.write("stderr", "a\nb")
    assert writer.close(status="succeeded", exit_code=0)
    items = list(output.follow("r1", block_ms=1))
    assert _lines(items) == [f"{n}" for n in range(20_000)] + ["a", "b"]
    assert client.xlen(f"{RUN_OUTPUT_PREFIX}r1") < 2_000  # entries hold many lines each


class FlakyOutput(RunOutput):
    """Fails the writes whose (1-based) call numbers are in ``fail`` with a lost connection."""

    def __init__(self, fail: set[int], *, fail_close: int = 0) -> None:
        super().__init__(fakeredis.FakeRedis())
        self.fail = fail
        self.fail_close = fail_close
        self.calls: list[int] = []

    def append_many(self, run_id: str, lines: Sequence[tuple[str, str]], *,
                    first_line: int = 1) -> int:
        self.calls.append(len(lines))
        if len(self.calls) in self.fail:
            raise redis.ConnectionError("Connection closed by server.")
        return super().append_many(run_id, lines, first_line=first_line)

    def close(self, run_id: str, *, status: str, exit_code: int | None,
              next_line: int | None = None) -> bool:
        if self.fail_close:
            self.fail_close -= 1
            raise redis.TimeoutError("Timeout reading from socket")
        return super().close(run_id, status=status, exit_code=exit_code, next_line=next_line)


def test_lines_the_writer_could_not_send_are_reported_not_skipped() -> None:
    from pitstop.runs.output import OutputWriter

    output = FlakyOutput(fail={2})
    writer = OutputWriter(output, "r1")  # no patience: a failed write is given up at once
    writer.write("stdout", "first")
    wait_for(lambda: len(output.calls) == 1)
    writer.write("stdout", "lost 1")
    writer.write("stdout", "lost 2")
    wait_for(lambda: writer.lines_sent == 3)
    writer.write("stdout", "after")
    writer.close(status="succeeded", exit_code=0)
    lost = output.calls[1]
    items = list(output.follow("r1", block_ms=1))
    assert _lines(items)[0] == "first"
    assert _lines(items)[1] == dropped_note(lost)
    assert _lines(items)[-1] == "after"
    assert len(_lines(items)) == 2 + (2 - lost) + 1


def test_the_writer_holds_its_lines_through_a_short_outage() -> None:
    from pitstop.runs.output import OutputWriter

    output = FlakyOutput(fail={2, 3, 4}, fail_close=2)
    writer = OutputWriter(output, "r1", patience=30)
    for number in range(5):
        writer.write("stdout", f"line {number}")
        wait_for(lambda n=number: writer.lines_sent == n + 1)
    assert writer.close(status="failed", exit_code=4)
    items = list(output.follow("r1", block_ms=1))
    assert _lines(items) == [f"line {n}" for n in range(5)]
    assert isinstance(items[-1], OutputEnd) and (items[-1].status, items[-1].exit_code) == (
        "failed", 4)


def test_the_writer_never_raises_when_it_cannot_end_the_output(
        caplog: pytest.LogCaptureFixture) -> None:
    from pitstop.runs.output import OutputWriter

    writer = OutputWriter(FlakyOutput(set(), fail_close=1000), "r1", patience=0.3)
    started = time.monotonic()
    assert not writer.close(status="succeeded", exit_code=0)
    assert time.monotonic() - started < 5
    assert "could not end its output stream (succeeded, exit code 0)" in caplog.text


def test_past_half_its_entry_budget_the_writer_lingers_to_pack_lines() -> None:
    from pitstop.runs.output import OutputWriter

    class Recording(RunOutput):
        def __init__(self) -> None:
            super().__init__(fakeredis.FakeRedis(), maxlen=21)  # 20 entries for lines
            self.sent: list[tuple[float, int]] = []

        def append_many(self, run_id: str, lines: Sequence[tuple[str, str]], *,
                        first_line: int = 1) -> int:
            self.sent.append((time.monotonic(), len(lines)))
            return super().append_many(run_id, lines, first_line=first_line)

    output = Recording()
    writer = OutputWriter(output, "r1", linger=0.4)
    for number in range(10):  # one entry per line while the budget lasts
        writer.write("stdout", f"eager {number}")
        wait_for(lambda n=number: len(output.sent) == n + 1)
    started = time.monotonic()
    for number in range(6):
        writer.write("stdout", f"packed {number}")
    wait_for(lambda: len(output.sent) == 11)
    sent_at, count = output.sent[-1]
    assert sent_at - started >= 0.35  # it waited for more lines …
    assert count == 6  # … and sent them as one
    writer.close(status="succeeded", exit_code=0)


class FlakyRedis(fakeredis.FakeRedis):
    """Reads fail while ``down`` is set, as on a paused or restarting server."""

    down = False
    failures = 0

    def xread(self, *args: Any, **kwargs: Any) -> Any:
        if self.down:
            self.failures += 1
            raise redis.TimeoutError("Timeout reading from socket")
        return super().xread(*args, **kwargs)


def test_follow_rides_out_an_outage_from_the_last_entry_read() -> None:
    from pitstop.connection.outage import RedisOutage

    client = FlakyRedis()
    output = RunOutput(client)
    output.append_many("r1", [("stdout", "before")], first_line=1)
    told: list[str] = []

    def sleep(_seconds: float) -> None:
        # while the follower waits, Redis comes back with more lines
        if client.failures >= 3:
            client.down = False
            output.append_many("r1", [("stdout", "during")], first_line=2)
            output.close("r1", status="succeeded", exit_code=0, next_line=3)

    outage = RedisOutage(60, on_down=lambda exc: told.append(str(exc)), sleep=sleep)
    items = output.follow("r1", block_ms=1, outage=outage)
    first = next(items)
    assert isinstance(first, OutputLine) and first.line == "before"
    client.down = True
    rest = [item for item in items if item is not None]
    assert _lines(rest) == ["during"]
    assert isinstance(rest[-1], OutputEnd)
    assert told == ["Timeout reading from socket"]


def test_follow_without_patience_fails_at_the_first_lost_read() -> None:
    client = FlakyRedis()
    client.down = True
    with pytest.raises(RedisUnavailable, match="lost Redis while following run r1: Timeout"):
        next(RunOutput(client).follow("r1", block_ms=1))


def test_a_rerun_numbers_its_lines_on_where_the_first_attempt_stopped() -> None:
    from pitstop.runs.output import OutputWriter

    output = RunOutput(fakeredis.FakeRedis())
    assert output.next_line("r1") == 1
    first = OutputWriter(output, "r1")  # its worker dies: never closed
    first.write("stdout", "running")
    first.write("stdout", "still running")
    wait_for(lambda: first.lines_sent == 2)
    assert output.next_line("r1") == 3
    second = OutputWriter(output, "r1")  # the idempotent script runs again
    second.write("stdout", "running")
    second.write("stdout", "done")
    second.close(status="succeeded", exit_code=0)
    lines = [i for i in output.follow("r1", block_ms=1) if isinstance(i, OutputLine)]
    assert [(i.number, i.line) for i in lines] == [
        (1, "running"), (2, "still running"), (3, "running"), (4, "done")]
