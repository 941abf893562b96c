"""``follow_run`` (``run --wait``, ``show --follow``) through Redis outages, on fakeredis."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import fakeredis
import pytest
import redis

from pitstop.cli.common import Context
from pitstop.cli.follow import exit_code_for, follow_run
from pitstop.kernel.errors import RedisUnavailable
from pitstop.runs.output import OutputWriter, RunOutput
from pitstop.runs.store import RunStore


class StallingRedis(fakeredis.FakeRedis):
    """Run record reads (GET) time out ``stalls`` times, as on a paused server; then ``after``
    runs (the worker finishing while the follower waited)."""

    stalls = 0
    after: Any = None

    def get(self, name: Any) -> Any:
        if self.stalls > 0:
            self.stalls -= 1
            if self.stalls == 0 and self.after is not None:
                self.after()
            raise redis.TimeoutError("Timeout reading from socket")
        return super().get(name)


def context(client: redis.Redis, lost_after: float = 60) -> Context:
    settings = SimpleNamespace(scripts=SimpleNamespace(lost_after_seconds=lost_after))
    return cast("Context", SimpleNamespace(settings=settings, redis=lambda: client,
                                           run_store=lambda: RunStore(client)))


def started_run(server: fakeredis.FakeServer) -> tuple[RunStore, RunOutput, str]:
    """A running run, seen through a client that never stalls (the worker's)."""
    client = fakeredis.FakeRedis(server=server)
    store = RunStore(client)
    run = store.create_run(kind="script")
    store.claim_run(run.run_id, host="h", worker_pid=1)
    return store, RunOutput(client), run.run_id


def test_status_checks_ride_out_an_outage(capsys: pytest.CaptureFixture[str]) -> None:
    server = fakeredis.FakeServer()
    store, output, run_id = started_run(server)
    writer = OutputWriter(output, run_id)
    writer.write("stdout", "working")

    def finish() -> None:
        writer.write("stdout", "done")
        store.update_run(run_id, status="failed", exit_code=5)
        writer.close(status="failed", exit_code=5)

    follower = StallingRedis(server=server)
    follower.stalls, follower.after = 4, finish
    final = follow_run(context(follower), run_id, requests=[])

    assert (final.status, exit_code_for(final)) == ("failed", 5)
    out, err = capsys.readouterr()
    assert out == "working\ndone\n"
    assert err.count("pitstop: Redis unreachable, retrying…") == 1
    assert "Redis is back" in err


def test_an_outage_longer_than_lost_after_fails_with_exit_3() -> None:
    server = fakeredis.FakeServer()
    _, _, run_id = started_run(server)
    follower = StallingRedis(server=server)
    follower.stalls = 1_000_000
    with pytest.raises(RedisUnavailable, match=f"lost Redis while following run {run_id}: "
                                               r"unreachable for \ds") as caught:
        follow_run(context(follower, lost_after=0.5), run_id, requests=[])
    assert caught.value.exit_code == 3


def test_an_end_the_worker_could_not_record_decides_the_exit_code(
        capsys: pytest.CaptureFixture[str]) -> None:
    server = fakeredis.FakeServer()
    store, output, run_id = started_run(server)
    # Redis was down when the script ended: the record still says running, but the worker
    # ended the output with the result.
    output.append_many(run_id, [("stdout", "built")], first_line=1)
    output.close(run_id, status="failed", exit_code=4, next_line=2)
    final = follow_run(context(fakeredis.FakeRedis(server=server)), run_id, requests=[])
    assert (final.status, final.exit_code, exit_code_for(final)) == ("failed", 4, 4)
    assert store.get_run(run_id).status == "running"
    assert ("is recorded running, but its worker reported it failed (exit code 4)"
            in capsys.readouterr().err)
