"""ScriptDispatcher without a broker: what it records and what it would send."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakeredis
import pytest

from pitstop.kernel.constants import EXPIRES_SLACK_SECONDS, TASK_RUN_SCRIPT
from pitstop.kernel.errors import ConfigError, PathNotAllowed, ScriptError, ValidationError
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.sealing import Sealer, generate_key
from pitstop.kernel.settings import load_settings
from pitstop.runs.store import RunStore
from pitstop.scripts.dispatch import ScriptDispatcher, seal_binding


class RecordingSend:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, name: str, **options: Any) -> None:
        self.calls.append((name, options))


def dispatcher(tmp_path: Path, **environ: str) -> tuple[ScriptDispatcher, RunStore, RecordingSend]:
    settings = load_settings(tmp_path, environ={"PITSTOP_REDIS_URL": "redis://h:1/0",
                                                "PITSTOP_STATE_DIR": str(tmp_path), **environ})
    store = RunStore(fakeredis.FakeRedis())
    send = RecordingSend()
    return ScriptDispatcher(settings, store, Redactor(), send), store, send


def test_records_a_queued_run_and_sends_it_under_the_run_id(tmp_path: Path) -> None:
    dispatch, store, send = dispatcher(tmp_path)
    run = dispatch.enqueue("scripts/build.sh", ["--release"], queue="linux", timeout=30,
                           env={"GIT_SHA": "abc"})
    assert store.get_run(run.run_id).status == "queued"
    [(name, options)] = send.calls
    assert name == TASK_RUN_SCRIPT
    assert options["task_id"] == run.run_id
    assert options["queue"] == "linux"
    assert options["kwargs"]["env"] == {"GIT_SHA": "abc"}
    assert options["time_limit"] == 30 + 30  # the script's timeout plus the grace
    assert "abc" not in options["kwargsrepr"]


def test_secret_values_are_sealed_never_sent_in_the_clear(tmp_path: Path) -> None:
    key = generate_key()
    dispatch, _, send = dispatcher(tmp_path, PITSTOP_SECRET_KEY=key)
    run = dispatch.enqueue("s.sh", ["--x"], env={"DEPLOY_TOKEN": "canary-1", "BUILD_MODE": "fast"})
    [(_, options)] = send.calls
    # With a key every value travels sealed: a message Flower shows in the clear holds none.
    assert options["kwargs"]["env"] == {}
    assert "canary-1" not in repr(options) and "fast" not in repr(options)
    sealed = options["kwargs"]["sealed_env"]
    assert Sealer(key).unseal(sealed, bound_to=seal_binding(run.run_id, "s.sh", ["--x"], None)) == {
        "DEPLOY_TOKEN": "canary-1", "BUILD_MODE": "fast"}
    with pytest.raises(ScriptError, match="sealed for another run"):
        Sealer(key).unseal(sealed, bound_to=seal_binding("another-run", "s.sh", ["--x"], None))


def test_without_a_key_plain_values_travel_plain_and_secret_ones_are_refused(
        tmp_path: Path) -> None:
    dispatch, store, send = dispatcher(tmp_path)  # a real Redis URL and no shared key
    dispatch.enqueue("s.sh", env={"BUILD_MODE": "fast"})
    assert send.calls[0][1]["kwargs"]["env"] == {"BUILD_MODE": "fast"}
    assert send.calls[0][1]["kwargs"]["sealed_env"] is None
    with pytest.raises(ConfigError, match="DEPLOY_TOKEN"):
        dispatch.enqueue("s.sh", env={"DEPLOY_TOKEN": "canary-1"})
    assert len(send.calls) == 1 and len(store.list_runs()) == 1  # nothing recorded or sent


def test_env_that_would_run_other_code_is_refused_before_anything_is_recorded(
        tmp_path: Path) -> None:
    dispatch, store, send = dispatcher(tmp_path)
    with pytest.raises(ValidationError, match="--env BASH_ENV, LD_PRELOAD: may not be set"):
        dispatch.enqueue("s.sh", env={"LD_PRELOAD": "/tmp/x.so", "BASH_ENV": "$(id)"})
    assert send.calls == [] and store.list_runs() == []


def test_a_secret_value_is_redacted_wherever_else_it_shows(tmp_path: Path) -> None:
    dispatch, store, send = dispatcher(tmp_path, PITSTOP_SECRET_KEY=generate_key())
    run = dispatch.enqueue("s.sh", ["--token=canary-1"],
                           env={"DEPLOY_TOKEN": "canary-1", "BUILD_MODE": "fast"})
    [(_, options)] = send.calls
    assert options["kwargs"]["args"] == ["--token=***"]  # the real one travels sealed
    assert "canary-1" not in repr(options)  # logs, task events, Flower, the AOF do not
    recorded = store.get_run(run.run_id).params
    assert "canary-1" not in repr(recorded)
    assert recorded["env"] == ["BUILD_MODE", "DEPLOY_TOKEN"]  # names only


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"script": "-rf"}, ValidationError),
        ({"script": "ok.sh", "timeout": 10**6}, ValidationError),
        ({"script": "ok.sh", "timeout": float("nan")}, ValidationError),
        ({"script": "ok.sh", "timeout": -1}, ValidationError),
        ({"script": "ok.sh", "env": {"API_TOKEN": "x"}}, ConfigError),  # no shared key
        ({"script": "ok.sh", "queue_timeout": 0}, ValidationError),
        ({"script": "ok.sh", "queue_timeout": -3}, ValidationError),
        ({"script": "ok.sh", "queue_timeout": float("nan")}, ValidationError),
        ({"script": "ok.sh", "queue_timeout": float("inf")}, ValidationError),
        ({"script": "ok.sh", "queue_timeout": 10**9}, ValidationError),  # longer than runs live
        # what the sender's own config already refuses: the worker would only fail it later
        ({"script": "ok.sh", "env": {"CC": "x"}}, ValidationError),
        ({"script": "ok.sh", "env": {"HOME": "/tmp/x"}}, ValidationError),
        ({"script": "ok.sh", "env": {"1BAD": "x"}}, ValidationError),
        ({"script": "/etc/passwd"}, PathNotAllowed),
        ({"script": "../../etc/passwd"}, PathNotAllowed),
        ({"script": "ok.sh", "queue": "a b"}, ValidationError),
        ({"script": "ok.sh", "queue": "x,y"}, ValidationError),
        ({"script": "ok.sh", "queue": "-Q"}, ValidationError),
        ({"script": "ok.sh", "queue": "q\x1b[2J"}, ValidationError),
    ],
)
def test_refused_before_anything_is_recorded_or_sent(tmp_path: Path, kwargs: dict[str, Any],
                                                     error: type[Exception]) -> None:
    dispatch, store, send = dispatcher(tmp_path)
    with pytest.raises(error):
        dispatch.enqueue(**kwargs)
    assert send.calls == []
    assert store.list_runs() == []


def test_the_run_and_its_message_expire_after_the_configured_queue_ttl(tmp_path: Path) -> None:
    dispatch, store, send = dispatcher(tmp_path, PITSTOP_QUEUE_TTL="900")
    run = dispatch.enqueue("scripts/build.sh", queue="gpu")
    [(_, options)] = send.calls
    assert options["expires"] == 900 + EXPIRES_SLACK_SECONDS  # padded: the clocks may differ
    recorded = store.get_run(run.run_id)
    assert recorded.queue_deadline is not None
    assert recorded.queue_timeout == 900


def test_queue_timeout_overrides_the_configured_ttl_per_run(tmp_path: Path) -> None:
    dispatch, store, send = dispatcher(tmp_path)
    default = dispatch.enqueue("scripts/build.sh")
    override = dispatch.enqueue("scripts/build.sh", queue_timeout=2.5)
    assert [options["expires"] - EXPIRES_SLACK_SECONDS for _, options in send.calls] == [86400, 2.5]
    assert store.get_run(default.run_id).queue_timeout == 86400
    assert store.get_run(override.run_id).queue_timeout == 2.5


def test_the_senders_caller_env_setting_decides_its_early_check(tmp_path: Path) -> None:
    dispatch, store, send = dispatcher(tmp_path, PITSTOP_CALLER_ENV="CC,GIT_SHA")
    dispatch.enqueue("ok.sh", env={"CC": "clang"})
    with pytest.raises(ValidationError, match="--env BUILD_TYPE: not a name callers may set "
                                              r"\(scripts.caller_env\)"):
        dispatch.enqueue("ok.sh", env={"BUILD_TYPE": "release"})
    assert len(send.calls) == 1 and len(store.list_runs()) == 1


SECRET_ARGS = ["--token", "canary-a", "--api-key", "canary-b", "--secret", "canary-c",
               "--password", "canary-d", "--password=canary-e", "--pat", "canary-f", "--release"]


def test_secret_arguments_travel_sealed_and_show_masked(tmp_path: Path) -> None:
    key = generate_key()
    dispatch, store, send = dispatcher(tmp_path, PITSTOP_SECRET_KEY=key)
    run = dispatch.enqueue("s.sh", SECRET_ARGS)
    [(_, options)] = send.calls
    shown = ["--token", "***", "--api-key", "***", "--secret", "***", "--password", "***",
             "--password=***", "--pat", "***", "--release"]
    assert options["kwargs"]["args"] == shown
    assert store.get_run(run.run_id).params["args"] == shown
    assert options["kwargs"]["sealed_env"] is None
    assert not [c for c in "abcdef" if f"canary-{c}" in repr(options) + repr(
        store.get_run(run.run_id).model_dump())]
    binding = seal_binding(run.run_id, "s.sh", shown, None, part="args")
    assert Sealer(key).unseal(options["kwargs"]["sealed_args"], bound_to=binding) == {
        "1": "canary-a", "3": "canary-b", "5": "canary-c", "7": "canary-d",
        "8": "--password=canary-e", "10": "canary-f"}
    # Bound to its part of the message: it does not open as --env values.
    with pytest.raises(ScriptError, match="sealed for another run"):
        Sealer(key).unseal(options["kwargs"]["sealed_args"],
                           bound_to=seal_binding(run.run_id, "s.sh", shown, None))


def test_secret_arguments_without_a_shared_key_are_refused(tmp_path: Path) -> None:
    dispatch, store, send = dispatcher(tmp_path)
    with pytest.raises(ConfigError) as err:
        dispatch.enqueue("s.sh", ["--password", "canary-d", "--release"])
    assert "(--password *** --release)" in str(err.value)
    assert "canary-d" not in str(err.value) and "PITSTOP_SECRET_KEY" in str(err.value)
    assert send.calls == [] and store.list_runs() == []
    dispatch.enqueue("s.sh", ["--release", "--password-stdin"])  # nothing secret: plain


def test_secret_env_marks_values_secret_whatever_their_names(tmp_path: Path) -> None:
    key = generate_key()
    dispatch, _, send = dispatcher(tmp_path, PITSTOP_SECRET_KEY=key)
    run = dispatch.enqueue("s.sh", ["--label", "canary-label"],
                           env={"BUILD_LABEL": "canary-label", "GIT_SHA": "abc123"},
                           secret_env=["BUILD_LABEL"])
    [(_, options)] = send.calls
    kwargs = options["kwargs"]
    assert kwargs["secret_env"] == ["BUILD_LABEL"]
    assert kwargs["args"] == ["--label", "***"]  # a known secret, wherever it shows
    assert "canary-label" not in repr(options)
    binding = seal_binding(run.run_id, "s.sh", ["--label", "***"], None,
                           secret_env=["BUILD_LABEL"])
    assert Sealer(key).unseal(kwargs["sealed_env"], bound_to=binding)["GIT_SHA"] == "abc123"
    with pytest.raises(ScriptError, match="sealed for another run"):  # marks cannot be dropped
        Sealer(key).unseal(kwargs["sealed_env"], bound_to={**binding, "secret_env": []})
    with pytest.raises(ValidationError, match="secret_env names NOPE"):
        dispatch.enqueue("s.sh", env={"GIT_SHA": "x"}, secret_env=["NOPE"])
    keyless, _, _ = dispatcher(tmp_path / "keyless")
    with pytest.raises(ConfigError, match="--env BUILD_LABEL: secret values"):
        keyless.enqueue("s.sh", env={"BUILD_LABEL": "x"}, secret_env=["BUILD_LABEL"])
