"""Units of the patches component, without a broker: diff parsing, path rules, scoring, config,
the git version gate, and check processes (missing tools, timeouts, parallelism)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pitstop.kernel.errors import ConfigError, GitTooOld
from pitstop.patches.checks import ChangedFiles, CheckResult, CheckRunner
from pitstop.patches.config import CheckConfig, PatchesConfig, load_patches_config
from pitstop.patches.diff import parse_diff, unquote_c_path
from pitstop.patches.git import check_git_version
from pitstop.patches.safety import PatchSafety, PathRules, glob_to_regex
from pitstop.patches.scoring import assess
from tests.support import pid_alive, wait_for

pytestmark = pytest.mark.timeout(30)

GIT_DIFF = b"""\
From 1234 Mon Sep 17 00:00:00 2001
Subject: a commit message git apply ignores

diff --git a/src/app.py b/src/app.py
index 1111111..2222222 100644
--- a/src/app.py
+++ b/src/app.py
@@ -1,3 +1,4 @@
 import os
+import sys
~
 def main() -> None:
@@ -10,2 +11,3 @@ def main() -> None:
     pass
+    return None
~
diff --git a/old name.py b/new name.py
similarity index 90%
rename from old name.py
rename to new name.py
diff --git a/run.sh b/run.sh
old mode 100644
new mode 100755
diff --git "a/caf\\303\\251.txt" "b/caf\\303\\251.txt"
new file mode 100644
--- /dev/null
+++ "b/caf\\303\\251.txt"
@@ -0,0 +1 @@
+caf\xc3\xa9 \r
""".replace(b"\n~\n", b"\n \n")  # "~": an empty context line


def test_a_git_diff_is_parsed_as_git_reads_it() -> None:
    parsed = parse_diff(GIT_DIFF)
    assert parsed.problems == []
    app, rename, mode, cafe = parsed.files
    assert app.path == "src/app.py" and [h.added for h in app.hunks] == [[2], [12]]
    assert rename.rename_from == "old name.py" and rename.new_path == "new name.py"
    assert mode.old_mode == "100644" and mode.new_mode == "100755"
    assert cafe.is_new and cafe.path == "caf\u00e9.txt"
    assert parsed.added_lines() == {"src/app.py": [2, 12], "new name.py": [], "run.sh": [],
                                    "caf\u00e9.txt": [1]}
    assert PatchSafety().inspect_diff(GIT_DIFF).safe


@pytest.mark.parametrize(("quoted", "plain"), [
    ('"a/b c"', "a/b c"), ('"a\\tb"', "a\tb"), ('"\\303\\251"', "\u00e9"), ('"a\\"b"', 'a"b'),
    ('"unterminated', None), ('"bad\\q"', None), ('"\\377"', None), ('"a"b"', None)])
def test_c_quoted_names(quoted: str, plain: str | None) -> None:
    assert unquote_c_path(quoted) == plain


@pytest.mark.parametrize(("pattern", "path", "hit"), [
    (".github/workflows/**", ".github/workflows/ci.yml", True),
    (".github/workflows/**", ".GitHub/Workflows/deep/x.yaml", True),
    (".github/workflows/**", ".github/dependabot.yml", False),
    ("**/.env", ".env", True), ("**/.env", "svc/.env", True), ("**/.env", "svc/.envrc", False),
    ("**/*.pem", "certs/a/b.pem", True), ("Jenkinsfile", "ci/Jenkinsfile", False),
    ("src/*.py", "src/a.py", True), ("src/*.py", "src/x/a.py", False),
])
def test_protected_globs(pattern: str, path: str, hit: bool) -> None:
    assert bool(glob_to_regex(pattern).match(path)) is hit


def test_protected_paths_are_reported_not_refused() -> None:
    rules = PathRules([".github/workflows/**", "deploy/**"])
    diff = (b"diff --git a/deploy/prod.yml b/deploy/prod.yml\nnew file mode 100644\n"
            b"--- /dev/null\n+++ b/deploy/prod.yml\n@@ -0,0 +1 @@\n+x: 1\n")
    report = PatchSafety(rules).inspect_diff(diff)
    assert report.safe and report.protected == {"deploy/prod.yml": "deploy/**"}


def check(name: str, status: str, weight: float, score: float | None = None,
          high: int = 0) -> CheckResult:
    value = (1.0 if status == "passed" else 0.0) if score is None else score
    return CheckResult(name, "exit_code", status, value, weight, 0.1, status,  # type: ignore[arg-type]
                       high_severity=high)


SEED = {"tests": 40, "lint": 20, "types": 15, "security": 15, "coverage": 10}


def seed_checks(**status: str) -> list[CheckResult]:
    return [check(name, status.get(name, "passed"), weight) for name, weight in SEED.items()]


@pytest.mark.parametrize(("statuses", "method", "score", "decision"), [
    ({}, "apply", 100.0, "auto_merge"),
    ({"lint": "failed"}, "apply", 80.0, "pr"),
    ({"coverage": "failed"}, "apply", 90.0, "pr"),
    ({"types": "missing"}, "apply", 85.0, "pr"),
    ({"lint": "failed", "coverage": "failed"}, "apply", 70.0, "review"),
    ({}, "3way", 90.0, "pr"),
    ({"tests": "failed"}, "apply", 60.0, "review"),
    ({"tests": "missing"}, "apply", 60.0, "review"),
])
def test_scores_and_decisions(statuses: dict[str, str], method: str, score: float,
                              decision: str) -> None:
    result = assess(seed_checks(**statuses), method=method, protected={}, auto_merge_at=95,
                    pr_at=80, three_way_penalty=10)
    assert (result.score, result.decision) == (score, decision)


def test_hard_gates_send_a_perfect_score_to_review() -> None:
    protected = assess(seed_checks(), method="apply", protected={".env": "**/.env"},
                       auto_merge_at=95, pr_at=80, three_way_penalty=10)
    assert protected.score == 100.0 and protected.decision == "review"
    assert protected.gates["no_protected_paths"] is False
    checks = seed_checks()
    checks[3] = check("security", "passed", 15, high=1)
    high = assess(checks, method="apply", protected={}, auto_merge_at=95, pr_at=80,
                  three_way_penalty=10)
    assert high.decision == "review" and high.gates["no_high_severity"] is False


def test_the_git_version_gate() -> None:
    with pytest.raises(GitTooOld, match="CVE-2023-23946"):
        check_git_version((2, 39, 1))
    assert check_git_version((2, 39, 2)) == (2, 39, 2)
    assert check_git_version() >= (2, 39, 2)  # the machine's own git


def test_config_defaults_and_errors(tmp_path: Path) -> None:
    resolved = PatchesConfig().resolved(PatchesConfig().defaults)
    assert {name: c.weight for name, c in resolved.checks.items()} == SEED
    assert (resolved.auto_merge_at, resolved.pr_at) == (95.0, 80.0)
    assert ".github/workflows/**" in resolved.protected
    (tmp_path / "patches.yaml").write_text(
        "defaults:\n  extra_protected: ['deploy/**']\nrepos:\n  app:\n    path: ../app\n"
        "    checks:\n      tests:\n        command: [pytest]\n        weight: -1\n")
    with pytest.raises(ConfigError, match=r"patches.yaml:9 at repos.app.checks.tests.weight"):
        load_patches_config(tmp_path)
    (tmp_path / "patches.yaml").write_text("repos:\n  app:\n    url: ftp://x\n")
    with pytest.raises(ConfigError, match="url must be"):
        load_patches_config(tmp_path)
    (tmp_path / "patches.yaml").write_text("repos:\n  app:\n    path: /x\n    pr_at: 99\n")
    with pytest.raises(ConfigError, match="pr_at must not be above auto_merge_at"):
        load_patches_config(tmp_path)


def test_the_shipped_config_loads() -> None:
    config = load_patches_config(Path(__file__).resolve().parents[2] / "config")
    assert config.queue == "patches"


def run(spec: CheckConfig, tmp_path: Path, name: str = "c") -> CheckResult:
    return CheckRunner(kill_grace=0.5).run_one(name, spec, tmp_path, ChangedFiles([], {}),
                                               tmp_path / f"scratch-{name}")


def test_a_missing_tool_is_missing_never_a_pass(tmp_path: Path) -> None:
    gone = run(CheckConfig(command=["no-such-tool-pitstop", "x"], weight=5), tmp_path, "a")
    assert gone.status == "missing" and gone.score == 0 and "no-such-tool-pitstop" in gone.summary
    module = run(CheckConfig(command=["{python}", "-m", "no_such_module_pitstop"]), tmp_path, "b")
    assert module.status == "missing" and "no_such_module_pitstop" in module.summary


def test_nothing_to_check_is_said(tmp_path: Path) -> None:
    result = run(CheckConfig(kind="ruff", command=["ruff", "check", "{changed_py}"]), tmp_path)
    assert result.status == "passed" and "nothing to check" in result.summary


def test_a_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    spec = CheckConfig(timeout=0.5, command=[
        "sh", "-c", "echo $$ > {scratch}/pids; sleep 30 & echo $! >> {scratch}/pids; wait"])
    started = time.monotonic()
    result = run(spec, tmp_path, "slow")
    assert result.status == "timed_out" and result.score == 0
    assert time.monotonic() - started < 5
    pids = [int(p) for p in (tmp_path / "scratch-slow" / "pids").read_text().split()]
    assert len(pids) == 2
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), timeout=5,
             message="the check and its child killed")


def test_checks_run_in_parallel(tmp_path: Path) -> None:
    checks = {f"c{i}": CheckConfig(command=["sleep", "1"]) for i in range(4)}
    started = time.monotonic()
    results = CheckRunner().run_all(checks, tmp_path, ChangedFiles([], {}), tmp_path / "s")
    wall = time.monotonic() - started
    assert [r.status for r in results] == ["passed"] * 4
    assert wall < 2.5, f"four 1 s checks took {wall:.2f}s: not in parallel"


def test_checks_get_no_secrets_from_the_worker(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_mustnotleak")
    spec = CheckConfig(command=["sh", "-c", "env > {scratch}/env"])
    assert run(spec, tmp_path, "env").status == "passed"
    seen = (tmp_path / "scratch-env" / "env").read_text()
    assert "ghp_mustnotleak" not in seen and "CI=1" in seen
