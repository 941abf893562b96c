"""A real worker: ``pitstop patch validate --wait`` through the queue, the review CLI, and a
worker SIGKILLed mid-check whose worktree is pruned when a worker starts again.

Each test has a redis-server of its own (a worker consumes the ``default`` queue too, and must
not take other tests' tasks) and a project directory with its ``config/patches.yaml``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import redis

from pitstop.kernel.constants import PATCH_WORKTREES_DIR
from pitstop.kernel.serverinfo import ServerInfo
from pitstop.patches.worktree import processes_inside
from tests.patches.sample import CALC, Sample, git, make_sample, patches_project, sample_checks
from tests.support import Proc, pid_alive, run_cli, running, wait_for, worker_args

pytestmark = [pytest.mark.integration, pytest.mark.system, pytest.mark.timeout(90)]

MUL = CALC + "\n\ndef mul(a: int, b: int) -> int:\n    return a * b\n"
MUL_TEST = "from calc import mul\n\n\ndef test_mul() -> None:\n    assert mul(2, 3) == 6\n"


def project(tmp_path: Path, pitstop_env: dict[str, str], info: ServerInfo, sample: Sample,
            checks: dict[str, Any]) -> dict[str, str]:
    return patches_project(tmp_path / "home", pitstop_env, info.url, sample, checks)


def worker(env: dict[str, str], log: Path, name: str) -> Any:
    return running(worker_args(name, "patches"), env, log, ready="ready.", timeout=60)


def test_validate_wait_through_a_worker_and_the_review_cli(
        tmp_path: Path, pitstop_env: dict[str, str], private_redis: ServerInfo) -> None:
    sample = make_sample(tmp_path)
    env = project(tmp_path, pitstop_env, private_redis, sample, sample_checks())
    good = tmp_path / "good.diff"
    good.write_bytes(sample.patch({"calc.py": MUL, "tests/test_mul.py": MUL_TEST},
                                  scratch=tmp_path))
    bad = tmp_path / "bad.diff"
    bad.write_bytes(sample.patch({"calc.py": CALC.replace("a + b", "a - b")}, scratch=tmp_path))

    with worker(env, tmp_path / "worker.log", "patches1"):
        merged = run_cli(["patch", "validate", str(good), "--repo", str(sample.path), "--wait"],
                         env)
        assert merged.returncode == 0, merged.stdout + merged.stderr
        assert "merged as" in merged.stdout
        for check in ("tests", "lint", "types", "security", "coverage"):
            assert check in merged.stdout
        assert "def mul" in sample.file_at("main", "calc.py", remote=True)

        queued = run_cli(["patch", "validate", str(bad), "--repo", "sample", "--wait", "--json"],
                         env)
        assert queued.returncode == 1, queued.stderr
        outcome = json.loads(queued.stdout)
        assert outcome["result"] == "review_queued"
        review_id = outcome["landing"]["review_id"]

    listed = run_cli(["review", "list"], env)
    assert review_id[-12:] in listed.stdout, listed.stdout + listed.stderr
    shown = run_cli(["review", "show", review_id[-12:]], env)
    assert "tests/test_calc.py::test_add" in shown.stdout
    refused = run_cli(["review", "reject", review_id], env)
    assert refused.returncode == 2 and "--reason" in refused.stderr
    rejected = run_cli(["review", "reject", review_id, "--reason", "breaks add"], env)
    assert rejected.returncode == 0, rejected.stderr
    assert run_cli(["review", "list"], env).stdout.strip() == ""
    again = run_cli(["review", "approve", review_id], env)
    assert again.returncode == 2 and "rejected" in again.stderr
    assert git(sample.path, "branch", "--list", "pitstop/*") == ""


def test_a_worker_killed_mid_check_leaves_no_worktree_once_a_worker_starts(
        tmp_path: Path, pitstop_env: dict[str, str], private_redis: ServerInfo) -> None:
    sample = make_sample(tmp_path)
    # A check that never ends, with a child of its own that outlives it.
    checks = {"tests": {"kind": "pytest", "weight": 100, "timeout": 120,
                        "command": ["sh", "-c", "sleep 300 & exec sleep 301"]}}
    env = project(tmp_path, pitstop_env, private_redis, sample, checks)
    patch = tmp_path / "good.diff"
    patch.write_bytes(sample.patch({"calc.py": MUL}, scratch=tmp_path))
    worktrees = Path(env["PITSTOP_STATE_DIR"]) / PATCH_WORKTREES_DIR

    first = Proc(worker_args("doomed", "patches"), env,
                 tmp_path / "doomed.log")
    try:
        first.wait_for_output("ready.", timeout=60)
        sent = run_cli(["patch", "validate", str(patch), "--repo", "sample"], env)
        assert sent.returncode == 0, sent.stderr
        tree = wait_for(lambda: next((p for p in worktrees.glob("patch-*") if p.is_dir()), None),
                        timeout=30, message="the validation's worktree")
        inside = wait_for(lambda: processes_inside(tree), timeout=30,
                          message="the check running in the worktree")
    finally:
        first.kill()  # SIGKILL the worker and its pool process mid-check

    assert tree.exists()
    with worker(env, tmp_path / "second.log", "restarted"):
        wait_for(lambda: not tree.exists(), timeout=30, message="the stale worktree pruned")
    assert not any(worktrees.glob("*.owner"))
    listed = git(sample.path, "worktree", "list", "--porcelain")
    assert listed.count("worktree ") == 1, listed
    wait_for(lambda: not any(pid_alive(pid) for pid in inside), timeout=10,
             message="the check's processes gone")
    client = redis.Redis.from_url(private_redis.url)
    try:
        assert client.ping()
    finally:
        client.close()
    assert os.path.exists(sample.path / "calc.py")


def test_local_dry_run_prints_the_table_and_bad_input_is_one_line(
        tmp_path: Path, pitstop_env: dict[str, str], private_redis: ServerInfo) -> None:
    sample = make_sample(tmp_path)
    env = project(tmp_path, pitstop_env, private_redis, sample, sample_checks())
    lint = tmp_path / "lint.diff"
    lint.write_bytes(sample.patch({"calc.py": "import os\n" + MUL, "tests/test_mul.py": MUL_TEST},
                                  scratch=tmp_path))
    before = sample.remote_head()

    dry = run_cli(["patch", "validate", str(lint), "--repo", "sample", "--local", "--dry-run"],
                  env)

    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "lint" in dry.stdout and "failed" in dry.stdout and "F401" not in dry.stderr
    assert "score 80.0%, applied with apply: would open pr" in dry.stdout
    assert sample.remote_head() == before
    unknown = run_cli(["patch", "validate", str(lint), "--repo", "nope", "--local"], env)
    assert unknown.returncode == 2
    assert unknown.stderr.strip().splitlines() == [
        "pitstop: error: unknown repository 'nope' (known: sample)"]
    missing = run_cli(["patch", "validate", str(tmp_path / "none.diff"), "--repo", "sample",
                       "--local"], env)
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    evil = tmp_path / "evil.diff"
    evil.write_bytes(b"--- /dev/null\n+++ b/../outside\n@@ -0,0 +1 @@\n+x\n")
    refused = run_cli(["patch", "validate", str(evil), "--repo", "sample", "--local",
                       "--dry-run"], env)
    assert refused.returncode == 1 and "unsafe: refused a path with '..'" in refused.stdout


def test_validate_wait_says_at_once_which_queue_it_waits_on(
        tmp_path: Path, pitstop_env: dict[str, str], private_redis: ServerInfo) -> None:
    """Found as a new user: `patch validate --wait` under `pitstop up` (no patches worker)
    printed nothing for its whole hour; it now says at once what it waits for, and when."""
    sample = make_sample(tmp_path)
    env = project(tmp_path, pitstop_env, private_redis, sample, sample_checks())
    good = tmp_path / "good.diff"
    good.write_bytes(sample.patch({"calc.py": MUL}, scratch=tmp_path))
    waited = run_cli(["patch", "validate", str(good), "--repo", "sample", "--wait",
                      "--timeout", "1"], env)
    assert waited.returncode == 1, waited.stdout + waited.stderr
    lines = waited.stderr.strip().splitlines()
    first = lines[0]
    assert first.startswith("validation queued as task ")
    assert first.endswith("on queue 'patches'; waiting up to 1s for a worker consuming it "
                          "(pitstop worker -Q patches)")
    assert any(line.startswith("pitstop: error: no outcome within 1s") for line in lines)
