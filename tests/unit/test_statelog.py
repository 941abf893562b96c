"""State logs: whole-line appends, rotation, concurrent writers, tolerant reading, --since."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import stat
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from pitstop.kernel.errors import ValidationError
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.statelog import StateLog, list_logs, private_dir, read_log
from pitstop.kernel.timeparse import parse_since
from tests.support import FakeClock, wait_for

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def raw_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


# --- append --------------------------------------------------------------------------------------


def test_append_adds_schema_and_ts_and_writes_one_line(tmp_path: Path) -> None:
    state = tmp_path / ".state"
    log = StateLog("cli_executions", state, clock=FakeClock(T0))
    written = log.append({"script": "a.py", "msg": "two\nlines"})
    assert log.path == state / "cli_executions.jsonl"
    assert written == {
        "schema": "pitstop.cli_executions/1",
        "ts": "2024-05-01T12:00:00.000Z",
        "script": "a.py",
        "msg": "two\nlines",
    }
    lines = raw_lines(log.path)
    assert len(lines) == 1
    assert json.loads(lines[0]) == written


def test_explicit_schema_and_ts_are_kept(tmp_path: Path) -> None:
    log = StateLog("x", tmp_path, schema="custom/2", clock=FakeClock(T0))
    out = log.append({"ts": "2020-01-01T00:00:00Z", "schema": "mine/9"})
    assert out["ts"] == "2020-01-01T00:00:00Z"
    assert out["schema"] == "mine/9"
    assert log.append({})["schema"] == "custom/2"


def test_state_dir_and_file_are_private(tmp_path: Path) -> None:
    state = tmp_path / "deep" / ".state"
    log = StateLog("runs", state)
    assert not state.exists()  # created on first use, not on construction
    log.append({"a": 1})
    assert stat.S_IMODE(state.stat().st_mode) & 0o077 == 0
    assert stat.S_IMODE(log.path.stat().st_mode) == 0o600


def test_private_dir_makes_every_directory_it_creates_0700_whatever_the_umask(
        tmp_path: Path) -> None:
    target = tmp_path / "a" / ".state" / "redis"
    old = os.umask(0)  # mkdir's mode goes through the umask, and parents=True ignores it
    try:
        private_dir(target)
        private_dir(target)  # existing: fine
    finally:
        os.umask(old)
    for directory in (tmp_path / "a", tmp_path / "a" / ".state", target):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory


def test_rotated_logs_and_lock_files_stay_private(tmp_path: Path) -> None:
    log = StateLog("runs", tmp_path / ".state", max_bytes=200, backups=2)
    for n in range(20):
        log.append({"n": n, "pad": "x" * 50})
    files = list((tmp_path / ".state").iterdir())
    assert any(path.name == "runs.1.jsonl" for path in files)
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_non_json_values_are_stringified(tmp_path: Path) -> None:
    log = StateLog("x", tmp_path)
    log.append({"path": Path("/a/b"), "when": T0, "set": {1}})
    record = next(read_log("x", tmp_path))
    assert record["path"] == "/a/b"
    assert record["when"] == str(T0)
    assert record["set"] == "{1}"


def test_redactor_applies_to_records_and_stringified_objects(tmp_path: Path) -> None:
    class Opaque:
        def __str__(self) -> str:
            return "holds tok-9876543210"

    log = StateLog("x", tmp_path, redactor=Redactor(secrets=["tok-9876543210"]))
    out = log.append({"token": "abc", "out": "GITHUB_TOKEN=abc tok-9876543210", "o": Opaque()})
    assert out["token"] == "***"
    assert out["out"] == "GITHUB_TOKEN=*** ***"
    text = log.path.read_text()
    assert "tok-9876543210" not in text
    assert "abc" not in text
    assert json.loads(text)["o"] == "holds ***"


def test_invalid_names_are_refused(tmp_path: Path) -> None:
    for name in ("", "../x", "a/b", "runs.1", "a b"):
        with pytest.raises(ValidationError):
            StateLog(name, tmp_path)
    with pytest.raises(ValidationError):
        list(read_log("../etc", tmp_path))


def test_torn_last_line_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    log = StateLog("x", tmp_path)
    log.append({"n": 1})
    with log.path.open("ab") as f:
        f.write(b'{"n": 2, "half')  # a writer died mid-line
    log.append({"n": 3})
    assert [r["n"] for r in read_log("x", tmp_path)] == [1, 3]


# --- rotation ------------------------------------------------------------------------------------


def test_rotation_keeps_backups_and_drops_the_oldest(tmp_path: Path) -> None:
    log = StateLog("r", tmp_path, max_bytes=200, backups=2, clock=FakeClock(T0))
    for n in range(30):
        log.append({"n": n, "pad": "x" * 40})
    files = sorted(p.name for p in tmp_path.glob("r*.jsonl"))
    assert files == ["r.1.jsonl", "r.2.jsonl", "r.jsonl"]
    for path in tmp_path.glob("r*.jsonl"):
        assert path.stat().st_size <= 200
    numbers = [r["n"] for r in read_log("r", tmp_path)]
    assert numbers == sorted(numbers)
    assert numbers[-1] == 29
    assert len(numbers) < 30  # the oldest were dropped
    assert numbers == list(range(numbers[0], 30))  # and nothing in between was lost


def test_no_backups_truncates_by_rotation(tmp_path: Path) -> None:
    log = StateLog("r", tmp_path, max_bytes=150, backups=0)
    for n in range(10):
        log.append({"n": n, "pad": "x" * 40})
    assert [p.name for p in tmp_path.glob("r*.jsonl")] == ["r.jsonl"]
    assert [r["n"] for r in read_log("r", tmp_path)][-1] == 9


def test_a_line_larger_than_max_bytes_is_still_written(tmp_path: Path) -> None:
    log = StateLog("r", tmp_path, max_bytes=50, backups=3)
    log.append({"small": 1})
    log.append({"big": "y" * 500})
    log.append({"small": 2})
    records = list(read_log("r", tmp_path))
    assert [sorted(set(r) - {"schema", "ts"}) for r in records] == [["small"], ["big"], ["small"]]


def _writer(state_dir: str, writer: int, count: int, max_bytes: int) -> None:
    log = StateLog("shared", Path(state_dir), max_bytes=max_bytes, backups=10_000)
    for n in range(count):
        log.append({"w": writer, "n": n, "pad": "p" * (n % 50)})


@pytest.mark.timeout(60)
def test_concurrent_processes_never_lose_or_interleave_lines(tmp_path: Path) -> None:
    # fork where there is one: spawn would have to re-import this test module by name
    ctx = (
        multiprocessing.get_context("fork")
        if "fork" in multiprocessing.get_all_start_methods()
        else multiprocessing.get_context("spawn")
    )
    writers, count = 4, 1500
    procs = [
        ctx.Process(target=_writer, args=(str(tmp_path), w, count, 4096)) for w in range(writers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=50)
        assert p.exitcode == 0
    assert len(list(tmp_path.glob("shared.*.jsonl"))) > 5  # rotation happened under contention
    for path in tmp_path.glob("shared*.jsonl"):
        # Every line whole. A blank line may appear: a writer that finds the file's end mid-way
        # through a live writer's line (the size grows a page at a time) ends it as if torn, and
        # the extra newline lands after that line. Readers skip blank lines; no record is cut.
        for line in raw_lines(path):
            if line:
                json.loads(line)
    seen = Counter((r["w"], r["n"]) for r in read_log("shared", tmp_path))
    assert set(seen) == {(w, n) for w in range(writers) for n in range(count)}
    assert set(seen.values()) == {1}
    # each writer's own lines stay in order across the rotated files
    for w in range(writers):
        mine = [r["n"] for r in read_log("shared", tmp_path) if r["w"] == w]
        assert mine == sorted(mine)


_KILL_CHILD = """
import sys
from pathlib import Path
from pitstop.kernel.statelog import StateLog
log = StateLog("crash", Path(sys.argv[1]), max_bytes=20000, backups=100)
n = 0
while True:
    log.append({"n": n, "pad": "z" * (n % 300)})
    n += 1
