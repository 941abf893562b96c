"""Workstreams through a real Celery worker and a real Redis: stages and a parallel group with
script steps, failure into on_failure, retries, timeouts, cancel, concurrency, and workers
SIGKILLed mid-step."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import redis

from pitstop import components
from pitstop.kernel.constants import WS_ACTIVE_RUNS
from pitstop.kernel.proc import pid_alive
from pitstop.kernel.settings import load_settings
from pitstop.runs.store import Run
from pitstop.workstreams import (
    LaunchResult,
    Orchestrator,
    WorkstreamCatalog,
    orchestrator_from,
    repair_runs,
)
from tests.support import Proc, running, wait_for, write_script
from workers.app import create_app

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LOST_AFTER = "3"


@pytest.fixture(scope="module")
def ws_queue() -> str:
    return f"ws-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def ws_env(pitstop_env: dict[str, str]) -> dict[str, str]:
    return {**pitstop_env, "PITSTOP_LOST_AFTER_SECONDS": LOST_AFTER}


@pytest.fixture(scope="module")
def ws_worker(ws_env: dict[str, str], ws_queue: str, pitstop_home: Path) -> Iterator[Proc]:
    """A worker of this module's own (on its own queue, quick to give up on silent steps)."""
    with running(["worker", "-Q", ws_queue, "-c", "2", "-n", f"{ws_queue}@%h"], ws_env,
                 pitstop_home / f"{ws_queue}.log", ready="ready.", timeout=60) as proc:
        yield proc


class Launcher:
    """Launches from this process, as the router or the CLI would, through Celery."""

    def __init__(self, env: dict[str, str], queue: str, workstreams: dict[str, Any]) -> None:
        self.queue = queue
        settings = load_settings(environ=env)
        self.client = redis.Redis.from_url(env["PITSTOP_REDIS_URL"])
        redactor = components.new_redactor(settings)
        self.bus = components.event_bus(self.client, settings)
        self.orchestrator: Orchestrator = orchestrator_from(
            settings, self.client, self.bus, components.run_store(self.client, settings, redactor),
            create_app(settings, env["PITSTOP_REDIS_URL"]).send_task,
            catalog=WorkstreamCatalog.from_mapping({"workstreams": workstreams}),
            redactor=redactor)

    def launch(self, workstream: str, **kwargs: Any) -> LaunchResult:
        return self.orchestrator.launch_workstream(workstream, **kwargs)

    def run(self, run_id: str) -> Run:
        return self.orchestrator.runs.get_run(run_id)

    def ended(self, run_id: str | None, timeout: float = 30) -> Run:
        """The run once it has ended and been finalized (its event published, its slot free)."""
        assert run_id is not None

        def finalized() -> Run | None:
            run = self.run(run_id)
            done = run.terminal and not self.client.sismember(WS_ACTIVE_RUNS, run_id)
            return run if done else None

        return wait_for(finalized, timeout, interval=0.05, message=f"run {run_id} to end")

    def step(self, run_id: str, step_id: str) -> dict[str, Any]:
        return self.run(run_id).steps[step_id]


def _run(step_id: str, queue: str, script: str, *args: Any, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "run", "queue": queue,
            "params": {"script": script, "args": list(args)}, **extra}


def _emit(step_id: str, queue: str, event_type: str, **data: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "emit", "queue": queue,
            "params": {"type": event_type, "data": data}}


def test_stages_a_parallel_group_and_scripts_succeed(
        ws_worker: Proc, ws_env: dict[str, str], ws_queue: str) -> None:
    q = ws_queue
    launcher = Launcher(ws_env, q, {
        "WS": {"params": {"who": "fleet"}, "steps": [
            _run("hello", q, "echo_args.py", "hello {{ params.who }}"),
            {"parallel": [_run("exit0", q, "exit_code.py", "0"),
                          _emit("tell", q, "ws.told", code="{{ steps.hello.exit_code }}"),
                          {"id": "sub", "kind": "workstream", "queue": q,
                           "params": {"workstream": "SUB"}}]},
            _emit("done", q, "ws.done", exit0="{{ steps.exit0.status }}")]},
        "SUB": {"steps": [_emit("inner", q, "ws.sub")]}})
    cause = launcher.bus.publish("phase.1.completed", {"branch": "main"})
    launched = launcher.launch("WS", event=cause, trigger_id="rule-1")
    final = launcher.ended(launched.run_id)
    assert final.status == "succeeded", final.error
    assert {k: v["status"] for k, v in final.steps.items()} == dict.fromkeys(
        ("hello", "exit0", "tell", "sub", "done"), "succeeded")
    hello = final.steps["hello"]
    assert hello["outputs"]["stdout_tail"].startswith('["hello fleet"]')
    script_run = launcher.run(hello["outputs"]["run_id"])
    assert script_run.parent_run_id == final.run_id and script_run.status == "succeeded"
    group = [final.steps[s] for s in ("exit0", "tell", "sub")]
    assert min(s["started_at"] for s in group) >= hello["finished_at"]
    assert final.steps["done"]["started_at"] >= max(s["finished_at"] for s in group)
    trace = {e.type: e for e in launcher.bus.replay() if e.trace_id == cause.trace_id}
    assert trace["ws.told"].data == {"code": "0"} and trace["ws.told"].hops == 1
    assert trace["ws.done"].data == {"exit0": "succeeded"}
    assert trace["workstream.ws.completed"].hops == 1
    assert trace["workstream.ws.completed"].data["trigger_id"] == "rule-1"
    assert "workstream.sub.completed" in trace


