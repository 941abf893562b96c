"""A run's output stream, its cancel flag, and reaping lost runs (fakeredis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import fakeredis

from pitstop.runoutput import OutputEnd, OutputLine, RunOutput, reap_lost_runs
from pitstop.runs import RunStore
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
    from pitstop.runoutput import OutputWriter

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

    from pitstop.runoutput import OutputWriter

    class SlowOutput(RunOutput):
        def __init__(self) -> None:
            super().__init__(fakeredis.FakeRedis())
            self.batches: list[int] = []
            self.release = threading.Event()

        def append_many(self, run_id: str, lines: list[tuple[str, str]]) -> None:  # type: ignore[override]
            self.batches.append(len(lines))
            self.release.wait(10)  # the first write is "in flight" until the test says
            super().append_many(run_id, lines)

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
