"""``pitstop emit``, ``events`` and ``watch`` as a user runs them, against bad input, entries
that are not events, and a Redis restart."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pitstop.bus.eventbus import EVENT_FIELD, EventBus
from pitstop.kernel.constants import EVENT_CHANNEL_PREFIX, EVENT_STREAM
from tests.support import RestartableRedis, pitstop_cmd, restartable_redis, run_cli, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(120)]

INFINITE_HOPS = '{"id":"p","type":"x.y","time":"t","hops":1e400}'


@pytest.fixture
def own(tmp_path: Path) -> Iterator[RestartableRedis]:
    """A redis-server of the test's own (AOF on) that can be killed and restarted on its port."""
    with restartable_redis(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def env(pitstop_env: dict[str, str], own: RestartableRedis) -> dict[str, str]:
    return {**pitstop_env, "PITSTOP_REDIS_URL": own.info.url, "PITSTOP_LOST_AFTER_SECONDS": "30"}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _watch(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    watcher = subprocess.Popen(pitstop_cmd("watch", *args), env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert watcher.stderr is not None
    line = watcher.stderr.readline()
    assert "watching" in line, line
    return watcher


def test_emit_refuses_a_newline_in_the_type(env: dict[str, str], own: RestartableRedis) -> None:
    done = run_cli(["emit", "deploy\n.failed"], env)
    assert done.returncode == 2, done.stderr
    assert "may only use a-z, 0-9" in done.stderr
    assert "Traceback" not in done.stderr
    client = own.client()
    try:
        assert client.xlen(EVENT_STREAM) == 0
    finally:
        client.close()
    watched = run_cli(["watch", "deploy\n.*"], env)
    assert watched.returncode == 2, watched.stderr


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
                                   "99999999999999999999d", "soon"])
def test_a_bad_since_names_the_option(env: dict[str, str], since: str) -> None:
    done = run_cli(["events", "--since", since], env)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("pitstop: error: --since "), done.stderr
    assert "Traceback" not in done.stderr


def test_events_skips_an_entry_that_is_not_an_event_with_a_note(env: dict[str, str],
                                                                 own: RestartableRedis) -> None:
    client = own.client()
    try:
        bus = EventBus(client)
        before = bus.publish("good.before")
        bad_id = _text(client.xadd(EVENT_STREAM, {EVENT_FIELD: INFINITE_HOPS}))
        after = bus.publish("good.after")
    finally:
        client.close()
    listed = run_cli(["events", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    assert [json.loads(line)["id"] for line in listed.stdout.splitlines()] == [before.id,
                                                                               after.id]
    assert f"pitstop: skipped stream entry {bad_id}: " in listed.stderr
    table = run_cli(["events"], env)
    assert table.returncode == 0, table.stderr
    assert before.id in table.stdout and after.id in table.stdout


def test_watch_skips_an_entry_that_is_not_an_event_with_a_note(env: dict[str, str],
                                                               own: RestartableRedis) -> None:
    watcher = _watch(["--count", "2", "--json", "--timeout", "60"], env)
    client = own.client()
    try:
        # As a forger would write it: into the stream and onto the live channel.
        bad_id = _text(client.xadd(EVENT_STREAM, {EVENT_FIELD: INFINITE_HOPS}))
        client.publish(f"{EVENT_CHANNEL_PREFIX}x.y", INFINITE_HOPS)
        bus = EventBus(client)
        sent = [bus.publish("good.one"), bus.publish("good.two")]
    finally:
        client.close()
    out, err = watcher.communicate(timeout=60)
    assert watcher.returncode == 0, err
    assert [json.loads(line)["id"] for line in out.splitlines()] == [e.id for e in sent]
    assert f"pitstop: skipped stream entry {bad_id}: " in err


def test_watch_rides_out_a_redis_restart_and_prints_what_was_published_meanwhile(
        env: dict[str, str], own: RestartableRedis) -> None:
    watcher = _watch(["**", "--count", "4", "--json", "--timeout", "90"], env)
    assert watcher.stderr is not None
    client = own.client()
    try:
        first = EventBus(client).publish("before.restart")
        own.restart()
        # Published at once, before the watcher can be back: it must still print them.
        during = [EventBus(client).publish("after.restart", {"n": n}) for n in range(3)]
    finally:
        client.close()
    out, err = watcher.communicate(timeout=90)
    assert watcher.returncode == 0, err
    assert [json.loads(line)["id"] for line in out.splitlines()] == [
        first.id, *(event.id for event in during)]
    assert "pitstop: Redis unreachable, retrying" in err
    assert "pitstop: Redis is back" in err
    assert "no longer holds" not in err  # AOF kept the stream: nothing was lost


def test_watch_says_when_redis_stays_away_and_exits_3(env: dict[str, str],
                                                       own: RestartableRedis) -> None:
    watcher = _watch(["**", "--timeout", "60"], {**env, "PITSTOP_LOST_AFTER_SECONDS": "2"})
    own.server.kill()
    wait_for(lambda: watcher.poll() is not None, 30, message="watch to give up")
    _, err = watcher.communicate(timeout=10)
    assert watcher.returncode == 3, err
    assert "Redis unreachable, retrying" in err
    assert "lost Redis while watching events" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2001-02-30", "'2001-02-30' is not a valid !!timestamp value"),
        ("!!float x", "'x' is not a valid !!float value"),
        ("!!binary zz", "'zz' is not a valid !!binary value"),
        ("[" * 5000, "nested deeper than 64 levels"),
    ],
)
def test_a_config_value_yaml_cannot_construct_is_exit_2_naming_file_line_and_key(
        tmp_path: Path, pitstop_env: dict[str, str], value: str, expected: str) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "pitstop.yaml").write_text(f"scripts:\n  default_timeout: {value}\n")
    env = {key: item for key, item in pitstop_env.items() if key != "PITSTOP_CONFIG_DIR"}
    done = run_cli(["events"], env, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "pitstop.yaml:2 at scripts.default_timeout" in done.stderr
    assert expected in done.stderr
    assert "Traceback" not in done.stderr
