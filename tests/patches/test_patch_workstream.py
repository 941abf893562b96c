"""Error recovery end to end through the workstream engine and a real worker.

``pitstop emit triage.auto_fixable`` → the trigger router (in the worker) launches
WS-ERROR-RECOVERY → ``fix_lint`` runs ruff on the sample repository (on the patches queue) → its
diff goes to ``validate_patch`` → the real checks pass → auto-merged onto main and its remote.
The project's workstream and trigger are the shipped definitions' shape, written here so the
test does not depend on what else the shipped files hold.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pitstop.kernel.serverinfo import ServerInfo
from pitstop.workstreams.catalog import WorkstreamCatalog
from tests.patches.sample import CALC, git, make_sample, patches_project, sample_checks
from tests.support import ROOT, run_cli, running, wait_for, worker_args

pytestmark = [pytest.mark.integration, pytest.mark.system, pytest.mark.timeout(120)]

WORKSTREAM = {
    "description": "an auto-fixable failure - fix it, then validate and land the patch",
    "concurrency": {"policy": "queue", "key": "{{ event.data.repo | default('app') }}"},
    "steps": [
        {"id": "fix", "kind": "fix_lint",
         "params": {"repo": "{{ event.data.repo | default('app') }}"}, "timeout": 600},
        {"id": "validate", "kind": "validate_patch", "timeout": 1800,
         "params": {"repo": "{{ event.data.repo | default('app') }}",
                    "patch": "{{ steps.fix.patch }}", "base": "{{ steps.fix.base_sha }}",
                    "title": "pitstop: auto-fix for {{ event.data.test | default('lint') }}"}},
    ],
}
TRIGGER = {"id": "auto_fix", "event": "triage.auto_fixable", "workstream": "WS-ERROR-RECOVERY",
           "conditions": {"field": "data.confidence", "gte": 0.8}}


def test_the_shipped_error_recovery_workstream_uses_the_patch_steps() -> None:
    shipped = ROOT / "config" / "workstreams.yaml"
    if not shipped.exists():
        pytest.skip("config/workstreams.yaml is not in this tree")
    catalog = WorkstreamCatalog.load(shipped)
    assert "WS-ERROR-RECOVERY" in catalog
    recovery = catalog.get("WS-ERROR-RECOVERY")
    assert recovery.available, recovery.unavailable_reason
    kinds = [step.kind for step in catalog.launch_spec("WS-ERROR-RECOVERY").all_steps()]
    assert kinds == ["fix_lint", "validate_patch"]


def test_triage_auto_fixable_to_a_landed_fix(tmp_path: Path, pitstop_env: dict[str, str],
                                            private_redis: ServerInfo) -> None:
    sample = make_sample(tmp_path)
    sample.push_commit("calc.py", "import sys\nimport os\n" + CALC, scratch=tmp_path)
    git(sample.path, "fetch", "-q", "origin")
    git(sample.path, "update-ref", "refs/heads/main", "refs/remotes/origin/main")
    home = tmp_path / "home"
    env = patches_project(home, pitstop_env, private_redis.url, sample, sample_checks(),
                          repo="app")
    (home / "scripts").mkdir()
    (home / "config" / "workstreams.yaml").write_text(yaml.safe_dump(
        {"workstreams": {"WS-ERROR-RECOVERY": WORKSTREAM}}))
    (home / "config" / "triggers.yaml").write_text(yaml.safe_dump(
        {"version": 1, "triggers": [TRIGGER]}))
    env["PITSTOP_ALLOWED_ROOTS"] = str(home / "scripts")

    with running(worker_args("recovery", "default,patches", 2), env,
                 tmp_path / "worker.log", ready="ready.", timeout=60) as worker:
        emitted = run_cli(["emit", "triage.auto_fixable", "--data",
                           json.dumps({"confidence": 0.9, "repo": "app",
                                       "test": "tests/test_calc.py::test_add"})], env)
        assert emitted.returncode == 0, emitted.stderr

        def landed() -> bool:
            text = git(sample.remote, "show", "main:calc.py")
            return "import sys" not in text

        wait_for(landed, timeout=90, interval=0.2,
                 message=f"the fix on the remote; worker log:\n{worker.output()[-3000:]}")

    assert "import os" not in sample.file_at("main", "calc.py", remote=True)
    subject = git(sample.remote, "log", "-1", "--format=%s", "main")
    assert subject == "pitstop: auto-fix for tests/test_calc.py::test_add"
    merged = [json.loads(line) for line in
              (home / ".state" / "patch_decisions.jsonl").read_text().splitlines()]
    assert merged[-1]["result"] == "merged"
    assert merged[-1]["source"] == "workstream:WS-ERROR-RECOVERY/validate"
    events = run_cli(["events", "patch.*", "--json"], env)
    assert '"patch.merged"' in events.stdout
    completed = run_cli(["events", "workstream.**", "--json"], env)
    assert "workstream.ws-error-recovery.completed" in completed.stdout, completed.stdout
