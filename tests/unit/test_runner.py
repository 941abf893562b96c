"""ScriptRunner without a broker: claims, redeliveries, refusals and results (fakeredis)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import fakeredis
import pytest

from pitstop.bus.eventbus import EventBus
from pitstop.kernel.errors import ConfigError, ScriptFailed
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.sealing import Sealer, generate_key
from pitstop.kernel.settings import load_settings
from pitstop.kernel.statelog import StateLog
from pitstop.runs.output import OutputEnd, OutputLine, RunOutput
from pitstop.runs.store import RunStore
from pitstop.scripts.dispatch import seal_binding
from pitstop.scripts.runner import ScriptRequest, ScriptRunner, Skip
from tests.support import FIXTURE_SCRIPTS

pytestmark = pytest.mark.timeout(30)

KEY = generate_key()


class World:
    """One fake Redis, a run store on it, and runners for pretend processes."""

    def __init__(self, tmp_path: Path) -> None:
        self.client = fakeredis.FakeRedis()
        self.tmp_path = tmp_path
        self.settings = load_settings(tmp_path / "config", environ={
            "PITSTOP_REDIS_URL": "redis://127.0.0.1:1/0", "PITSTOP_STATE_DIR": str(tmp_path),
            "PITSTOP_ALLOWED_ROOTS": str(FIXTURE_SCRIPTS), "PITSTOP_SECRET_KEY": KEY})
        self.runs = RunStore(self.client)
        self.output = RunOutput(self.client)

    def runner(self, *, host: str = "build-1", pid: int | None = None,
               sealer: Sealer | Exception | None = None) -> ScriptRunner:
        def make_sealer() -> Sealer | None:
            if isinstance(sealer, Exception):
                raise sealer
            return sealer

        return ScriptRunner(
            self.settings, self.runs, self.output, bus=EventBus(self.client), host=host,
            pid=os.getpid() if pid is None else pid, new_redactor=Redactor,
            state_log=lambda redactor: StateLog("cli_executions", self.tmp_path,
                                                redactor=redactor),
            sealer=make_sealer)

    def queued(self, script: str = "exit_code.py", args: list[str] | None = None,
               **fields: object) -> ScriptRequest:
        run = self.runs.create_run(kind="script", queue="linux")
        return ScriptRequest(run_id=run.run_id, script=str(FIXTURE_SCRIPTS / script),
                             args=args or ["0"], **fields)  # type: ignore[arg-type]

    def stream(self, run_id: str) -> tuple[list[str], OutputEnd | None]:
        lines: list[str] = []
        for item in self.output.follow(run_id, block_ms=1):
            if item is None:
                return lines, None
            if isinstance(item, OutputEnd):
                return lines, item
            if isinstance(item, OutputLine):
                lines.append(item.line)
        return lines, None


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


# --- claims -------------------------------------------------------------------------------------


def test_a_queued_run_is_claimed_by_this_process(world: World) -> None:
    request = world.queued()
    assert world.runner().claim(request) is None
    run = world.runs.get_run(request.run_id)
    assert (run.status, run.host, run.worker_pid, run.attempts) == (
        "running", "build-1", os.getpid(), 1)


@pytest.mark.parametrize("status", ["succeeded", "cancelled", "expired"])
def test_a_redelivered_finished_run_is_skipped(world: World, status: str) -> None:
    request = world.queued()
    world.runs.update_run(request.run_id, status=status)
    assert world.runner().claim(request) == Skip(request.run_id, status)


def test_a_run_held_by_a_live_worker_elsewhere_is_skipped(world: World) -> None:
    request = world.queued()
    assert world.runner(host="build-2", pid=1).claim(request) is None  # fresh heartbeat
    assert world.runner().claim(request) == Skip(request.run_id, "running")


def test_a_run_whose_process_died_here_is_lost_unless_idempotent(world: World) -> None:
    dead_pid = 2**22 + 4321  # beyond pid_max: no such process
    lost = world.queued()
    world.runner(pid=dead_pid).claim(lost)
    with pytest.raises(ScriptFailed, match="lost: the worker process running this script died"):
        world.runner().claim(lost)
    assert world.runs.get_run(lost.run_id).status == "lost"
    end = world.stream(lost.run_id)[1]
    assert end is not None and (end.status, end.exit_code) == ("lost", None)

    rerun = world.queued(idempotent=True)
    world.runner(pid=dead_pid).claim(rerun)
    assert world.runner().claim(rerun) is None
    assert world.runs.get_run(rerun.run_id).attempts == 2


def test_a_run_nobody_recorded_is_skipped_as_unknown(world: World) -> None:
    request = ScriptRequest(run_id="never-created", script="x.py")
    assert world.runner().claim(request) == Skip("never-created", "unknown")


# --- execution ----------------------------------------------------------------------------------


def test_a_succeeding_script_returns_its_result(world: World) -> None:
    request = world.queued(args=["0"])
    runner = world.runner()
    runner.claim(request)
    result = runner.execute(request)
    assert result.succeeded and result.exit_code == 0
    assert world.runs.get_run(request.run_id).status == "succeeded"
    end = world.stream(request.run_id)[1]
    assert end is not None and (end.status, end.exit_code) == ("succeeded", 0)


def test_a_failing_script_is_script_failed_with_its_exit_code(world: World) -> None:
    request = world.queued(args=["3"])
    runner = world.runner()
    runner.claim(request)
    with pytest.raises(ScriptFailed, match=r"failed: exit code 3 after"):
        runner.execute(request)
    assert world.runs.get_run(request.run_id).exit_code == 3
    end = world.stream(request.run_id)[1]
    assert end is not None and (end.status, end.exit_code) == ("failed", 3)


@pytest.mark.parametrize(("sealer", "says"), [
    (None, "no PITSTOP_SECRET_KEY"),
    (ConfigError("the secret key is not a valid key", key_path="secret_key"), "not a valid key"),
    (Sealer(generate_key()), "cannot decrypt"),
])
def test_a_run_refused_before_it_starts_ends_failed_and_says_why(
        world: World, sealer: Sealer | Exception | None, says: str) -> None:
    request = world.queued(sealed_env=Sealer(KEY).seal({"A_TOKEN": "x"}))
    runner = world.runner(sealer=sealer)
    runner.claim(request)
    with pytest.raises(ScriptFailed, match="refused"):
        runner.execute(request)
    run = world.runs.get_run(request.run_id)
    assert run.status == "failed" and says in (run.error or "")
    lines, end = world.stream(request.run_id)
    assert any(says in line for line in lines)  # where the waiting CI step sees it
    assert end is not None and end.status == "failed"


def test_an_unexpected_error_before_the_start_never_leaves_the_run_running(world: World) -> None:
    request = world.queued(sealed_env="anything")
    runner = world.runner(sealer=RuntimeError("a bug"))
    runner.claim(request)
    with pytest.raises(RuntimeError):
        runner.execute(request)
    run = world.runs.get_run(request.run_id)
    assert run.status == "failed"
    assert "the worker gave up: RuntimeError: a bug" in (run.error or "")


def _sealed_request(world: World, script: str, args: list[str], *,
                    env: dict[str, str] | None = None, secret_env: list[str] | None = None,
                    hidden: dict[str, str] | None = None) -> ScriptRequest:
    run = world.runs.create_run(kind="script", queue="linux")
    path = str(FIXTURE_SCRIPTS / script)
    sealer = Sealer(KEY)
    return ScriptRequest(
        run_id=run.run_id, script=path, args=args, secret_env=secret_env or [],
        sealed_env=env and sealer.seal(env, bound_to=seal_binding(
            run.run_id, path, args, None, secret_env=secret_env or [])),
        sealed_args=hidden and sealer.seal(hidden, bound_to=seal_binding(
            run.run_id, path, args, None, part="args")))


def test_sealed_values_are_redacted_only_when_secret(world: World) -> None:
    request = _sealed_request(world, "env_dump.py", [], env={
        "GIT_SHA": "abc123", "BUILD_TYPE": "release", "BUILD_LABEL": "canary-marked-77",
        "DEPLOY_TOKEN": "canary-named-78"}, secret_env=["BUILD_LABEL"])
    runner = world.runner(sealer=Sealer(KEY))
    runner.claim(request)
    result = runner.execute(request)
    lines, _ = world.stream(request.run_id)
    shown = json.loads(lines[0])
    # Plain CI data reads as it is; marked or secret-named values never show anywhere.
    assert (shown["GIT_SHA"], shown["BUILD_TYPE"]) == ("abc123", "release")
    assert shown["BUILD_LABEL"] == shown["DEPLOY_TOKEN"] == "***"
    everything = "\n".join(lines) + result.stdout_tail + world.runs.get_run(
        request.run_id).model_dump_json()
    assert "canary-marked-77" not in everything and "canary-named-78" not in everything


def test_sealed_secret_arguments_reach_the_script_and_nothing_else(world: World) -> None:
    shown_args = ["--token", "***", "--password=***", "***", "--release"]
    request = _sealed_request(world, "echo_args.py", shown_args, hidden={
        "1": "canary-tok-1", "2": "--password=canary-pw-2", "3": "canary-env-3"})
    runner = world.runner(sealer=Sealer(KEY))
    runner.claim(request)
    result = runner.execute(request)
    lines, _ = world.stream(request.run_id)
    assert json.loads(lines[0]) == shown_args  # what the script printed, redacted
    assert lines[1:] == ["--token", "***", "--password=***", "***", "--release"]
    assert result.args == shown_args
    record = world.runs.get_run(request.run_id)
    assert record.status == "succeeded"
    assert "canary" not in "\n".join(lines) + result.stdout_tail + record.model_dump_json()
    assert "canary" not in (world.tmp_path / "cli_executions.jsonl").read_text()


def test_a_forged_message_cannot_move_sealed_values_between_parts(world: World) -> None:
    request = _sealed_request(world, "echo_args.py", ["***"], hidden={"0": "canary-arg"})
    swapped = replace(request, sealed_env=request.sealed_args, sealed_args=None)
    runner = world.runner(sealer=Sealer(KEY))
    runner.claim(swapped)
    with pytest.raises(ScriptFailed, match="sealed for another run"):
        runner.execute(swapped)
    assert world.runs.get_run(request.run_id).executions == []


@pytest.mark.parametrize(("fields", "says"), [
    ({"timeout": -5}, "timeout -5 is not a positive number"),
    ({"timeout": 0}, "timeout 0 is not a positive number"),
    ({"timeout": float("nan")}, "timeout nan is not"),
    ({"timeout": float("inf")}, "timeout inf is not"),
    ({"timeout": "300"}, "timeout '300' is not"),
    ({"timeout": True}, "timeout True is not"),
    ({"args": "0"}, "args is not a list of strings"),
    ({"args": [0]}, "args is not a list of strings"),
    ({"env": [["GIT_SHA", "x"]]}, "env is not a mapping"),
    ({"env": {"GIT_SHA": 1}}, "env is not a mapping"),
    ({"script": ["x.py"]}, "script ['x.py'] is not a path"),
    ({"script": ""}, "script '' is not a path"),
    ({"cwd": 5}, "cwd 5 is not a string"),
    ({"sealed_env": {"A": "b"}}, "sealed_env {'A': 'b'} is not a string"),
    ({"secret_env": "A_TOKEN"}, "secret_env is not a list"),
    ({"idempotent": "yes"}, "idempotent 'yes' is not true or false"),
    ({"unknown": ("evil", "x")}, "unknown fields evil, x"),
])
def test_a_malformed_message_ends_its_run_failed_at_once(world: World, fields: dict[str, object],
                                                          says: str) -> None:
    run = world.runs.create_run(kind="script", queue="linux")
    base: dict[str, object] = {"run_id": run.run_id,
                               "script": str(FIXTURE_SCRIPTS / "exit_code.py"), "args": ["0"]}
    request = ScriptRequest(**{**base, **fields})  # type: ignore[arg-type]
    runner = world.runner()
    assert runner.claim(request) is None
    with pytest.raises(ScriptFailed, match="refused: the task message is malformed"):
        runner.execute(request)
    record = world.runs.get_run(run.run_id)
    assert record.status == "failed" and says in (record.error or ""), record.error
    assert record.executions == []  # nothing ran
    lines, end = world.stream(run.run_id)
    assert any(says in line for line in lines)
    assert end is not None and end.status == "failed"


@pytest.mark.parametrize("run_id", [None, 5, "", "x" * 500, "a b", "a\nb"])
def test_a_message_without_a_usable_run_id_is_skipped(world: World, run_id: object) -> None:
    request = ScriptRequest(run_id=run_id, script="x.py")  # type: ignore[arg-type]
    skip = world.runner().claim(request)
    assert skip is not None and skip.status == "invalid"
