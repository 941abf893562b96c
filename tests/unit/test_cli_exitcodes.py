"""One exit-code table (pitstop.kernel.errors.ExitCode) for every command, as the README prints it."""

from __future__ import annotations

import re

import pytest

from pitstop.cli import main
from pitstop.cli.doctor import Check, doctor_exit_code
from pitstop.kernel.errors import (
    ConfigError,
    ExitCode,
    RedisUnavailable,
    RunNotFound,
    ScriptError,
    ValidationError,
)
from tests.support import ROOT

pytestmark = pytest.mark.timeout(60)


def test_errors_exit_with_the_codes_of_the_table() -> None:
    assert ConfigError("x").exit_code == ValidationError.exit_code == ExitCode.USAGE == 2
    assert ScriptError.exit_code == ExitCode.USAGE
    assert RedisUnavailable.exit_code == ExitCode.REDIS_UNAVAILABLE == 3
    assert RunNotFound.exit_code == ExitCode.NOT_FOUND == 4


def test_the_readme_prints_the_table() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(\d+)` \| (.+) \|$", readme, flags=re.MULTILINE))
    assert {int(code) for code in rows} == {int(code) for code in ExitCode}
    for code in ExitCode:
        assert rows[str(int(code))].strip(), code


@pytest.mark.parametrize(("failed", "code"), [
    (["config"], ExitCode.USAGE),
    (["redis", "state dir"], ExitCode.REDIS_UNAVAILABLE),
    (["workers", "beat"], ExitCode.FAILURE),
])
def test_doctor_exits_as_every_other_command_would(failed: list[str], code: int) -> None:
    assert doctor_exit_code([Check(name, False, "") for name in failed]) == code


def test_a_mistyped_config_dir_is_an_error_for_every_command(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("PITSTOP_CONFIG_DIR", "/nonexistent/cofnig")
    with pytest.raises(SystemExit) as exited:
        main(["log"])
    assert exited.value.code == ExitCode.USAGE
    assert "PITSTOP_CONFIG_DIR: /nonexistent/cofnig is not a directory" in capsys.readouterr().err
