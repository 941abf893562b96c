"""The checks of a patch, run in parallel in its worktree, each in its own process group.

Every check is an argument list (never a shell line) started in a new session under ``setpriv
--pdeathsig KILL`` (as scripts are: a SIGKILLed worker takes its direct children along), with
its own timeout: on expiry the whole group gets SIGTERM, then SIGKILL after a grace period, as
:mod:`pitstop.scripts.process` does. What a check left running in its group after it exited is
killed too. Output goes to files outside the worktree; only the tail is read.

The environment is built from scratch (``PATH``, a private ``HOME`` and ``TMPDIR``, locale,
``CI=1``): the patch's code runs here, and it gets none of the worker's secrets.

A tool that is not installed gives ``missing`` (score 0), never a pass: an executable not found
on ``PATH`` (plus the directory of the worker's Python), or ``-m module`` failing with "No module
named module".
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess  # nosec B404 # argv lists only, never a shell
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pitstop.kernel.proc import terminate_group, with_parent_death_signal
from pitstop.kernel.redaction import Redactor
from pitstop.patches.config import CheckConfig

__all__ = ["ChangedFiles", "CheckResult", "CheckRunner", "CheckStatus", "CommandRun"]

CheckStatus = Literal["passed", "failed", "missing", "timed_out", "error"]

_TAIL_BYTES = 64 * 1024
_LIST_PLACEHOLDERS = ("{changed_py}", "{changed_files}")
_MAX_DETAILS = 20


@dataclass(frozen=True)
class ChangedFiles:
    files: list[str]
    """Paths present after the patch (deleted ones left out)."""
    added_lines: dict[str, list[int]]

    @property
    def python(self) -> list[str]:
        return [path for path in self.files if path.endswith((".py", ".pyi"))]


@dataclass
class CheckResult:
    name: str
    kind: str
    status: CheckStatus
    score: float
    """0..1: what this check contributes, times its weight."""
    weight: float
    duration: float
    summary: str
    details: list[str] = field(default_factory=list)
    exit_code: int | None = None
    high_severity: int = 0
    """Findings of high severity (security): a hard gate."""

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["duration"] = round(self.duration, 3)
        out["score"] = round(self.score, 4)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{key: value for key, value in data.items() if key in known})


_Make = Callable[..., "CheckResult"]


@dataclass
class CommandRun:
    code: int | None
    timed_out: bool
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return f"{self.stdout}\n{self.stderr}"


def _tail(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL_BYTES))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


class CheckRunner:
    def __init__(self, *, python: str = sys.executable, kill_grace: float = 2.0,
                 redactor: Redactor | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.python = python
        self.kill_grace = kill_grace
        self.redactor = redactor or Redactor()
        parent = os.environ if environ is None else environ
        search = [parent.get("PATH", os.defpath), str(Path(python).parent)]
        self.search_path = os.pathsep.join(search)
        self.locale = parent.get("LANG", "C.UTF-8")

    # --- running -----------------------------------------------------------------------------

    def run_all(self, checks: Mapping[str, CheckConfig], worktree: Path, changed: ChangedFiles,
                scratch: Path) -> list[CheckResult]:
        """Every check at once, one thread each; results in the order of ``checks``."""
        results: dict[str, CheckResult] = {}
        threads = []
        for name, spec in checks.items():
            def work(name: str = name, spec: CheckConfig = spec) -> None:
                try:
                    results[name] = self.run_one(name, spec, worktree, changed, scratch / name)
                except Exception as exc:  # a bug must not lose the other checks' results
                    results[name] = CheckResult(name, spec.kind, "error", 0.0, spec.weight, 0.0,
                                                f"could not run: {type(exc).__name__}: {exc}")
            thread = threading.Thread(target=work, name=f"patch-check-{name}", daemon=True)
            thread.start()
            threads.append(thread)
        for thread in threads:
            thread.join()
        return [results[name] for name in checks]

    def run_one(self, name: str, spec: CheckConfig, worktree: Path, changed: ChangedFiles,
                scratch: Path) -> CheckResult:
        scratch.mkdir(parents=True, exist_ok=True)
        values = {"{python}": self.python, "{worktree}": str(worktree), "{scratch}": str(scratch),
                  "{coverage_data}": str(scratch / "coverage.data"),
                  "{coverage_json}": str(scratch / "coverage.json")}
        lists = {"{changed_py}": changed.python, "{changed_files}": changed.files}
        argv = self._expand(spec.command, values, lists)
        if argv is None:
            return CheckResult(name, spec.kind, "passed", 1.0, spec.weight, 0.0,
                               "nothing to check (no changed files of its kind)")
        missing = self._missing_tool(argv)
        if missing:
            return CheckResult(name, spec.kind, "missing", 0.0, spec.weight, 0.0,
                               f"{missing} is not installed")
        started = time.monotonic()
        deadline = started + spec.timeout
        env = {**self._env(scratch), **spec.env}
        ran = self._run(argv, worktree, env, deadline, scratch, "run")
        report: CommandRun | None = None
        if spec.report and not ran.timed_out:
            report_argv = self._expand(spec.report, values, lists) or []
            report = self._run(report_argv, worktree, env, deadline, scratch, "report")
        duration = time.monotonic() - started
        module = self._module_missing(argv, ran) or (
            self._module_missing(spec.report or [], report) if report else None)
        if module:
            return CheckResult(name, spec.kind, "missing", 0.0, spec.weight, duration,
                               f"python module {module} is not installed")
        if ran.timed_out or (report is not None and report.timed_out):
            return CheckResult(name, spec.kind, "timed_out", 0.0, spec.weight, duration,
                               f"timed out after {spec.timeout:g}s (process group killed)")
        result = self._interpret(name, spec, ran, report, scratch, changed)
        result.duration = duration
        result.summary = self.redactor.redact_text(result.summary)
        result.details = [self.redactor.redact_text(d) for d in result.details[:_MAX_DETAILS]]
        return result

    @staticmethod
    def _expand(template: Sequence[str], values: Mapping[str, str],
                lists: Mapping[str, list[str]]) -> list[str] | None:
        argv: list[str] = []
        for arg in template:
            if arg in lists:
                if not lists[arg]:
                    return None
                argv.extend(lists[arg])
                continue
            expanded = arg
            for key, value in values.items():
                expanded = expanded.replace(key, value)
            argv.append(expanded)
        return argv

    def run_command(self, argv: list[str], cwd: Path, scratch: Path, *,
                    deadline: float) -> CommandRun:
        """One command in its own process group with the checks' environment (for fixers)."""
        scratch.mkdir(parents=True, exist_ok=True)
        return self._run(argv, cwd, self._env(scratch), deadline, scratch, "command")

    def missing_tool(self, argv: list[str]) -> str | None:
        """The program of ``argv`` when it is not installed, else None."""
        return self._missing_tool(argv)

    def _missing_tool(self, argv: list[str]) -> str | None:
        program = argv[0]
        if os.sep in program:
            return None if os.access(program, os.X_OK) else program
        return None if shutil.which(program, path=self.search_path) else program

    @staticmethod
    def _module_missing(argv: Sequence[str], ran: CommandRun | None) -> str | None:
        if ran is None or ran.code in (0, None) or "-m" not in argv:
            return None
        index = list(argv).index("-m")
        if index + 1 >= len(argv):
            return None
        module = argv[index + 1]
        if f"No module named {module}" in ran.output or f"No module named '{module}'" in ran.output:
            return module
        return None

    def _env(self, scratch: Path) -> dict[str, str]:
        home = scratch / "home"
        tmp = scratch / "tmp"
        home.mkdir(exist_ok=True)
        tmp.mkdir(exist_ok=True)
        return {"PATH": self.search_path, "HOME": str(home), "TMPDIR": str(tmp),
                "LANG": self.locale, "CI": "1", "NON_INTERACTIVE": "1", "NO_COLOR": "1",
                "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1",
                "RUFF_NO_CACHE": "true", "MYPY_CACHE_DIR": str(scratch / "mypy-cache"),
                "GIT_TERMINAL_PROMPT": "0"}

    def _run(self, argv: list[str], cwd: Path, env: dict[str, str], deadline: float,
             scratch: Path, label: str) -> CommandRun:
        out_path, err_path = scratch / f"{label}.stdout", scratch / f"{label}.stderr"
        command = with_parent_death_signal(argv)
        with out_path.open("wb") as out, err_path.open("wb") as err:
            try:
                proc = subprocess.Popen(command, cwd=cwd, env=env, stdin=subprocess.DEVNULL,  # nosec B603 # configured checks, no shell
                                        stdout=out, stderr=err, close_fds=True,
                                        start_new_session=True)
            except OSError as exc:
                return CommandRun(127, False, "", f"cannot execute {argv[0]}: {exc.strerror or exc}")
            timed_out = False
            try:
                proc.wait(max(0.01, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
            except BaseException:
                self._kill_group(proc)
                raise
            self._kill_group(proc)  # on timeout, and whatever it left behind after exiting
        return CommandRun(None if timed_out else proc.returncode, timed_out, _tail(out_path),
                    _tail(err_path))

    def _kill_group(self, proc: subprocess.Popen[bytes]) -> None:
        terminate_group(proc.pid, self.kill_grace)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(self.kill_grace + 5)

    # --- reading results ---------------------------------------------------------------------

    def _interpret(self, name: str, spec: CheckConfig, ran: CommandRun, report: CommandRun | None,
                   scratch: Path, changed: ChangedFiles) -> CheckResult:
        def result(status: CheckStatus, summary: str, details: list[str] | None = None,
                   score: float | None = None, high: int = 0) -> CheckResult:
            return CheckResult(name, spec.kind, status,
                               (1.0 if status == "passed" else 0.0) if score is None else score,
                               spec.weight, 0.0, summary, details or [], ran.code, high)

        code = ran.code
        if spec.kind == "pytest":
            return self._pytest(ran, result)
        if spec.kind == "ruff":
            findings = [line for line in ran.stdout.splitlines() if re.match(r"^\S+:\d+:\d+: ", line)]
            if code == 0:
                return result("passed", "no lint findings")
            if code == 1:
                return result("failed", f"{len(findings)} lint finding(s)", findings)
            return result("error", f"ruff exited {code}: {_last_line(ran.output)}")
        if spec.kind == "mypy":
            errors = [line for line in ran.stdout.splitlines() if ": error:" in line]
            if code == 0:
                return result("passed", "no type errors")
            if code == 1:
                return result("failed", f"{len(errors)} type error(s)", errors)
            return result("error", f"mypy exited {code}: {_last_line(ran.output)}")
        if spec.kind == "bandit":
            return self._bandit(ran, result)
        if spec.kind == "coverage":
            return self._coverage(spec, ran, report, scratch / "coverage.json", changed, result)
        if code == 0:
            return result("passed", "exit code 0")
        return result("failed", f"exit code {code}: {_last_line(ran.output)}")

    @staticmethod
    def _pytest(ran: CommandRun, result: _Make) -> CheckResult:
        failed = [line[len("FAILED "):] for line in ran.stdout.splitlines()
                  if line.startswith("FAILED ")]
        errors = [line[len("ERROR "):] for line in ran.stdout.splitlines()
                  if line.startswith("ERROR ")]
        summary = _last_line(ran.stdout) or _last_line(ran.stderr)
        if ran.code == 0:
            return result("passed", summary or "tests passed")
        if ran.code == 5:
            return result("failed", "no tests were collected")
        if ran.code == 1:
            names = [item.split(" - ", 1)[0] for item in failed + errors]
            shown = ", ".join(names[:5]) or summary
            return result("failed", f"failing: {shown}", failed + errors)
        return result("failed", f"pytest exited {ran.code}: {summary}",
                      errors)

    @staticmethod
    def _bandit(ran: CommandRun, result: _Make) -> CheckResult:
        try:
            report = json.loads(ran.stdout)
            issues = list(report.get("results", []))
        except (ValueError, AttributeError):
            return result("error", f"bandit gave no JSON report (exit {ran.code}): "
                                   f"{_last_line(ran.output)}")
        high = [i for i in issues if str(i.get("issue_severity")).upper() == "HIGH"]
        medium = [i for i in issues if str(i.get("issue_severity")).upper() == "MEDIUM"]
        details = [f"{i.get('filename')}:{i.get('line_number')}: {i.get('issue_severity')} "
                   f"{i.get('test_id')} {i.get('issue_text')}" for i in issues]
        if high or medium:
            return result("failed", f"{len(high)} high, {len(medium)} medium severity "
                                    "finding(s)", details, high=len(high))
        low = len(issues)
        return result("passed", f"no medium or high findings ({low} low)" if low
                      else "no findings", details)

    @staticmethod
    def _coverage(spec: CheckConfig, ran: CommandRun, report: CommandRun | None, json_path: Path,
                  changed: ChangedFiles, result: _Make) -> CheckResult:
        try:
            data = json.loads(json_path.read_text())
            files = data["files"]
        except (OSError, ValueError, KeyError, TypeError):
            why = _last_line(report.output) if report else _last_line(ran.output)
            return result("error", f"no coverage report: {why}")
        total = covered = 0
        uncovered: list[str] = []
        for path, added in changed.added_lines.items():
            if not path.endswith(".py"):
                continue
            entry = files.get(path) or {}
            executable = set(entry.get("executed_lines", [])) | set(entry.get("missing_lines", []))
            executed = set(entry.get("executed_lines", []))
            if not entry:
                executable = set(added)  # a changed module the tests never imported
            lines = [n for n in added if n in executable]
            total += len(lines)
            hit = [n for n in lines if n in executed]
            covered += len(hit)
            missed = sorted(set(lines) - set(hit))
            if missed:
                uncovered.append(f"{path}: lines {', '.join(map(str, missed[:20]))} not run")
        if total == 0:
            return result("passed", "no changed executable lines", score=1.0)
        ratio = covered / total
        summary = f"{covered}/{total} changed lines run ({ratio:.0%}, needs {spec.min_ratio:.0%})"
        status: CheckStatus = "passed" if ratio >= spec.min_ratio else "failed"
        return result(status, summary, uncovered, score=ratio)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
