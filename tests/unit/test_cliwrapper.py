"""CLIWrapper: paths, interpreters, environment, output, timeouts, cancellation, bookkeeping."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import re
import shutil
import signal
import stat
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from pitstop.bus.eventbus import EventBus
from pitstop.kernel.errors import (
    InterpreterNotFound,
    PathNotAllowed,
    RedisUnavailable,
    ScriptError,
    ValidationError,
)
from pitstop.kernel.proc import supervisor_token
from pitstop.kernel.redaction import REDACTED, Redactor
from pitstop.kernel.statelog import StateLog
from pitstop.runs.store import RunStore
from pitstop.scripts.cliwrapper import CLIWrapper
from pitstop.scripts.outputreader import CHUNK, split_piece
from pitstop.scripts.policy import DEFAULT_ENV_ALLOWLIST
from pitstop.scripts.result import EXIT_CANCELLED, EXIT_TIMEOUT, ExecutionResult
from tests.support import FIXTURE_SCRIPTS, gate, pid_alive, wait_for

FIXTURES = FIXTURE_SCRIPTS
CANARY = "canary-Zq8v1Xw3-s3cr3t"

HAS_PWSH = shutil.which("pwsh") is not None or shutil.which("powershell") is not None
posix_only = pytest.mark.skipif(os.name != "posix", reason="process groups and signals are POSIX")


def gone(pid: int) -> bool:
    """No such process, or a zombie (this container's init never reaps orphans)."""
    return not pid_alive(pid)


def read_pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()]


