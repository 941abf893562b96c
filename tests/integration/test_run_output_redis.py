"""A run's output stream on a real Redis: MAXLEN trimming, packing, gaps announced."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from pitstop.kernel.constants import RUN_OUTPUT_MAXLEN, RUN_OUTPUT_PREFIX
from pitstop.runs.output import OutputEnd, OutputLine, OutputWriter, RunOutput, dropped_note
from tests.support import Proc, run_cli, wait_for, write_script

pytestmark = pytest.mark.integration

LINES = 60_000  # short lines: ~330 KB, well under the 1 MB output cap, six times MAXLEN


def test_many_short_lines_fit_the_stream_and_none_is_missed(redis_client: redis.Redis) -> None:
    output = RunOutput(redis_client)
    writer = OutputWriter(output, "r1")
    for number in range(LINES):
        writer.write("stderr" if number % 1000 == 0 else "stdout", f"line {number}")
    assert writer.close(status="succeeded", exit_code=0)
    assert redis_client.xlen(f"{RUN_OUTPUT_PREFIX}r1") < RUN_OUTPUT_MAXLEN
    items = list(output.follow("r1", block_ms=1))
    lines = [item for item in items if isinstance(item, OutputLine)]
    assert [line.line for line in lines] == [f"line {n}" for n in range(LINES)]
    assert [line.number for line in lines] == list(range(1, LINES + 1))
    assert {line.stream for line in lines[::1000]} == {"stderr"}
    assert isinstance(items[-1], OutputEnd)


def test_lines_trimmed_by_maxlen_are_announced(redis_client: redis.Redis) -> None:
    output = RunOutput(redis_client, maxlen=100)
    for number in range(1, 1001):  # one entry each, as a slow trickle of lines would be
        output.append_many("r1", [("stdout", f"line {number}")], first_line=number)
    output.close("r1", status="succeeded", exit_code=0, next_line=1001)
    items = [item for item in output.follow("r1", block_ms=1) if isinstance(item, OutputLine)]
    note, first = items[0], items[1]
    assert first.number is not None and first.number > 1  # Redis trimmed the oldest entries
    assert (note.stream, note.dropped, note.line) == (
        "stderr", first.number - 1, dropped_note(first.number - 1))
    assert [item.line for item in items[1:]] == [
        f"line {n}" for n in range(first.number, 1001)]


@pytest.mark.timeout(120)
def test_a_chatty_script_is_followed_whole_live_and_afterwards(
        session_worker: Proc, pitstop_env: dict[str, str], pitstop_home: Path) -> None:
    path = write_script(pitstop_home, "chatty.py", f"""
        import sys
        for number in range({LINES}):
            print(f"line {{number}}")
        sys.exit(7)
    """)
    expected = "".join(f"line {n}\n" for n in range(LINES))
    live = run_cli(["run", path, "--wait", "--json"], pitstop_env)
    assert live.returncode == 7, live.stderr
    assert live.stdout.startswith(expected)
    assert "dropped" not in live.stderr
    run_id = live.stdout.splitlines()[-1].split('"run_id": "')[1].split('"')[0]
    # Coming back to it after it ended: from the start, every line
    wait_for(lambda: run_cli(["show", run_id, "--json"], pitstop_env).returncode == 0)
    later = run_cli(["show", run_id, "--follow"], pitstop_env)
    assert later.returncode == 7, later.stderr
    assert later.stdout == expected
    assert "dropped" not in later.stderr