def test_a_failing_script_runs_on_failure_and_sets_the_exit_code(
        ws_worker: Proc, ws_env: dict[str, str], ws_queue: str) -> None:
    q = ws_queue
    launcher = Launcher(ws_env, q, {"WS": {
        "steps": [_run("bad", q, "exit_code.py", "3"), _emit("never", q, "ws.never")],
        "on_failure": [_emit("alert", q, "ws.alert", step="{{ run.failed_step }}",
                             code="{{ steps.bad.exit_code }}")]}})
    final = launcher.ended(launcher.launch("WS").run_id)
    assert (final.status, final.exit_code) == ("failed", 3)
    assert final.error == "step bad failed (exit code 3)"
    statuses = {k: v["status"] for k, v in final.steps.items()}
    assert statuses == {"bad": "failed", "never": "skipped", "alert": "succeeded"}
    trace = {e.type: e for e in launcher.bus.replay() if e.trace_id == final.trace_id}
    assert trace["ws.alert"].data == {"step": "bad", "code": "3"}
    assert trace["workstream.ws.failed"].data["failed_step"] == "bad"


def test_a_failed_attempt_is_retried_after_its_backoff(
        ws_worker: Proc, ws_env: dict[str, str], ws_queue: str, pitstop_home: Path,
        tmp_path: Path) -> None:
    marker = tmp_path / "attempts"
    script = write_script(pitstop_home, "fail_once.py", """
        import sys
        with open(sys.argv[1], "a") as f:
            f.write("x")
        sys.exit(0 if len(open(sys.argv[1]).read()) > 1 else 5)
    """)
    launcher = Launcher(ws_env, ws_queue, {"WS": {"steps": [
        _run("flaky", ws_queue, script, str(marker), retries=2, backoff=0.5)]}})
    final = launcher.ended(launcher.launch("WS").run_id)
    assert final.status == "succeeded"
    flaky = final.steps["flaky"]
    assert flaky["attempt"] == 2 and marker.read_text() == "xx"
    [first] = flaky["history"][:1]
    assert (first["attempt"], first["status"]) == (1, "failed")
    assert _epoch(flaky["started_at"]) - _epoch(first["finished_at"]) >= 0.45  # the backoff


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_step_over_its_timeout_ends_the_run_timed_out(
        ws_worker: Proc, ws_env: dict[str, str], ws_queue: str) -> None:
    launcher = Launcher(ws_env, ws_queue, {"WS": {"steps": [
        _run("slow", ws_queue, "sleep.py", "30", timeout=1)]}})
    final = launcher.ended(launcher.launch("WS").run_id, timeout=40)
    assert (final.status, final.exit_code) == ("timed_out", 124)
    assert final.steps["slow"]["status"] == "timed_out"
    assert final.duration is not None and final.duration < 15