"""


@pytest.mark.timeout(30)
def test_sigkill_mid_stream_leaves_every_line_parseable(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", _KILL_CHILD, str(tmp_path)])
    try:
        wait_for(lambda: len(list(tmp_path.glob("crash.*.jsonl"))) >= 3, timeout=20)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    numbers = [r["n"] for r in read_log("crash", tmp_path)]
    assert numbers == list(range(len(numbers)))
    total_lines = sum(len(raw_lines(p)) for p in tmp_path.glob("crash*.jsonl"))
    assert total_lines == len(numbers)


# --- reading -------------------------------------------------------------------------------------


def test_read_log_skips_blank_torn_and_non_object_lines(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_bytes(
        b'{"n": 1}\n\n   \n{"n": 2, "torn\n[1, 2]\n"str"\n\xff\xfe\n{"n": 3}\n{"n": 4'
    )
    assert [r["n"] for r in read_log("x", tmp_path)] == [1, 3]


def test_read_log_of_missing_log_is_empty(tmp_path: Path) -> None:
    assert list(read_log("nothing", tmp_path)) == []
    assert list(read_log("nothing", tmp_path / "absent")) == []


def test_read_log_since_grep_limit(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    log = StateLog("ev", tmp_path, clock=clock)
    for n in range(10):
        log.append({"n": n, "kind": "Deploy.Failed" if n % 3 == 0 else "ok"})
        clock.advance(minutes=1)
    since = T0 + timedelta(minutes=4)
    assert [r["n"] for r in read_log("ev", tmp_path, since=since)] == [4, 5, 6, 7, 8, 9]
    naive = since.replace(tzinfo=None)
    assert [r["n"] for r in read_log("ev", tmp_path, since=naive)] == [4, 5, 6, 7, 8, 9]
    assert [r["n"] for r in read_log("ev", tmp_path, grep="deploy.failed")] == [0, 3, 6, 9]
    assert [r["n"] for r in read_log("ev", tmp_path, grep=r'"n":[12]\b')] == [1, 2]
    # not a valid regex: a plain substring
    assert [r["n"] for r in read_log("ev", tmp_path, grep='"n":5,(')] == []
    assert [r["n"] for r in read_log("ev", tmp_path, grep="(")] == []
    assert [r["n"] for r in read_log("ev", tmp_path, limit=3)] == [7, 8, 9]
    assert list(read_log("ev", tmp_path, limit=0)) == []
    combined = read_log("ev", tmp_path, since=since, grep="failed", limit=1)
    assert [r["n"] for r in combined] == [9]


def test_invalid_regex_grep_is_a_substring(tmp_path: Path) -> None:
    log = StateLog("g", tmp_path)
    log.append({"msg": "call f(x"})
    log.append({"msg": "other"})
    assert [r["msg"] for r in read_log("g", tmp_path, grep="F(X")] == ["call f(x"]


def test_since_skips_records_without_a_usable_ts(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text(
        '{"n": 1}\n{"n": 2, "ts": "garbage"}\n{"n": 3, "ts": "2024-05-01T12:00:00Z"}\n'
    )
    assert [r["n"] for r in read_log("x", tmp_path, since=T0)] == [3]


def test_read_log_spans_rotated_files_oldest_first(tmp_path: Path) -> None:
    log = StateLog("r", tmp_path, max_bytes=120, backups=50)
    for n in range(20):
        log.append({"n": n})
    assert len(list(tmp_path.glob("r.*.jsonl"))) > 2
    assert [r["n"] for r in read_log("r", tmp_path)] == list(range(20))


def test_list_logs(tmp_path: Path) -> None:
    assert list_logs(tmp_path / "absent") == []
    StateLog("runs", tmp_path).append({})
    StateLog("alerts", tmp_path, max_bytes=10).append({})
    StateLog("alerts", tmp_path, max_bytes=10).append({})
    (tmp_path / "alerts.jsonl").unlink()  # only rotated files left
    (tmp_path / "notes.txt").write_text("x")
    assert list_logs(tmp_path) == ["alerts", "runs"]


# --- parse_since ---------------------------------------------------------------------------------

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", NOW - timedelta(seconds=30)),
        ("10m", NOW - timedelta(minutes=10)),
        ("2h", NOW - timedelta(hours=2)),
        ("1d", NOW - timedelta(days=1)),
        ("1w", NOW - timedelta(weeks=1)),
        ("1h30m", NOW - timedelta(minutes=90)),
        (" 2H ", NOW - timedelta(hours=2)),
        ("2024-04-30T10:00:00Z", datetime(2024, 4, 30, 10, tzinfo=UTC)),
        ("2024-04-30T12:00:00+02:00", datetime(2024, 4, 30, 10, tzinfo=UTC)),
        ("2024-04-30T10:00:00", datetime(2024, 4, 30, 10, tzinfo=UTC)),
        ("2024-04-30", datetime(2024, 4, 30, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    result = parse_since(text, now=NOW)
    assert result == expected
    assert result.tzinfo is not None and result.utcoffset() == timedelta(0)


def test_parse_since_accepts_a_non_utc_now() -> None:
    now = datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    assert parse_since("1h", now=now) == datetime(2024, 5, 1, 11, 0, tzinfo=UTC)


@pytest.mark.parametrize("text", ["", "yesterday", "10", "m10", "10x", "1.5", "2024-13-01"])
def test_parse_since_rejects_garbage_with_a_clear_message(text: str) -> None:
    with pytest.raises(ValidationError, match=r"duration .* ISO-8601"):
        parse_since(text, now=NOW)


def test_parse_since_absurd_duration() -> None:
    with pytest.raises(ValidationError, match="too far"):
        parse_since("99999999999d", now=NOW)
