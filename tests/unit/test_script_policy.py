"""What a caller may ask of a worker: ``--env`` names (an allowlist) and script paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pitstop.kernel.constants import DEFAULT_CALLER_ENV
from pitstop.kernel.errors import ConfigError, PathNotAllowed, ValidationError
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.settings import load_settings
from pitstop.scripts.cliwrapper import CLIWrapper
from pitstop.scripts.policy import check_caller_env, check_script_path
from tests.support import FIXTURE_SCRIPTS

VALUE = "$(touch /tmp/pwned-by-env)"

# Each makes some tool a script commonly calls run code of the caller's choosing.
ATTACK_NAMES = [
    "CC", "CXX", "MAKEFLAGS", "HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "GIT_DIR",
    "GIT_WORK_TREE", "OPENSSL_CONF", "PYTHONPYCACHEPREFIX", "LUA_INIT", "LUA_INIT_5_4",
    "DOTNET_STARTUP_HOOKS", "CLASSPATH", "JAVA_OPTS", "RUSTC_WRAPPER", "GOFLAGS",
    "npm_config_script_shell", "npm_config_node_options", "PIP_INDEX_URL", "PIP_CONFIG_FILE",
    "HTTPS_PROXY", "http_proxy", "ALL_PROXY", "NO_PROXY", "SSL_CERT_FILE", "PYENV_VERSION",
    "ASDF_PYTHON_VERSION", "TARGET_CC", "BUILD_CC", "BUILD_CFLAGS",
]
HARD_DENIED = ["LD_PRELOAD", "BASH_ENV", "PATH", "GIT_DIR", "GIT_WORK_TREE", "OPENSSL_CONF",
               "PYTHONPYCACHEPREFIX", "LUA_INIT", "DOTNET_STARTUP_HOOKS", "RUSTC_WRAPPER",
               "PYENV_VERSION", "GIT_SSH_COMMAND"]
CI_DATA = {"GIT_SHA": "abc123", "GITHUB_SHA": "abc123", "BUILD_TYPE": "release",
           "BUILD_NUMBER": "42", "CI_PIPELINE_ID": "7", "APP_VERSION": "1.2.3", "VERSION": "1",
           "BRANCH": "main", "GIT_BRANCH": "main", "GITHUB_REF_NAME": "main",
           "DEPLOY_TOKEN": "t0ken-value", "DB_PASSWORD": "pw-value"}


@pytest.mark.parametrize("name", ATTACK_NAMES)
def test_the_default_allowlist_refuses_names_that_run_code(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        check_caller_env({"GIT_SHA": "abc", name: VALUE}, allowed=DEFAULT_CALLER_ENV)
    message = str(err.value)
    assert name in message and VALUE not in message
    assert "\n" not in message
    # It names the setting to change (or says no setting can open it).
    assert "scripts.caller_env" in message or "may not be set" in message


@pytest.mark.parametrize("name", HARD_DENIED)
def test_protected_names_stay_refused_even_when_the_allowlist_opens_everything(name: str) -> None:
    with pytest.raises(ValidationError, match=f"--env {re.escape(name)}: may not be set"):
        check_caller_env({name: VALUE}, allowed=["*"])


def test_usual_ci_data_passes_the_default_allowlist() -> None:
    check_caller_env(CI_DATA, allowed=DEFAULT_CALLER_ENV)


def test_the_allowlist_is_case_sensitive_and_names_must_be_plain() -> None:
    with pytest.raises(ValidationError, match="git_sha"):
        check_caller_env({"git_sha": "x"}, allowed=DEFAULT_CALLER_ENV)
    for bad in ("1BAD", "A-B", "A.B", "É"):
        with pytest.raises(ValidationError, match="letters, digits and _"):
            check_caller_env({bad: "x"}, allowed=["*"])
    check_caller_env({"A-B": "x"})  # a trusted library caller is not held to it


def test_several_refused_names_are_one_line_naming_each() -> None:
    with pytest.raises(ValidationError) as err:
        check_caller_env({"MAKEFLAGS": "x", "CC": "y", "GIT_SHA": "z"}, allowed=DEFAULT_CALLER_ENV)
    assert str(err.value).startswith("--env CC, MAKEFLAGS: not a name callers may set")


def test_a_wrapper_given_the_allowlist_refuses_before_anything_runs(tmp_path: Path) -> None:
    canary = tmp_path / "ran"
    wrapper = CLIWrapper(allowed_roots=[FIXTURE_SCRIPTS], redactor=Redactor(),
                         caller_env=DEFAULT_CALLER_ENV)
    with pytest.raises(ValidationError, match="--env CC: not a name callers may set"):
        wrapper.wrap(FIXTURE_SCRIPTS / "hello.sh", env={"CC": f"touch {canary}"})
    assert not canary.exists()
    result = wrapper.wrap(FIXTURE_SCRIPTS / "env_dump.py", env={"GIT_SHA": "abc123"})
    assert '"GIT_SHA": "abc123"' in result.stdout_tail


def test_caller_env_is_configurable_in_the_file_and_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    assert load_settings(config, environ={}).scripts.caller_env == list(DEFAULT_CALLER_ENV)
    (config / "pitstop.yaml").write_text("scripts:\n  caller_env: [GIT_SHA, 'MY_*']\n")
    assert load_settings(config, environ={}).scripts.caller_env == ["GIT_SHA", "MY_*"]
    env = {"PITSTOP_CALLER_ENV": "CC, BUILD_*"}
    assert load_settings(config, environ=env).scripts.caller_env == ["CC", "BUILD_*"]
    (config / "pitstop.yaml").write_text("scripts:\n  caller_env: ['A=B']\n")
    with pytest.raises(ConfigError, match=r"pitstop.yaml:2 at scripts.caller_env.0"):
        load_settings(config, environ={})


# --- script paths, checked by the sender ---------------------------------------------------------


@pytest.mark.parametrize("path", ["/etc/passwd", "../../etc/passwd", "../x.sh",
                                  "scripts/../../x.sh"])
def test_paths_that_leave_the_roots_are_refused_by_the_sender(tmp_path: Path, path: str) -> None:
    root = tmp_path / "project" / "scripts"
    root.mkdir(parents=True)
    with pytest.raises(PathNotAllowed, match="outside the allowed roots"):
        check_script_path(path, [root], cwd=tmp_path / "project")


@pytest.mark.parametrize("path", ["build.sh", "sub/build.sh", "scripts/build.sh",
                                  "../scripts/build.sh", "{root}/build.sh", "{root}/../scripts/x"])
def test_paths_inside_or_left_to_the_worker_pass(tmp_path: Path, path: str) -> None:
    project = tmp_path / "project"
    root = project / "scripts"
    root.mkdir(parents=True)
    # Relative paths are the worker's to look up; ".." is fine while it stays inside a root.
    check_script_path(path.format(root=root), [root], cwd=project / "scripts")
