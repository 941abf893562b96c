"""Path attacks through step params an event can template: a triage step's ``file`` naming
pitstop's own state (the secret key, the embedded Redis's passwords) instead of test output."""

from __future__ import annotations

from pathlib import Path

import pytest

from pitstop.kernel.errors import PathNotAllowed
from pitstop.triage.service import resolve_input


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / ".state" / "redis").mkdir(parents=True)
    (tmp_path / ".state" / "secret.key").write_text("k" * 44)
    (tmp_path / ".state" / "redis" / "server.json").write_text('{"admin_password": "x"}')
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "junit.xml").write_text("<testsuite/>")
    (tmp_path / "reports" / "link").symlink_to(tmp_path / ".state" / "secret.key")
    return tmp_path


@pytest.mark.parametrize("path", [".state/secret.key", ".state/redis/server.json",
                                  "reports/../.state/secret.key", "reports/link", ".state"])
def test_a_triage_step_never_reads_the_state_directory(project: Path, path: str) -> None:
    with pytest.raises(PathNotAllowed, match="state and secrets"):
        resolve_input(path, project_dir=project, roots=[], refused=[Path(".state")])
    with pytest.raises(PathNotAllowed, match="state and secrets"):
        resolve_input(str(project / path), project_dir=project, roots=[],
                      refused=[project / ".state"])


def test_test_output_in_the_project_is_still_read(project: Path) -> None:
    assert resolve_input("reports/junit.xml", project_dir=project, roots=[],
                         refused=[Path(".state")]) == project / "reports" / "junit.xml"
