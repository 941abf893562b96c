"""The ``pitstop`` command and the shipped trigger config: the phase chain end to end, changed
files from real git, and bad configs refused in one line (exit 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.support import ROOT, Proc, run_cli, wait_for, worker_args
from tests.trigger_project import own_project, workstream_runs

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]


@pytest.fixture
def shipped(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str], redis.Redis]]:
    """A project with the shipped config/triggers.yaml and config/workstreams.yaml."""
    with own_project(tmp_path / "home", tmp_path / "redis",
                     triggers=(ROOT / "config" / "triggers.yaml").read_text(),
                     workstreams=(ROOT / "config" / "workstreams.yaml").read_text()) as project:
        home = project[0]
        for script in (ROOT / "scripts").glob("ws_*.py"):
            shutil.copy(script, home / "scripts" / script.name)
        yield project


def test_emit_phase_1_runs_the_chain_and_show_traces_it_back(
        shipped: tuple[Path, dict[str, str], redis.Redis]) -> None:
    home, env, client = shipped
    worker = Proc(worker_args("chain", "default,linux", 2), env,
                  home / "worker.log")
    try:
        worker.wait_for_output("ready.", 60)
        done = run_cli(["emit", "phase.1.completed", "branch=main"], env)
        assert done.returncode == 0, done.stderr
        first = done.stdout.split()[0]

        def finished(workstream: str) -> object:
            return [run for run in workstream_runs(client, workstream) if run.terminal]

        [last] = wait_for(lambda: finished("WS-PHASE-4"), 120, interval=0.5,
                          message=f"WS-PHASE-4 to finish ({home / 'worker.log'})")
        assert last.status == "succeeded", last
        for workstream in ("WS-PHASE-2", "WS-PHASE-3"):
            [run] = workstream_runs(client, workstream)
            assert run.status == "succeeded" and run.trace_id == first
        assert last.trace_id == first
        shown = run_cli(["show", last.run_id], env)
        assert shown.returncode == 0, shown.stderr
        assert first in shown.stdout and "phase.1.completed" in shown.stdout
    finally:
        worker.stop()


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                   cwd=repo, check=True, capture_output=True)


def test_emit_changed_files_from_git_and_the_trigger_sees_them(
        shipped: tuple[Path, dict[str, str], redis.Redis], tmp_path: Path) -> None:
    _, env, _ = shipped
    repo = tmp_path / "repo"
    (repo / "schema").mkdir(parents=True)
    (repo / "schema" / "a.sql").write_text("create table a;\n")
    (repo / "old name.txt").write_text("x\n")
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "one")
    (repo / "schema" / "a.sql").write_text("create table a (id int);\n")
    _git(repo, "mv", "old name.txt", "new name.txt")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "two")
    done = subprocess.run([*__import__("tests.support").support.pitstop_cmd(
        "emit", "github.push", "--changed-files", "HEAD~1..HEAD", "branch=main", "after=abc",
        "--json")], env=env, cwd=repo, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)["data"]
    assert data["changed_files"] == ["new name.txt", "old name.txt", "schema/a.sql"]
    assert data["files_truncated"] is False
    tested = run_cli(["triggers", "test", "github.push", "--json", "--data",
                      json.dumps({"branch": "main", "after": "abc",
                                  "changed_files": data["changed_files"]})], env)
    assert tested.returncode == 0, tested.stderr
    verdicts = {json.loads(line)["rule"]: json.loads(line)["decision"]
                for line in tested.stdout.splitlines()}
    assert verdicts["schema_changed"] == "would_launch"
    bad = run_cli(["emit", "git.push", "--changed-files", "--output=x..HEAD"], env, cwd=repo)
    assert bad.returncode == 2 and "is not a revision" in bad.stderr


@pytest.mark.parametrize(("edit", "where"), [
    ("  - {id: x, event: a.b, workstream: WS-NOPE}\n", "workstream: unknown workstream"),
    ("  - {id: x, schedule: {cron: '0 2 * * *', timezone: Mars/Base}, workstream: WS-BUILD}\n",
     "schedule.timezone: unknown time zone"),
    ("  - {id: nightly, event: a.b, workstream: WS-BUILD}\n", "id: duplicate rule id 'nightly'"),
])
def test_a_bad_triggers_yaml_is_one_line_with_exit_2(
        shipped: tuple[Path, dict[str, str], redis.Redis], edit: str, where: str) -> None:
    home, env, _ = shipped
    path = home / "config" / "triggers.yaml"
    lines = len(path.read_text().splitlines())
    path.write_text(path.read_text() + edit)
    done = run_cli(["triggers", "reload"], env)
    assert done.returncode == 2
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"pitstop: error: {path}:{lines + 1} at triggers[")
    assert where in line