@pytest.fixture
def reap_pids() -> Iterator[list[int]]:
    """Pids a test expects dead: killed at teardown whatever happened, so nothing leaks."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(autouse=True)
def _own_project(tmp_path_factory: pytest.TempPathFactory,
                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Wrappers built without a state log or bus record in the project they find: give each
    test an empty one of its own, never the repository's (nor a developer's PITSTOP_*)."""
    for name in [n for n in os.environ if n.startswith("PITSTOP_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PITSTOP_HOME", str(tmp_path_factory.mktemp("project")))


def wrapper(**kwargs: Any) -> CLIWrapper:
    kwargs.setdefault("allowed_roots", [FIXTURES])
    kwargs.setdefault("redactor", Redactor())
    return CLIWrapper(**kwargs)


# --- results, exit codes, durations ------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_code_is_reported_exactly(code: int) -> None:
    result = wrapper().wrap(FIXTURES / "exit_code.py", [str(code)])
    assert result.exit_code == code
    assert result.succeeded is (code == 0)
    assert result.status == ("succeeded" if code == 0 else "failed")
    assert not result.timed_out and not result.cancelled


@posix_only
def test_death_by_signal_is_128_plus_the_signal() -> None:
    result = wrapper().wrap(FIXTURES / "kill_self.py", [str(int(signal.SIGTERM))])
    assert result.exit_code == 128 + signal.SIGTERM
    assert not result.succeeded


def test_result_fields_and_to_dict() -> None:
    moment = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
    result = wrapper(clock=lambda: moment).wrap(str(FIXTURES / "sleep.py"), ["0.3"])
    assert result.duration >= 0.3
    assert result.duration < 5
    assert result.stdout_tail == "done\n"
    assert result.stderr_tail == ""
    assert result.started_at == result.finished_at == "2030-01-02T03:04:05.678Z"
    assert result.script == str(FIXTURES / "sleep.py")
    assert result.args == ["0.3"]
    assert isinstance(result.pid, int)
    assert result.run_id
    data = result.to_dict()
    assert set(data) == {f for f in ExecutionResult.__dataclass_fields__}
    assert json.loads(json.dumps(data)) == data
    assert data["exit_code"] == 0 and data["succeeded"] is True


def test_given_run_id_is_kept_and_fresh_ids_differ() -> None:
    w = wrapper()
    assert w.wrap(FIXTURES / "exit_code.py", ["0"], run_id="run-42").run_id == "run-42"
    first = w.wrap(FIXTURES / "exit_code.py", ["0"]).run_id
    assert first != w.wrap(FIXTURES / "exit_code.py", ["0"]).run_id


def test_working_directory(tmp_path: Path) -> None:
    result = wrapper(allowed_roots=[FIXTURES, tmp_path]).wrap(FIXTURES / "cwd.py", cwd=tmp_path)
    assert result.stdout_tail == f"{tmp_path.resolve()}\n"


def test_working_directory_outside_the_roots_is_refused(tmp_path: Path) -> None:
    with pytest.raises(PathNotAllowed, match="working directory"):
        wrapper().wrap(FIXTURES / "cwd.py", cwd=tmp_path)


def test_missing_working_directory_refused_before_running(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match="working directory"):
        wrapper().wrap(FIXTURES / "cwd.py", cwd=tmp_path / "nope")


@pytest.mark.parametrize("bad", [0, -1.5])
def test_timeout_must_be_positive(bad: float) -> None:
    with pytest.raises(ValidationError):
        CLIWrapper(timeout=bad)
    with pytest.raises(ValidationError):
        wrapper().wrap(FIXTURES / "exit_code.py", ["0"], timeout=bad)


def test_args_must_be_a_list_of_strings() -> None:
    with pytest.raises(ValidationError, match="list of strings"):
        wrapper().wrap(FIXTURES / "echo_args.py", "--flag")
    with pytest.raises(ValidationError, match="strings"):
        wrapper().wrap(FIXTURES / "echo_args.py", ["ok", 3])  # type: ignore[list-item]


# --- paths ---------------------------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An allowed root with one good script, and a script outside it that leaves a canary."""
    inside = tmp_path / "root"
    (inside / "sub").mkdir(parents=True)
    (inside / "ok.py").write_text("print('ran')\n")
    canary = tmp_path / "CANARY"
    (tmp_path / "outside.py").write_text(f"open({str(canary)!r}, 'w').close()\n")
    return inside


def test_relative_path_resolves_in_cwd_then_in_roots(root: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    w = wrapper(allowed_roots=[root])
    monkeypatch.chdir(root / "sub")
    assert w.resolve_script("ok.py") == (root / "ok.py").resolve()
    assert w.resolve_script("../ok.py") == (root / "ok.py").resolve()
    monkeypatch.chdir(root)
    assert w.wrap("ok.py").stdout_tail == "ran\n"


def test_default_allowed_root_is_cwd(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(root)
    w = CLIWrapper(redactor=Redactor())
    assert w.allowed_roots == (root.resolve(),)
    assert w.wrap("ok.py").stdout_tail == "ran\n"
    with pytest.raises(PathNotAllowed):
        w.resolve_script(FIXTURES / "cwd.py")


def _refused(w: CLIWrapper, path: str | Path, root: Path, match: str) -> None:
    with pytest.raises(PathNotAllowed, match=match):
        w.wrap(path)
    assert not (root.parent / "CANARY").exists()


def test_dotdot_escape_refused(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w = wrapper(allowed_roots=[root])
    _refused(w, root / ".." / "outside.py", root, "outside the allowed roots")
    monkeypatch.chdir(root)
    _refused(w, "../outside.py", root, "outside the allowed roots")
    _refused(w, "sub/../../outside.py", root, "outside the allowed roots")


def test_absolute_path_outside_refused(root: Path) -> None:
    w = wrapper(allowed_roots=[root])
    _refused(w, root.parent / "outside.py", root, "outside the allowed roots")
    _refused(w, sys.executable, root, "outside the allowed roots")


def test_escapes_to_missing_files_are_refused_as_outside(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether anything exists out there must not change the answer (CI checks out at other depths)."""
    w = wrapper(allowed_roots=[root])
    monkeypatch.chdir(root / "sub")
    _refused(w, "../../../../../../../no/such/passwd", root, "outside the allowed roots")
    _refused(w, root.parent / "no-such-dir" / "x.py", root, "outside the allowed roots")
    _refused(w, "missing.py", root, "not found")


@posix_only
def test_symlink_pointing_out_refused_and_pointing_in_allowed(root: Path) -> None:
    (root / "escape.py").symlink_to(root.parent / "outside.py")
    (root / "sub" / "alias.py").symlink_to(root / "ok.py")
    (root / "sub" / "dirlink").symlink_to(root.parent)
    w = wrapper(allowed_roots=[root])
    _refused(w, root / "escape.py", root, "outside the allowed roots")
    _refused(w, root / "sub" / "dirlink" / "outside.py", root, "outside the allowed roots")
    assert w.resolve_script(root / "sub" / "alias.py") == (root / "ok.py").resolve()


@posix_only
def test_symlinked_root_works(root: Path, tmp_path: Path) -> None:
    link = tmp_path / "rootlink"
    link.symlink_to(root)
    w = wrapper(allowed_roots=[link])
    assert w.wrap(link / "ok.py").stdout_tail == "ran\n"


def test_dash_names_refused(root: Path) -> None:
    (root / "-rf.py").write_text("print('ran')\n")
    (root / "sub" / "innocent.py").symlink_to(root / "-rf.py")
    w = wrapper(allowed_roots=[root])
    _refused(w, root / "-rf.py", root, "starts with '-'")
    _refused(w, "-rf.py", root, "starts with '-'")
    _refused(w, root / "sub" / "innocent.py", root, "starts with '-'")


def test_missing_and_non_files_refused(root: Path) -> None:
    w = wrapper(allowed_roots=[root])
    _refused(w, root / "nope.py", root, "not found")
    _refused(w, "nope.py", root, "not found")
    _refused(w, root / "sub", root, "not a regular file")
    _refused(w, "", root, "empty")
    _refused(w, "bad\0name.py", root, "not found")
    if hasattr(os, "mkfifo"):
        os.mkfifo(root / "fifo.py")
        _refused(w, root / "fifo.py", root, "not a regular file")


@posix_only
def test_symlink_loop_refused(root: Path) -> None:
    (root / "a.py").symlink_to(root / "b.py")
    (root / "b.py").symlink_to(root / "a.py")
    _refused(wrapper(allowed_roots=[root]), root / "a.py", root, "not found")


def test_refusal_happens_before_any_bookkeeping(root: Path) -> None:
    runs, bus = RecordingRuns(), RecordingBus()
    w = wrapper(allowed_roots=[root], runs=runs, bus=bus)
    with pytest.raises(PathNotAllowed):
        w.wrap(root.parent / "outside.py")
    assert runs.calls == [] and bus.published == []


def test_empty_allowed_roots_is_a_config_mistake() -> None:
    with pytest.raises(ValidationError):
        CLIWrapper(allowed_roots=[])


# --- arguments are never a shell --------------------------------------------------------------

NASTY_ARGS = [
    "; touch CANARY1",
    "$(touch CANARY2)",
    "`touch CANARY3`",
    "a\ntouch CANARY4",
    "&& touch CANARY5",
    "| touch CANARY6",
    "> CANARY7",
    "'\"quoted\"'",
    "--help",
    "",
    "* ?",
]


@pytest.mark.parametrize("script", ["echo_args.py", "echo_args.sh"])
def test_args_are_passed_literally(script: str, tmp_path: Path) -> None:
    result = wrapper(allowed_roots=[FIXTURES, tmp_path]).wrap(FIXTURES / script, NASTY_ARGS,
                                                              cwd=tmp_path)
    assert result.succeeded
    assert list(tmp_path.iterdir()) == []
    expected_lines = "".join(f"{arg}\n" for arg in NASTY_ARGS)
    if script.endswith(".py"):
        first, rest = result.stdout_tail.split("\n", 1)
        assert json.loads(first) == NASTY_ARGS
        assert rest == expected_lines
    else:
        assert result.stdout_tail == expected_lines


# --- interpreters ---------------------------------------------------------------------------------


def _fake_bin(tmp_path: Path, *names: str) -> str:
    """A directory with executables that print their argv, one per line."""
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name in names:
        exe = bindir / name
        exe.write_text("#!/bin/sh\nprintf 'argv:%s\\n' \"$0\" \"$@\"\n")
        exe.chmod(0o755)
    return str(bindir)


def test_command_for_each_kind(tmp_path: Path) -> None:
    w = wrapper(allowed_roots=[tmp_path])
    py = tmp_path / "x.PY"
    assert w.command_for(py, ["-a"]) == [sys.executable, str(py), "-a"]
    search = _fake_bin(tmp_path, "bash", "pwsh", "powershell")
    sh = tmp_path / "x.sh"
    assert w.command_for(sh, ["1"], search_path=search) == [f"{search}/bash", str(sh), "1"]
    ps = tmp_path / "x.ps1"
    assert w.command_for(ps, ["a b"], search_path=search) == [
        f"{search}/pwsh", "-NonInteractive", "-NoProfile", "-File", str(ps), "a b"]


def test_powershell_is_the_fallback_for_pwsh(tmp_path: Path) -> None:
    search = _fake_bin(tmp_path, "powershell")
    ps = tmp_path / "x.ps1"
    assert wrapper().command_for(ps, [], search_path=search)[:2] == [
        f"{search}/powershell", "-NonInteractive"]


def test_missing_interpreter_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    w = wrapper()
    with pytest.raises(InterpreterNotFound, match=r"hello.ps1: pwsh or powershell is not instal"):
        w.command_for(FIXTURES / "hello.ps1", [], search_path=str(empty))
    with pytest.raises(InterpreterNotFound, match="bash"):
        w.command_for(FIXTURES / "hello.sh", [], search_path=str(empty))
    runs = RecordingRuns()
    with pytest.raises(InterpreterNotFound):  # a trusted library caller may set PATH
        wrapper(runs=runs, protected_env=()).wrap(FIXTURES / "hello.sh", env={"PATH": str(empty)})
    assert runs.calls == []


@posix_only
def test_ps1_runs_through_pwsh_found_on_the_child_path(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    search = _fake_bin(tmp_path, "pwsh")
    monkeypatch.setenv("PATH", f"{search}:{os.environ['PATH']}")  # the worker's own PATH
    result = wrapper().wrap(FIXTURES / "hello.ps1", ["World"])
    assert result.stdout_tail == "".join(f"argv:{a}\n" for a in [
        f"{search}/pwsh", "-NonInteractive", "-NoProfile", "-File",
        str(FIXTURES / "hello.ps1"), "World"])


def test_sh_runs_under_bash() -> None:
    result = wrapper().wrap(FIXTURES / "hello.sh", ["there"])
    assert result.exit_code == 4
    assert result.stdout_tail == "hello from bash there\n"
    assert result.stderr_tail == "NON_INTERACTIVE=1\n"


@pytest.mark.skipif(not HAS_PWSH, reason="neither pwsh nor powershell is installed")
def test_real_powershell_script() -> None:
    result = wrapper(timeout=60).wrap(FIXTURES / "hello.ps1", ["World"])
    assert result.exit_code == 5
    assert result.stdout_tail.splitlines() == ["hello from powershell World", "NON_INTERACTIVE=1"]


@posix_only
def test_executable_without_extension_runs_directly(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\necho \"direct $1\"\nexit 7\n")
    tool.chmod(0o755)
    result = wrapper(allowed_roots=[tmp_path]).wrap(tool, ["run"])
    assert (result.exit_code, result.stdout_tail) == (7, "direct run\n")


@posix_only
def test_non_executable_without_extension_refused(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/bin/sh\necho hi\n")
    tool.chmod(0o644)
    with pytest.raises(PathNotAllowed, match="not executable"):
        wrapper(allowed_roots=[tmp_path]).wrap(tool)


@posix_only
def test_program_that_cannot_start_is_a_failed_result(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    tool.write_text("#!/nonexistent/interpreter\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    runs, bus = RecordingRuns(), RecordingBus()
    result = wrapper(allowed_roots=[tmp_path], runs=runs, bus=bus).wrap(tool)
    assert result.exit_code == 127
    assert not result.succeeded
    # Without setpriv Popen itself fails; with it, setpriv reports the failed exec.
    assert "execute" in result.stderr_tail
    assert [c[0] for c in runs.calls][-1] == "update_run:failed"
    assert [t for t, _ in bus.published] == ["tool.invoked", "tool.failed"]


# --- environment ----------------------------------------------------------------------------------


def _child_env(result: ExecutionResult) -> dict[str, str]:
    env = json.loads(result.stdout_tail)
    assert isinstance(env, dict)
    return env


def test_environment_is_allowlisted_plus_explicit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LC_PITSTOP_TEST", "lc-value")
    monkeypatch.setenv("NOT_ALLOWED_VAR", "leak")
    monkeypatch.setenv("CI", "0")
    result = wrapper().wrap(FIXTURES / "env_dump.py", env={"EXTRA": "given"})
    env = _child_env(result)
    assert "NOT_ALLOWED_VAR" not in env
    assert env["PITSTOP_RUN_ID"] == result.run_id  # the script can name its run
    assert env["PITSTOP_SUPERVISOR"] == supervisor_token()  # and the sweep can find its children
    assert env["PATH"] == os.environ["PATH"]
    assert env["LC_PITSTOP_TEST"] == "lc-value"
    assert env["EXTRA"] == "given"
    assert env["NON_INTERACTIVE"] == "1" and env["CI"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1" and env["GIT_TERMINAL_PROMPT"] == "0"
    allowed = {n for n in DEFAULT_ENV_ALLOWLIST if not n.endswith("*")}
    extra = set(env) - allowed - {"EXTRA", "NON_INTERACTIVE", "CI", "PYTHONUNBUFFERED",
                                  "GIT_TERMINAL_PROMPT", "DEBIAN_FRONTEND", "PIP_NO_INPUT",
                                  "PITSTOP_RUN_ID", "PITSTOP_SUPERVISOR"}
    assert all(name.startswith("LC_") for name in extra - {"LC_CTYPE"}), extra


@pytest.mark.parametrize("name", [
    "LD_PRELOAD", "ld_preload", "LD_LIBRARY_PATH", "DYLD_INSERT_LIBRARIES", "BASH_ENV", "ENV",
    "BASH_FUNC_ls%%", "PATH", "PYTHONPATH", "PYTHONSTARTUP", "PERL5OPT", "NODE_OPTIONS",
    "GIT_CONFIG_COUNT", "GIT_SSH_COMMAND", "GLIBC_TUNABLES", "PITSTOP_RUN_ID",
])
def test_env_names_that_would_run_other_code_are_refused(tmp_path: Path, name: str) -> None:
    canary = tmp_path / "pwned"
    runs = RecordingRuns()
    with pytest.raises(ValidationError, match=f"--env {re.escape(name)}: may not be set") as err:
        wrapper(runs=runs).wrap(FIXTURES / "hello.sh",
                                env={"GIT_SHA": "abc", name: f"$(touch {canary})"})
    assert "touch" not in str(err.value)  # names only: a value may be a secret
    assert runs.calls == []
    assert not canary.exists()


def test_ordinary_env_names_pass(tmp_path: Path) -> None:
    names = {"GIT_SHA": "abc", "MY_PATH": "/x", "BUILD_ENV": "prod", "PYTHON_VERSION": "3.11",
             "LDFLAGS": "-O2"}
    env = _child_env(wrapper().wrap(FIXTURES / "env_dump.py", env=names))
    assert {k: env[k] for k in names} == names


def test_explicit_env_wins_and_custom_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_BUILD_NUMBER", "77")
    w = wrapper(env_allowlist=["PATH", "MY_*"])
    env = _child_env(w.wrap(FIXTURES / "env_dump.py", env={"CI": "false"}))
    assert env["MY_BUILD_NUMBER"] == "77"
    assert env["CI"] == "false"
    assert "HOME" not in env


def test_bad_env_refused() -> None:
    with pytest.raises(ValidationError):
        wrapper().wrap(FIXTURES / "env_dump.py", env={"X": 1})  # type: ignore[dict-item]


def test_stdin_is_empty_and_not_a_tty() -> None:
    result = wrapper(timeout=10).wrap(FIXTURES / "stdin_check.py")
    assert result.stdout_tail == "isatty=False read=''\n"


# --- output ---------------------------------------------------------------------------------------


def test_output_is_exact_and_streamed_line_by_line() -> None:
    lines: list[tuple[str, str]] = []
    result = wrapper(output_sink=lambda s, line: lines.append((s, line))).wrap(
        FIXTURES / "streams.py")
    assert result.stdout_tail == "out one\nout two\nhéllo ✓\nno newline at end"
    assert result.stderr_tail == "err one\n"
    assert [line for s, line in lines if s == "stdout"] == [
        "out one", "out two", "héllo ✓", "no newline at end"]
    assert [line for s, line in lines if s == "stderr"] == ["err one"]
    assert not result.stdout_truncated and not result.stderr_truncated


def test_sink_receives_lines_while_the_script_runs(tmp_path: Path) -> None:
    lines: list[str] = []
    results: list[ExecutionResult] = []
    with gate(tmp_path / "gate.sock") as open_gate:
        runner = threading.Thread(target=lambda: results.append(wrapper(
            output_sink=lambda _s, line: lines.append(line)).wrap(
            FIXTURES / "wait_for_gate.py", [str(tmp_path / "gate.sock")])))
        runner.start()
        try:
            wait_for(lambda: lines == ["first"])
            assert runner.is_alive()  # the script is still waiting: "first" came live
        finally:
            open_gate()
            runner.join(30)
    assert lines == ["first", "second"]
    assert results[0].succeeded


def test_crlf_and_invalid_utf8(tmp_path: Path) -> None:
    script = tmp_path / "bytes.py"
    script.write_text("import sys\nsys.stdout.buffer.write(b'dos\\r\\nbad \\xff end\\n')\n")
    lines: list[str] = []
    result = wrapper(allowed_roots=[tmp_path], output_sink=lambda _s, ln: lines.append(ln)).wrap(
        script)
    assert lines == ["dos", "bad \ufffd end"]
    assert result.stdout_tail == "dos\r\nbad \ufffd end\n"


def test_tail_keeps_the_last_bytes() -> None:
    result = wrapper(tail_bytes=40).wrap(FIXTURES / "big_output.py", ["1000"])
    assert result.stdout_tail == ("x" * 99 + "\n" + "last stdout line\n")[-40:]
    assert result.stderr_tail == ("x" * 99 + "\n" + "last stderr line\n")[-40:]
    assert not result.stdout_truncated  # 100 kB is under the 1 MB cap


def test_cap_truncates_while_both_pipes_keep_draining() -> None:
    # 2 MB to stderr before any stdout: a reader that drains one pipe first deadlocks here.
    lines: list[tuple[str, str]] = []
    result = wrapper(output_cap_bytes=50_000, tail_bytes=1000,
                     output_sink=lambda s, ln: lines.append((s, ln))).wrap(
        FIXTURES / "big_output.py", ["20000"], timeout=30)
    assert result.succeeded
    assert result.stdout_truncated and result.stderr_truncated
    assert result.stdout_tail.endswith("x\nlast stdout line\n")
    assert result.stderr_tail.endswith("x\nlast stderr line\n")
    assert len(result.stdout_tail.encode()) == 1000
    for name in ("stdout", "stderr"):
        streamed = [ln for s, ln in lines if s == name]
        assert len(streamed) == 501  # 500 lines of 100 bytes fit under the cap, then one notice
        assert "passed 50000 bytes" in streamed[-1]


def test_truncation_is_marked_without_a_sink() -> None:
    result = wrapper(output_cap_bytes=1000).wrap(FIXTURES / "big_output.py", ["20"])
    assert result.stdout_truncated and result.stderr_truncated
    assert result.stdout_tail.endswith("last stdout line\n")


def test_very_long_line_without_newline(tmp_path: Path) -> None:
    script = tmp_path / "long.py"
    script.write_text("import sys\nsys.stdout.write('a' * 300000 + 'END')\n")
    lines: list[str] = []
    result = wrapper(allowed_roots=[tmp_path], tail_bytes=10,
                     output_sink=lambda _s, ln: lines.append(ln)).wrap(script)
    assert result.stdout_tail == "aaaaaaaEND"
    assert "".join(lines) == "a" * 300000 + "END"
    assert max(len(ln) for ln in lines) <= 64 * 1024


def test_a_failing_sink_does_not_block_the_script(caplog: pytest.LogCaptureFixture) -> None:
    def sink(_stream: str, _line: str) -> None:
        raise RuntimeError("sink down")

    with caplog.at_level(logging.ERROR, logger="pitstop.scripts.cliwrapper"):
        result = wrapper(output_sink=sink).wrap(FIXTURES / "big_output.py", ["3000"], timeout=30)
    assert result.succeeded
    assert result.stdout_tail.endswith("last stdout line\n")
    assert "output sink failed" in caplog.text


# --- timeouts, cancellation, leftovers ---------------------------------------------------------


@posix_only
@pytest.mark.timeout(30)
def test_timeout_kills_the_whole_tree(tmp_path: Path, reap_pids: list[int]) -> None:
    pidfile = tmp_path / "pids"
    started = time.monotonic()
    result = wrapper().wrap(FIXTURES / "spawn_tree.sh", [str(pidfile)], timeout=1.5)
    elapsed = time.monotonic() - started
    pids = read_pids(pidfile)
    reap_pids.extend([*pids, result.pid or 0])
    assert result.timed_out and not result.succeeded and not result.cancelled
    assert result.exit_code == EXIT_TIMEOUT
    assert result.status == "timed_out"
    assert 1.5 <= result.duration < 4
    assert elapsed < 5
    assert result.stdout_tail == "spawned\n"
    assert len(pids) == 3
    for pid in [*pids, result.pid]:
        assert pid is not None and gone(pid), pid


@posix_only
@pytest.mark.timeout(30)
def test_cancellation_kills_the_whole_tree(tmp_path: Path, reap_pids: list[int]) -> None:
    pidfile = tmp_path / "pids"
    result = wrapper(cancel_check=pidfile.exists).wrap(
        FIXTURES / "spawn_tree.sh", [str(pidfile)], timeout=60)
    pids = read_pids(pidfile)
    reap_pids.extend(pids)
    assert result.cancelled and not result.timed_out and not result.succeeded
    assert result.exit_code == EXIT_CANCELLED
    assert result.status == "cancelled"
    assert result.duration < 10
    for pid in pids:
        assert gone(pid), pid


@posix_only
@pytest.mark.timeout(30)
def test_sigterm_ignored_means_sigkill_after_the_grace() -> None:
    seen: list[str] = []
    started = time.monotonic()
    result = wrapper(kill_grace=0.3, output_sink=lambda _s, ln: seen.append(ln),
                     cancel_check=lambda: "ready" in seen).wrap(FIXTURES / "ignore_term.py")
    assert result.cancelled and result.exit_code == EXIT_CANCELLED
    assert time.monotonic() - started >= 0.3  # SIGTERM was given its grace first
    assert result.duration < 10
    assert result.pid is not None and gone(result.pid)


def test_cancel_check_polled_about_every_fifth_of_a_second() -> None:
    calls: list[float] = []

    def check() -> bool:
        calls.append(time.monotonic())
        return False

    result = wrapper(cancel_check=check).wrap(FIXTURES / "sleep.py", ["1"])
    assert result.succeeded and not result.cancelled
    assert 3 <= len(calls) <= 1 + result.duration / 0.2
    gaps = [b - a for a, b in itertools.pairwise(calls)]
    assert min(gaps) >= 0.19


def test_raising_cancel_check_and_heartbeat_do_not_stop_the_script(
        caplog: pytest.LogCaptureFixture) -> None:
    def boom() -> bool:
        raise RuntimeError("redis blip")

    with caplog.at_level(logging.ERROR, logger="pitstop.scripts.process"):
        result = wrapper(cancel_check=boom, heartbeat=boom, heartbeat_interval=0.05).wrap(
            FIXTURES / "sleep.py", ["0.4"])
    assert result.succeeded
    assert "cancel_check raised" in caplog.text and "heartbeat raised" in caplog.text


def test_heartbeat_is_called_while_running() -> None:
    beats: list[float] = []
    result = wrapper(heartbeat=lambda: beats.append(time.monotonic()),
                     heartbeat_interval=0.05).wrap(FIXTURES / "sleep.py", ["0.5"])
    assert result.succeeded
    assert len(beats) >= 4
    assert beats[-1] - beats[0] >= 0.15  # spread over the run, not all at the end


@posix_only
@pytest.mark.timeout(30)
def test_leftover_background_processes_are_killed_after_a_normal_exit(
        tmp_path: Path, reap_pids: list[int]) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    result = wrapper().wrap(FIXTURES / "leak_daemon.sh", [str(pidfile)], timeout=30)
    (daemon,) = read_pids(pidfile)
    reap_pids.append(daemon)
    assert result.succeeded and result.exit_code == 0
    assert result.stdout_tail == "leaving\n"
    assert time.monotonic() - started < 5  # the daemon held stdout open: we did not wait for it
    assert gone(daemon)


@posix_only
@pytest.mark.timeout(30)
def test_leftovers_can_be_kept_and_their_open_pipe_does_not_hang_us(
        tmp_path: Path, reap_pids: list[int]) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    result = wrapper(kill_leftovers=False).wrap(FIXTURES / "leak_daemon.sh", [str(pidfile)])
    (daemon,) = read_pids(pidfile)
    reap_pids.append(daemon)
    assert result.succeeded
    assert result.stdout_tail == "leaving\n"
    assert time.monotonic() - started < 5
    assert not gone(daemon)


class SoftTimeLimit(Exception):
    pass


@posix_only
@pytest.mark.timeout(30)
def test_an_exception_raised_in_the_wait_kills_the_script(tmp_path: Path,
                                                          reap_pids: list[int]) -> None:
    # Celery's soft time limit arrives as a signal whose handler raises in the main thread.
    pidfile = tmp_path / "pids"

    def raise_soft_limit(_signum: int, _frame: object) -> None:
        raise SoftTimeLimit

    def send_when_spawned() -> None:
        wait_for(pidfile.exists)
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, raise_soft_limit)
    runs = RecordingRuns()
    sender = threading.Thread(target=send_when_spawned)
    try:
        sender.start()
        with pytest.raises(SoftTimeLimit):
            wrapper(runs=runs).wrap(FIXTURES / "spawn_tree.sh",
                                    [str(pidfile)], timeout=60)
    finally:
        sender.join(15)
        signal.signal(signal.SIGUSR1, previous)
    pids = read_pids(pidfile)
    reap_pids.extend(pids)
    for pid in pids:
        assert gone(pid), pid
    assert runs.calls[-1][0] == "update_run:failed"
    assert "SoftTimeLimit" in runs.calls[-1][1]["error"]


# --- bookkeeping: state log, bus, runs -----------------------------------------------------------


class RecordingRuns:
    """Stands in for RunStore where only the call sequence matters."""

    def __init__(self, terminal: bool = False) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.terminal = terminal

    def _run(self, run_id: str, status: str) -> Any:
        terminal = self.terminal
        return type("Run", (), {"run_id": run_id, "status": status, "terminal": terminal})()

    def create_run(self, **kwargs: Any) -> Any:
        self.calls.append(("create_run", kwargs))
        return self._run("created-1", "queued")

    def update_run(self, run_id: str, *, status: str | None = None, **fields: Any) -> Any:
        self.calls.append((f"update_run:{status}", {"run_id": run_id, **fields}))
        return self._run(run_id, status or "running")

    def record_cli_execution(self, run_id: str, execution: dict[str, Any]) -> Any:
        self.calls.append(("record_cli_execution", {"run_id": run_id, **execution}))
        return self._run(run_id, "running")

    def heartbeat(self, run_id: str) -> None:
        self.calls.append(("heartbeat", {"run_id": run_id}))


class RecordingBus:
    def __init__(self, fail_after: int | None = None) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.fail_after = fail_after

    def publish(self, event_type: str, data: dict[str, Any], **_kw: Any) -> Any:
        if self.fail_after is not None and len(self.published) >= self.fail_after:
            raise RedisUnavailable("redis went away")
        self.published.append((event_type, data))
        return None


def test_run_lifecycle_with_a_new_run() -> None:
    runs = RecordingRuns()
    result = wrapper(runs=runs).wrap(FIXTURES / "exit_code.py", ["2"],
                                     trace_id="trace-1")
    names = [name for name, _ in runs.calls]
    assert names == ["create_run", "update_run:running", "record_cli_execution",
                     "update_run:failed"]
    create = runs.calls[0][1]
    assert create["kind"] == "script" and create["trace_id"] == "trace-1"
    assert create["params"] == {"script": str(FIXTURES / "exit_code.py"), "args": ["2"]}
    assert result.run_id == "created-1"
    record = runs.calls[2][1]
    assert record["exit_code"] == 2 and record["trace_id"] == "trace-1"
    assert record["execution_id"]
    assert runs.calls[3][1]["exit_code"] == 2


def test_run_lifecycle_with_a_given_run_and_default_heartbeat() -> None:
    runs = RecordingRuns()
    result = wrapper(runs=runs, heartbeat_interval=0.05).wrap(
        FIXTURES / "sleep.py", ["0.3"], run_id="given-7")
    assert result.run_id == "given-7"
    names = [name for name, _ in runs.calls]
    assert names[0] == "update_run:running" and "create_run" not in names
    assert names.count("heartbeat") >= 2
    assert names[-2:] == ["record_cli_execution", "update_run:succeeded"]
    assert {c[1]["run_id"] for c in runs.calls} == {"given-7"}


@posix_only
def test_run_status_after_timeout_and_cancel() -> None:
    runs = RecordingRuns()
    wrapper(runs=runs).wrap(FIXTURES / "wait_forever.py", timeout=0.3)
    assert runs.calls[-1] == ("update_run:timed_out", {"run_id": "created-1", "exit_code": 124})
    runs = RecordingRuns()
    wrapper(runs=runs, cancel_check=lambda: True).wrap(
        FIXTURES / "wait_forever.py")
    assert runs.calls[-1] == ("update_run:cancelled", {"run_id": "created-1", "exit_code": 130})


def test_a_finished_run_is_never_executed_again(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = tmp_path / "once.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(ScriptError, match="already ended"):
        wrapper(allowed_roots=[tmp_path], runs=RecordingRuns(terminal=True)).wrap(
            script, run_id="done-1")
    assert not marker.exists()


def test_events_invoked_then_succeeded_or_failed() -> None:
    bus = RecordingBus()
    w = wrapper(bus=bus)
    ok = w.wrap(FIXTURES / "exit_code.py", ["0"])
    bad = w.wrap(FIXTURES / "exit_code.py", ["9"])
    assert [t for t, _ in bus.published] == ["tool.invoked", "tool.succeeded",
                                             "tool.invoked", "tool.failed"]
    invoked = bus.published[0][1]
    assert invoked["run_id"] == ok.run_id and invoked["args"] == ["0"]
    failed = bus.published[3][1]
    assert failed == {"run_id": bad.run_id, "script": str(FIXTURES / "exit_code.py"),
                      "exit_code": 9, "duration": bad.duration, "timed_out": False,
                      "cancelled": False, "host": bad.host}


def test_bus_down_before_running_raises_and_marks_the_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    script = tmp_path / "once.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    runs = RecordingRuns()
    with pytest.raises(RedisUnavailable):
        wrapper(allowed_roots=[tmp_path], bus=RecordingBus(fail_after=0),
                runs=runs).wrap(script)
    assert not marker.exists()
    assert runs.calls[-1][0] == "update_run:failed"


def test_bus_down_after_running_still_returns_the_result(
        caplog: pytest.LogCaptureFixture) -> None:
    bus, runs = RecordingBus(fail_after=1), RecordingRuns()
    with caplog.at_level(logging.ERROR, logger="pitstop.scripts.cliwrapper"):
        result = wrapper(bus=bus, runs=runs).wrap(
            FIXTURES / "exit_code.py", ["0"])
    assert result.succeeded
    assert [t for t, _ in bus.published] == ["tool.invoked"]
    assert runs.calls[-1][0] == "update_run:succeeded"
    assert "could not publish tool.succeeded" in caplog.text


def test_state_log_gets_one_record_per_execution(tmp_path: Path) -> None:
    log = StateLog("cli_executions", tmp_path)
    w = wrapper(state_log=log)
    first = w.wrap(FIXTURES / "exit_code.py", ["0"], trace_id="t-1")
    second = w.wrap(FIXTURES / "exit_code.py", ["5"])
    lines = (tmp_path / "cli_executions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["run_id"] for r in records] == [first.run_id, second.run_id]
    assert [r["exit_code"] for r in records] == [0, 5]
    assert records[0]["trace_id"] == "t-1" and "trace_id" not in records[1]
    assert records[0]["execution_id"] != records[1]["execution_id"]


def test_real_bus_and_runs_on_fakeredis_join_the_trace(tmp_path: Path) -> None:
    client = fakeredis.FakeRedis()
    bus, runs = EventBus(client), RunStore(client)
    result = wrapper(bus=bus, runs=runs).wrap(FIXTURES / "exit_code.py", ["0"],
                                              trace_id="trace-abc")
    events = list(bus.replay())
    assert [e.type for e in events] == ["tool.invoked", "tool.succeeded"]
    assert {e.trace_id for e in events} == {"trace-abc"}
    assert events[1].parent_id == events[0].id
    run = runs.get_run(result.run_id)
    assert run.status == "succeeded" and run.exit_code == 0 and run.trace_id == "trace-abc"
    assert run.executions[0]["run_id"] == result.run_id


# --- secrets -------------------------------------------------------------------------------------


def test_canary_secret_never_leaves_redacted(tmp_path: Path) -> None:
    client = fakeredis.FakeRedis()
    log = StateLog("cli_executions", tmp_path)
    streamed: list[str] = []
    w = CLIWrapper(allowed_roots=[FIXTURES], bus=EventBus(client), runs=RunStore(client),
                   state_log=log, output_sink=lambda _s, ln: streamed.append(ln))
    result = w.wrap(FIXTURES / "print_secret.py", ["DEPLOY_TOKEN", f"--token={CANARY}", CANARY],
                    env={"DEPLOY_TOKEN": CANARY})
    assert result.succeeded
    assert "the value is ***" in result.stdout_tail  # the script did print it
    everywhere = {
        "result": json.dumps(result.to_dict()),
        "sink": "\n".join(streamed),
        "state log": (tmp_path / "cli_executions.jsonl").read_text(),
        "events": json.dumps([e.to_dict() for e in EventBus(client).replay()]),
        "redis": repr([(k, client.dump(k)) for k in client.keys("*")]),
    }
    assert streamed and all(text for text in everywhere.values())
    for where, text in everywhere.items():
        assert CANARY not in text, where
    assert w.redactor.redact_text(f"x {CANARY} y") == "x *** y"


def test_secret_flag_arguments_reach_the_script_and_are_redacted_everywhere(
        tmp_path: Path) -> None:
    import hashlib

    args = ["--token", CANARY + "1", "--api-key", CANARY + "2", "--secret", CANARY + "3",
            "--password", CANARY + "4", f"--password={CANARY}5", "--release"]
    digest = hashlib.sha256("\0".join(args).encode()).hexdigest()
    script = tmp_path / "check_args.py"
    script.write_text(textwrap.dedent(f"""
        import hashlib, sys
        got = hashlib.sha256("\\0".join(sys.argv[1:]).encode()).hexdigest()
        print(" ".join(sys.argv[1:]))
        sys.exit(0 if got == {digest!r} else 9)
    """))
    client = fakeredis.FakeRedis()
    streamed: list[str] = []
    w = CLIWrapper(allowed_roots=[tmp_path], redactor=Redactor(), bus=EventBus(client),
                   runs=RunStore(client), state_log=StateLog("cli_executions", tmp_path),
                   output_sink=lambda _s, ln: streamed.append(ln))
    result = w.wrap(script, args)
    assert result.exit_code == 0  # the real values arrived
    shown = ["--token", "***", "--api-key", "***", "--secret", "***", "--password", "***",
             "--password=***", "--release"]
    assert result.args == shown
    assert streamed == [" ".join(shown)]
    everywhere = json.dumps(result.to_dict()) + (tmp_path / "cli_executions.jsonl").read_text() \
        + json.dumps([e.to_dict() for e in EventBus(client).replay()]) \
        + repr([(k, client.dump(k)) for k in client.keys("*")])
    assert CANARY not in everywhere


def test_secret_like_parent_variable_allowlisted_is_redacted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_API_TOKEN", CANARY)
    result = wrapper(env_allowlist=["PATH", "MY_*"]).wrap(FIXTURES / "print_secret.py",
                                                          ["MY_API_TOKEN"])
    assert "the value is ***" in result.stdout_tail
    assert CANARY not in json.dumps(result.to_dict())


def test_default_redactor_knows_this_process_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PITSTOP_TEST_SECRET", CANARY)
    result = CLIWrapper(allowed_roots=[FIXTURES]).wrap(FIXTURES / "echo_args.py", [CANARY])
    assert CANARY not in json.dumps(result.to_dict())


# --- long lines: pieces, secrets and characters cut at the piece boundary -----------------------


@pytest.mark.parametrize(("data", "secrets", "cut"), [
    (b"abcdef", [], 6),                       # no secrets: send it all
    (b"xxxxSECRE", [b"SECRET"], 4),           # a secret may be starting: hold it back
    (b"xxxxxxxxxx", [b"SECRET"], 5),          # could be the first 5 bytes of one
    (b"xxSECRETxx", [b"SECRET"], 2),          # crosses the point: hold back all of it
    (b"xSECRETx", [b"SECRET", b"ETX"], 1),     # a second secret crossing moves the cut again
    (b"ab\xc3\xa9", [], 4),                    # a whole "é" at the end goes
    (b"ab\xc3", [], 2),                        # half of one waits
    (b"ab\xe2\x82", [], 2),                    # two thirds of "€" wait
    (b"ab\xf0\x9f\x98\x80xSECRE", [b"SECRET"], 7),  # the emoji goes, the secret's start waits
    (b"ab\xf0\x9f\x98\x80SECRET", [b"SECRET", b"\x80SE"], 2),  # never inside the emoji
    (b"aaaaaaaaaaaaaaaa", [b"aaaa"], 8),      # chained occurrences: hold back 2x the longest
    (b"", [b"SECRET"], 0),
])
def test_split_piece_never_cuts_a_secret(data: bytes, secrets: list[bytes], cut: int) -> None:
    assert split_piece(data, secrets) == cut


def test_secret_straddling_the_piece_boundary_is_redacted_live(tmp_path: Path) -> None:
    token = "ghp_SuperSecretValue123"
    script = tmp_path / "long_line.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.stdout.write("a" * ({CHUNK} - 6) + {token!r} + "é" * 40000 + "\\n")
        sys.stdout.write("short " + {token!r} + "\\n")
    """))
    lines: list[str] = []
    result = wrapper(allowed_roots=[tmp_path], output_sink=lambda _s, ln: lines.append(ln)).wrap(
        script, env={"DEPLOY_TOKEN": token})
    streamed = "".join(lines)
    assert result.exit_code == 0
    for piece in (token, token[:6], token[6:]):
        assert piece not in streamed
    assert "\ufffd" not in streamed  # no character was cut in two either
    assert streamed == "a" * (CHUNK - 6) + REDACTED + "é" * 40000 + "short " + REDACTED
    assert lines[-1] == "short " + REDACTED


# --- a stalled Redis: callbacks off the supervising thread, result writes retried ----------------


@posix_only
@pytest.mark.timeout(30)
@pytest.mark.parametrize("stuck", ["cancel_check", "heartbeat"])
def test_a_callback_stuck_on_redis_does_not_delay_the_timeout(stuck: str) -> None:
    stall = threading.Event()  # never set: each call blocks as on a stopped Redis server

    def stalled() -> bool:
        stall.wait(3)
        return False

    callbacks: dict[str, Any] = ({"cancel_check": stalled} if stuck == "cancel_check" else
                                 {"heartbeat": stalled, "heartbeat_interval": 0.1})
    result = wrapper(**callbacks).wrap(FIXTURES / "wait_forever.py", timeout=0.5)
    assert result.timed_out and result.exit_code == EXIT_TIMEOUT
    assert result.duration < 2.5  # killed at its deadline, not when the stuck call (3 s) returned


class FlakyRuns(RecordingRuns):
    """Its result writes fail with a lost Redis the first ``failures`` times."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def _maybe_fail(self, name: str) -> None:
        if self.failures > 0:
            self.failures -= 1
            self.calls.append((f"{name}:unreachable", {}))
            raise RedisUnavailable("Redis is unreachable while accessing runs: Timeout reading "
                                   "from socket")

    def record_cli_execution(self, run_id: str, execution: dict[str, Any]) -> Any:
        self._maybe_fail("record_cli_execution")
        return super().record_cli_execution(run_id, execution)

    def update_run(self, run_id: str, *, status: str | None = None, **fields: Any) -> Any:
        if status != "running":
            self._maybe_fail("update_run")
        return super().update_run(run_id, status=status, **fields)


def test_the_result_is_recorded_once_redis_is_back() -> None:
    runs = FlakyRuns(failures=3)
    runs_calls = runs.calls
    result = wrapper(runs=runs, record_patience=30).wrap(FIXTURES / "exit_code.py", ["2"],
                                                         run_id="r-1")
    assert result.exit_code == 2
    names = [name for name, _ in runs_calls]
    assert names[1:] == ["record_cli_execution:unreachable"] * 3 + [
        "record_cli_execution", "update_run:failed"]
    assert runs_calls[-1][1]["exit_code"] == 2


def test_recording_the_result_gives_up_after_its_patience(
        caplog: pytest.LogCaptureFixture) -> None:
    runs = FlakyRuns(failures=1_000_000)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="pitstop.scripts.cliwrapper"):
        result = wrapper(runs=runs, record_patience=0.5).wrap(
            FIXTURES / "exit_code.py", ["0"], run_id="r-2")
    assert result.succeeded  # the result is still returned
    assert 0.5 <= time.monotonic() - started < 5
    attempts = [name for name, _ in runs.calls if name.endswith(":unreachable")]
    assert 3 <= len(attempts) <= 6  # a backoff, not a busy loop
    assert "Redis unreachable while recording its result (succeeded, exit code 0)" in caplog.text
    assert "could not record the result of run r-2 (succeeded, exit code 0)" in caplog.text


def test_recording_never_waits_past_give_up_by() -> None:
    runs = FlakyRuns(failures=1_000_000)
    started = time.monotonic()
    wrapper(runs=runs, record_patience=60, give_up_by=time.monotonic()).wrap(
        FIXTURES / "exit_code.py", ["0"], run_id="r-3")
    assert time.monotonic() - started < 5
    assert [name for name, _ in runs.calls].count("record_cli_execution:unreachable") == 1


# --- where a plain wrapper records (issue 6 item 18; with Redis: tests/integration) ---------------


def test_a_plain_wrapper_records_in_its_project_and_nowhere_else(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PITSTOP_HOME")
    outside = tmp_path / "outside"
    outside.mkdir()
    monkeypatch.chdir(outside)
    CLIWrapper(allowed_roots=[FIXTURES]).wrap(FIXTURES / "exit_code.py", ["0"])
    assert list(outside.iterdir()) == []  # not a project: a plain library

    project = tmp_path / "project"
    (project / "config").mkdir(parents=True)
    (project / "config" / "pitstop.yaml").write_text("secret_names: ['*_LABEL']\n")
    (project / "sub").mkdir()
    monkeypatch.chdir(project / "sub")  # found from a subdirectory, as git finds .git
    monkeypatch.setenv("BUILD_LABEL", CANARY)
    result = CLIWrapper(allowed_roots=[FIXTURES]).wrap(FIXTURES / "echo_args.py", [CANARY])
    log = (project / ".state" / "cli_executions.jsonl").read_text()
    assert result.run_id in log and CANARY not in log  # the project's secret_names apply
    assert not (project / ".state" / "redis").exists()  # no embedded Redis started
    CLIWrapper(allowed_roots=[FIXTURES], project=False).wrap(FIXTURES / "exit_code.py", ["0"])
    assert len(log.splitlines()) == len(
        (project / ".state" / "cli_executions.jsonl").read_text().splitlines())