def test_cancel_stops_the_running_script_and_the_remaining_steps(
        ws_worker: Proc, ws_env: dict[str, str], ws_queue: str, pitstop_home: Path,
        tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = write_script(pitstop_home, "pause.py", """
        import os, signal, sys
        open(sys.argv[1], "w").write(str(os.getpid()))
        signal.pause()
    """)
    launcher = Launcher(ws_env, ws_queue, {"WS": {"steps": [
        _run("long", ws_queue, script, str(pid_file)), _emit("after", ws_queue, "ws.after")]}})
    run_id = launcher.launch("WS").run_id
    assert run_id is not None
    script_pid = int(wait_for(lambda: pid_file.exists() and pid_file.read_text(), 20,
                              message="the script to start"))
    launcher.orchestrator.cancel_run(run_id, reason="stop it")
    wait_for(lambda: not pid_alive(script_pid), 10, message="the script to be killed")
    wait_for(lambda: launcher.step(run_id, "long")["status"] == "cancelled", 10,
             message="the step to end cancelled")
    final = launcher.run(run_id)
    assert (final.status, final.error) == ("cancelled", "stop it")
    assert final.steps["after"]["status"] == "skipped"


def test_concurrency_queue_and_cancel_previous_through_a_worker(
        ws_worker: Proc, ws_env: dict[str, str], ws_queue: str, pitstop_home: Path,
        tmp_path: Path) -> None:
    script = write_script(pitstop_home, "hold.py", """
        import os, sys, time
        deadline = time.time() + 30
        while not os.path.exists(sys.argv[1]) and time.time() < deadline:
            time.sleep(0.05)
    """)
    release = tmp_path / "release"
    q = ws_queue
    launcher = Launcher(ws_env, q, {
        "Q": {"params": {"b": "main"}, "concurrency": {"policy": "queue", "key": "{{ params.b }}"},
              "steps": [_run("hold", q, script, str(release))]},
        "C": {"concurrency": {"policy": "cancel_previous"},
              "steps": [_run("hold", q, script, str(tmp_path / "never"))]}})
    first = launcher.launch("Q")
    second = launcher.launch("Q")
    assert second.status == "queued"
    wait_for(lambda: launcher.step(first.run_id or "", "hold")["status"] == "running", 20,
             message="the first run's step to start")
    assert launcher.run(second.run_id or "").status == "queued"
    release.write_text("go")
    done = launcher.ended(second.run_id)
    assert done.status == "succeeded"
    assert done.started_at is not None
    assert done.started_at >= launcher.run(first.run_id or "").finished_at  # type: ignore[operator]

    old = launcher.launch("C")
    wait_for(lambda: launcher.step(old.run_id or "", "hold")["status"] == "running", 20,
             message="the old run's step to start")
    new = launcher.launch("C")
    assert new.status == "cancelled_previous"
    assert launcher.ended(old.run_id).status == "cancelled"
    wait_for(lambda: launcher.step(old.run_id or "", "hold")["status"] == "cancelled", 10,
             message="the old script to be stopped")
    launcher.orchestrator.cancel_run(new.run_id or "")


@pytest.mark.timeout(150)
def test_a_worker_killed_mid_step_never_leaves_the_run_stuck(
        ws_env: dict[str, str], pitstop_home: Path, tmp_path: Path) -> None:
    queue = f"wskill-{uuid.uuid4().hex[:8]}"
    marker = tmp_path / "attempts"
    script = write_script(pitstop_home, "hang_first.py", """
        import os, signal, sys
        with open(sys.argv[1], "a") as f:
            f.write("x")
        if len(open(sys.argv[1]).read()) == 1:
            signal.pause()
        print("second attempt done", flush=True)
    """)
    hang = write_script(pitstop_home, "hang.py", """
        import signal
        signal.pause()
    """)
    launcher = Launcher(ws_env, queue, {
        "RETRY": {"steps": [_run("step", queue, script, str(marker), retries=1, backoff=0)]},
        "ONCE": {"steps": [_run("step", queue, hang)]}})
    args = ["worker", "-Q", queue, "-c", "1", "-n", f"{queue}@%h"]
    with running(args, ws_env, tmp_path / "worker.log", ready="ready.", timeout=60) as worker:
        # The pool process dies: Celery redelivers the message, whose claim finds the holder
        # dead; the attempt ends failed and the retry runs the step again.
        run_id = launcher.launch("RETRY").run_id or ""
        holder = wait_for(lambda: launcher.step(run_id, "step").get("pid"), 20,
                          message="the step to be claimed")
        wait_for(marker.exists, 10, message="the script to start")
        os.kill(holder, signal.SIGKILL)
        final = launcher.ended(run_id, timeout=60)
        assert final.status == "succeeded", final.error
        step = final.steps["step"]
        assert step["attempt"] == 2 and marker.read_text() == "xx"
        assert "died" in step["history"][0]["message"]
        # The whole worker dies: nothing is redelivered in time; the reaper ends the attempt.
        lost = launcher.launch("ONCE").run_id or ""
        wait_for(lambda: launcher.step(lost, "step")["status"] == "running", 20,
                 message="the second step to start")
        worker.kill()

    def reaped() -> Run | None:  # what Beat's reaper does every few seconds
        repair_runs(launcher.orchestrator)
        current = launcher.run(lost)
        return current if current.terminal else None

    final = wait_for(reaped, 30, interval=0.5, message="the reaper to end the run")
    assert final.status == "failed"
    assert "stopped heart-beating" in (final.error or "")
