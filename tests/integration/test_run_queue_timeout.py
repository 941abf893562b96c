"""A run nobody takes from its queue: it expires, ``--wait`` ends, a late worker drops it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import redis

from pitstop.kernel.statelog import read_log
from pitstop.runs.store import RunStore
from tests.support import run_cli, running, task_outcome, wait_for, write_script

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_wait_on_a_queue_nobody_consumes_expires_the_run_and_exits_75(
        pitstop_env: dict[str, str], pitstop_home: Path, tmp_path: Path) -> None:
    canary = tmp_path / "ran"
    path = write_script(pitstop_home, "never_taken.py", f"open({str(canary)!r}, 'w').close()\n")
    queue = f"nobody-{uuid.uuid4().hex[:8]}"

    done = run_cli(["run", path, "--queue", queue, "--wait", "--queue-timeout", "2", "--json"],
                   pitstop_env, timeout=60)

    assert done.returncode == 75, done.stderr
    final = json.loads(done.stdout.splitlines()[-1])
    run_id = final["run_id"]
    assert final["status"] == "expired"
    assert (f"pitstop: no worker took run {run_id} from queue {queue!r} within 2s "
            f"(is a worker consuming it? pitstop worker -Q {queue})\n") in done.stderr
    assert "Traceback" not in done.stderr
    client = redis.Redis.from_url(pitstop_env["PITSTOP_REDIS_URL"])
    record = RunStore(client).get_run(run_id)
    assert record.status == "expired"
    assert record.queue_timeout == 2
    assert record.started_at is None and record.attempts == 0
    state_dir = Path(pitstop_env["PITSTOP_STATE_DIR"])
    logged = [e["run"]["status"] for e in read_log("runs", state_dir)
              if e["run"]["run_id"] == run_id and e["op"] == "expire"]
    assert logged == ["expired"]

    # A worker that turns up later finds the run expired and does not run it.
    with running(["worker", "-Q", queue, "-c", "1", "-n", f"{queue}@%h"], pitstop_env,
                 tmp_path / "worker.log", ready="ready.", timeout=60):
        # The STARTED record (task_track_started) comes first: wait for the outcome.
        meta = wait_for(lambda: task_outcome(client, run_id), 30,
                        message="the worker to take the stale message")
    assert meta["status"] == "SUCCESS"
    assert meta["result"] == {"run_id": run_id, "skipped": True, "status": "expired"}
    assert not canary.exists()
    assert RunStore(client).get_run(run_id).status == "expired"


@pytest.mark.parametrize(("value", "says"), [("0", "--queue-timeout"), ("-1", "--queue-timeout"),
                                             ("nan", "--queue-timeout"), ("soon", "--queue-timeout")])
def test_a_bad_queue_timeout_is_refused_before_anything_is_sent(
        pitstop_env: dict[str, str], pitstop_home: Path, value: str, says: str) -> None:
    path = write_script(pitstop_home, "not_sent.py", "print('x')\n")
    queue = f"refused-{uuid.uuid4().hex[:8]}"
    done = run_cli(["run", path, "--queue", queue, f"--queue-timeout={value}"], pitstop_env)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    client = redis.Redis.from_url(pitstop_env["PITSTOP_REDIS_URL"])
    assert [r for r in RunStore(client).list_runs(limit=50) if r.queue == queue] == []

