from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from pitstop.kernel.errors import ConfigError
from pitstop.kernel.sealing import KEY_FILE, key_file_sealer
from pitstop.kernel.serverinfo import SERVER_INFO_FILE, ServerInfo
from pitstop.kernel.settings import SETTINGS_FILE, find_project_dir, load_settings


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pitstop.yaml").write_text(text)
    return tmp_path


def test_defaults_without_a_file(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={})
    assert settings.redis.url is None
    assert settings.celery.visibility_timeout > settings.scripts.max_timeout


@pytest.mark.parametrize(
    ("text", "key_path", "line", "message"),
    [
        ("bus:\n  max_hops: many\n", "bus.max_hops", 2, "valid integer"),
        ("bus:\n  max_hopz: 3\n", "bus.max_hopz", 2, "unknown key"),
        ("scripts:\n  default_timeout: 10\n  bogus: true\n", "scripts.bogus", 3, "unknown key"),
        ("state_dir: .state\nstate_dir: other\n", "state_dir", 2, "duplicate key"),
        ("scripts:\n  allowed_roots: ['${NOT_SET_ANYWHERE}']\n", "scripts.allowed_roots[0]", 2,
         "NOT_SET_ANYWHERE is not set"),
        ("celery:\n  visibility_timeout: 120\n", "celery.visibility_timeout", 2,
         "must be longer than the longest task time limit"),
        ("scripts:\n  max_timeout: 60\n  default_timeout: 90\n", "scripts.default_timeout", 3,
         "must not exceed max_timeout"),
        # Values that would be accepted and then break a worker, a CLI call or every run:
        ("scripts:\n  default_queue: ''\n", "scripts.default_queue", 2, "must not be empty"),
        ("celery:\n  queues: []\n", "celery.queues", 2, "at least one queue"),
        ("celery:\n  queues:\n    - default\n    - ''\n", "celery.queues[1]", 4,
         "must not be empty"),
        ("celery:\n  queues: [default, 'linux pwsh']\n", "celery.queues[1]", 2,
         "spaces or commas"),
        ("celery:\n  queues: ['linux,pwsh']\n", "celery.queues[0]", 2, "spaces or commas"),
        ("scripts:\n  default_queue: 'a b'\n", "scripts.default_queue", 2, "spaces or commas"),
        ("scripts:\n  allowed_roots: []\n", "scripts.allowed_roots", 2,
         "at least one directory"),
        ("scripts:\n  allowed_roots: ['']\n", "scripts.allowed_roots[0]", 2,
         "must not be empty"),
        ("log_level: info\nproject_dir: /elsewhere\n", "project_dir", 2, "unknown key"),
    ],
)
def test_bad_files_name_file_key_and_line(tmp_path: Path, text: str, key_path: str | None,
                                         line: int | None, message: str) -> None:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={})
    error = caught.value
    assert error.file == str(tmp_path / "pitstop.yaml")
    assert message in str(error)
    if key_path is not None:
        assert error.key_path == key_path
        assert error.line == line
    assert error.exit_code == 2


@pytest.mark.parametrize("text", ["a: [1, 2\n", "a: b: c\n", "\tkey: 1\n", "- just\n- a list\n"])
def test_malformed_yaml(tmp_path: Path, text: str) -> None:
    write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={})
    assert caught.value.line is not None


def test_yaml_tags_cannot_construct_python_objects(tmp_path: Path) -> None:
    write(tmp_path, "log_level: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError):
        load_settings(tmp_path, environ={})


def test_environment_overrides_file_and_is_named_in_errors(tmp_path: Path) -> None:
    write(tmp_path, "server:\n  port: 9000\n")
    assert load_settings(tmp_path, environ={}).server.port == 9000
    assert load_settings(tmp_path, environ={"PITSTOP_SERVER_PORT": "9100"}).server.port == 9100
    with pytest.raises(ConfigError, match="PITSTOP_SERVER_PORT"):
        load_settings(tmp_path, environ={"PITSTOP_SERVER_PORT": "nope"})


def test_secret_references_are_resolved_and_hidden(tmp_path: Path) -> None:
    write(tmp_path, "server:\n  webhook_secret: ${HOOK_SECRET}\n")
    settings = load_settings(tmp_path, environ={"HOOK_SECRET": "s3cr3t-value"})
    assert settings.server.webhook_secret is not None
    assert settings.server.webhook_secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)


def test_redis_url_from_environment_is_secret(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, environ={"PITSTOP_REDIS_URL": "redis://:pw@host:1/0"})
    assert settings.redis.url is not None
    assert "pw" not in repr(settings)


def test_queue_ttl_defaults_to_a_day_and_the_environment_wins(tmp_path: Path) -> None:
    assert load_settings(tmp_path, environ={}).scripts.queue_ttl_seconds == 86400
    write(tmp_path, "scripts:\n  queue_ttl_seconds: 900\n")
    assert load_settings(tmp_path, environ={}).scripts.queue_ttl_seconds == 900
    overridden = load_settings(tmp_path, environ={"PITSTOP_QUEUE_TTL": "2.5"})
    assert overridden.scripts.queue_ttl_seconds == 2.5
    assert overridden.scripts.default_queue == "linux"  # the rest of the section stays


def test_the_shipped_config_sets_the_queue_ttl() -> None:
    from tests.support import ROOT

    settings = load_settings(ROOT / "config", environ={})
    assert settings.scripts.queue_ttl_seconds == 86400


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "soon", str(31 * 24 * 3600)])
def test_a_bad_queue_ttl_from_the_environment_is_named(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={"PITSTOP_QUEUE_TTL": value})
    assert caught.value.file == "environment PITSTOP_QUEUE_TTL"
    assert caught.value.key_path == "scripts.queue_ttl_seconds"
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("value", ["0", "-1", ".nan"])
def test_a_bad_queue_ttl_in_the_file_names_file_key_and_line(tmp_path: Path, value: str) -> None:
    write(tmp_path, f"scripts:\n  default_queue: linux\n  queue_ttl_seconds: {value}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={})
    assert caught.value.key_path == "scripts.queue_ttl_seconds"
    assert caught.value.line == 3


# --- flower.basic_auth: exactly one user:password login ---------------------------------------


@pytest.mark.parametrize("value", ["admin:hunter,2", "admin:hunter2,other:hunter3", "admin:",
                                   ":hunter2", "adminhunter2", ","])
def test_flower_basic_auth_from_the_environment_must_be_one_login(tmp_path: Path,
                                                                  value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={"PITSTOP_FLOWER_BASIC_AUTH": value})
    error = caught.value
    assert error.file == "environment PITSTOP_FLOWER_BASIC_AUTH"
    assert error.key_path == "flower.basic_auth"
    assert error.exit_code == 2
    assert "hunter" not in str(error)  # never echo the password


def test_flower_basic_auth_in_the_file_names_file_key_and_line(tmp_path: Path) -> None:
    write(tmp_path, "flower:\n  port: 5555\n  basic_auth: 'admin:hunter,2'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={})
    assert caught.value.key_path == "flower.basic_auth"
    assert caught.value.line == 3
    assert "','" in str(caught.value)
    assert "hunter" not in str(caught.value)
    # One login is fine, a ':' in the password included.
    for value in ("admin:hunter2", "admin:pa:ss", "a:b"):
        settings = load_settings(tmp_path / "no-file", environ={"PITSTOP_FLOWER_BASIC_AUTH": value})
        assert settings.flower.basic_auth is not None
        assert settings.flower.basic_auth.get_secret_value() == value


# --- scripts.allowed_roots: default is the project's scripts/, never the working directory -------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A checkout without config/pitstop.yaml: config/, scripts/hello.sh and a .venv, as cwd."""
    (tmp_path / "config").mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "hello.sh").write_text("echo hello\n")
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    pip = tmp_path / ".venv" / "bin" / "pip"
    pip.write_text("#!/bin/sh\n")
    pip.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("config_dir", ["config", "ABSOLUTE"])
@pytest.mark.parametrize("yaml_text", [None, "scripts:\n  default_timeout: 60\n", "log_level: info\n"])
def test_unconfigured_allowed_roots_default_to_the_scripts_dir_next_to_the_config_dir(
        project: Path, config_dir: str, yaml_text: str | None) -> None:
    directory = project / "config" if config_dir == "ABSOLUTE" else Path(config_dir)
    if yaml_text is not None:
        write(project / "config", yaml_text)
    settings = load_settings(directory, environ={})
    assert [r.resolve() for r in settings.scripts.allowed_roots] == [
        (project / "scripts").resolve()]


def test_the_default_roots_refuse_what_lies_in_the_working_directory(project: Path) -> None:
    from pitstop.kernel.errors import PathNotAllowed
    from pitstop.scripts.cliwrapper import CLIWrapper

    settings = load_settings(Path("config"), environ={})
    wrapper = CLIWrapper(allowed_roots=settings.scripts.allowed_roots)
    assert wrapper.resolve_script("scripts/hello.sh") == (project / "scripts" / "hello.sh"
                                                          ).resolve()
    with pytest.raises(PathNotAllowed):
        wrapper.resolve_script(".venv/bin/pip")
    # Relative roots in the file are the project's, wherever the worker was started.
    write(project / "config", "scripts:\n  allowed_roots: [scripts, tools, /abs]\n")
    (project / "sub").mkdir()
    settings = load_settings(environ={}, cwd=project / "sub")
    assert settings.scripts.allowed_roots == [project / "scripts", project / "tools",
                                              Path("/abs")]
    from_env = load_settings(project / "config",
                             environ={"PITSTOP_ALLOWED_ROOTS": "/opt/ci:rel"})
    assert from_env.scripts.allowed_roots == [Path("/opt/ci"), Path("rel")]


# --- cross-key checks name the key at fault, and its line -----------------------------------------


def shipped_config(tmp_path: Path, old: str, new: str) -> Path:
    """A project whose config/pitstop.yaml is the shipped one with ``old`` replaced by ``new``;
    returns the project directory."""
    from tests.support import ROOT

    text = (ROOT / "config" / SETTINGS_FILE).read_text()
    assert old in text
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / SETTINGS_FILE).write_text(text.replace(old, new))
    return tmp_path


def test_the_visibility_timeout_check_points_at_its_key_in_the_shipped_config(
        tmp_path: Path) -> None:
    project = shipped_config(tmp_path, "visibility_timeout: 7200", "visibility_timeout: 100")
    text = (project / "config" / SETTINGS_FILE).read_text()
    expected_line = 1 + text.splitlines().index(
        next(line for line in text.splitlines() if "visibility_timeout: 100" in line))
    with pytest.raises(ConfigError) as caught:
        load_settings(project / "config", environ={})
    assert caught.value.key_path == "celery.visibility_timeout"
    assert caught.value.line == expected_line
    assert str(caught.value).startswith(f"{project / 'config' / SETTINGS_FILE}:{expected_line} "
                                        "at celery.visibility_timeout: 100s must be longer")


def test_a_visibility_timeout_from_the_environment_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={"PITSTOP_VISIBILITY_TIMEOUT": "100"})
    assert caught.value.file == "environment PITSTOP_VISIBILITY_TIMEOUT"
    assert caught.value.key_path == "celery.visibility_timeout"


def test_the_readme_sample_config_error_is_the_real_one(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support import ROOT

    readme = (ROOT / "README.md").read_text()
    sample = re.search(r"^pitstop: error: config/pitstop\.yaml:.*$", readme, re.MULTILINE)
    assert sample is not None
    project = shipped_config(tmp_path, "default_timeout: 300", "default_timeout: soon")
    monkeypatch.chdir(project)
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={})
    assert f"pitstop: error: {caught.value}" == sample.group(0)


@pytest.mark.parametrize(("variable", "value", "key_path"), [
    ("PITSTOP_DEFAULT_QUEUE", "linux pwsh", "scripts.default_queue"),
    ("PITSTOP_DEFAULT_QUEUE", "linux,pwsh", "scripts.default_queue"),
    ("PITSTOP_ALLOWED_ROOTS", os.pathsep, "scripts.allowed_roots"),
])
def test_bad_values_from_the_environment_are_named(tmp_path: Path, variable: str, value: str,
                                                   key_path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ={variable: value})
    assert caught.value.file == f"environment {variable}"
    assert caught.value.key_path == key_path
    assert caught.value.exit_code == 2


# --- the project directory: found like git finds .git ---------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """proj/ (config/pitstop.yaml, scripts/deep/), other/ (.state/, sub/), plain/sub/."""
    (tmp_path / "proj" / "config").mkdir(parents=True)
    (tmp_path / "proj" / "config" / SETTINGS_FILE).write_text("log_level: info\n")
    (tmp_path / "proj" / "scripts" / "deep").mkdir(parents=True)
    (tmp_path / "other" / ".state").mkdir(parents=True)
    (tmp_path / "other" / "sub").mkdir()
    (tmp_path / "plain" / "sub").mkdir(parents=True)
    (tmp_path / "plain" / "config").mkdir()  # a config/ without pitstop.yaml marks nothing
    return tmp_path


@pytest.mark.parametrize(("cwd", "project"), [
    ("proj", "proj"),
    ("proj/scripts/deep", "proj"),
    ("proj/config", "proj"),
    ("other/sub", "other"),
    ("plain/sub", "plain/sub"),  # nothing above: the working directory itself
])
def test_the_project_is_the_nearest_directory_up_with_config_or_state(
        tree: Path, cwd: str, project: str) -> None:
    assert find_project_dir({}, cwd=tree / cwd) == tree / project


def test_the_nearest_marker_wins(tree: Path) -> None:
    (tree / "proj" / "scripts" / ".state").mkdir()
    assert find_project_dir({}, cwd=tree / "proj" / "scripts" / "deep") == tree / "proj" / "scripts"


def test_pitstop_home_wins_and_must_exist(tree: Path) -> None:
    assert find_project_dir({"PITSTOP_HOME": str(tree / "other")},
                            cwd=tree / "proj" / "scripts") == tree / "other"
    assert find_project_dir({"PITSTOP_HOME": "../other"}, cwd=tree / "proj") == tree / "other"
    with pytest.raises(ConfigError) as caught:
        find_project_dir({"PITSTOP_HOME": str(tree / "missing")}, cwd=tree)
    assert caught.value.file == "environment PITSTOP_HOME"
    assert caught.value.exit_code == 2


def test_settings_from_a_subdirectory_are_the_project_settings(tree: Path) -> None:
    project = tree / "proj"
    (project / "config" / SETTINGS_FILE).write_text(
        "state_dir: .state\nredis:\n  embedded_dir: var/redis\nlog_level: debug\n")
    settings = load_settings(environ={}, cwd=project / "scripts" / "deep")
    assert settings.log_level == "debug"  # the project's file was read
    assert settings.project_dir == project
    assert settings.config_dir == project / "config"
    assert settings.state_dir == project / ".state"
    assert settings.redis_dir == project / "var" / "redis"
    assert settings.scripts.allowed_roots == [project / "scripts"]
    nothing_set = load_settings(environ={}, cwd=tree / "other" / "sub")
    assert nothing_set.state_dir == tree / "other" / ".state"
    assert nothing_set.redis_dir == tree / "other" / ".state" / "redis"
    assert nothing_set.config_dir == tree / "other" / "config"


def test_explicit_directories_still_win(tree: Path) -> None:
    project = tree / "proj"
    environ = {"PITSTOP_CONFIG_DIR": str(tree / "plain" / "config"),
               "PITSTOP_STATE_DIR": str(tree / "elsewhere")}
    settings = load_settings(environ=environ, cwd=project / "scripts")
    assert settings.project_dir == project
    assert settings.config_dir == tree / "plain" / "config"
    assert settings.state_dir == tree / "elsewhere"
    assert load_settings(tree / "other" / "config", environ={},
                         cwd=project).config_dir == tree / "other" / "config"


def test_a_mistyped_config_dir_is_an_error_not_the_defaults(tree: Path) -> None:
    environ = {"PITSTOP_CONFIG_DIR": str(tree / "proj" / "cofnig")}
    with pytest.raises(ConfigError, match="cofnig is not a directory") as caught:
        load_settings(environ=environ, cwd=tree / "proj")
    assert caught.value.file == "environment PITSTOP_CONFIG_DIR"
    assert caught.value.exit_code == 2


# --- the secret key file is for the embedded Redis only -------------------------------------------


def test_a_kept_key_file_is_ignored_with_an_external_redis(tmp_path: Path) -> None:
    state = tmp_path / "state"
    kept = key_file_sealer(state, create=True)  # left from earlier embedded use
    assert kept is not None
    external = load_settings(tmp_path, environ={"PITSTOP_REDIS_URL": "redis://:pw@ci-redis:6379/0",
                                                "PITSTOP_STATE_DIR": str(state)})
    assert not external.uses_embedded_redis()
    assert external.sealer() is None  # so `pitstop run` refuses secret values


def test_the_key_file_serves_the_embedded_redis_with_or_without_its_url(tmp_path: Path) -> None:
    state = tmp_path / "state"
    embedded = load_settings(tmp_path, environ={"PITSTOP_STATE_DIR": str(state)})
    sealer = embedded.sealer()
    assert sealer is not None
    assert (state / KEY_FILE).exists()
    # `pitstop up` hands its worker and Beat the embedded server's URL: still the embedded Redis.
    info = ServerInfo(pid=1, port=6399, password="p4ss")
    (state / "redis").mkdir()
    (state / "redis" / SERVER_INFO_FILE).write_text(
        json.dumps({"pid": info.pid, "port": info.port, "password": info.password}))
    child = load_settings(tmp_path, environ={"PITSTOP_STATE_DIR": str(state),
                                             "PITSTOP_REDIS_URL": info.url})
    assert child.uses_embedded_redis()
    child_sealer = child.sealer()
    assert child_sealer is not None
    assert child_sealer.unseal(sealer.seal({"TOKEN": "t"})) == {"TOKEN": "t"}
    lookalike = ServerInfo(pid=1, port=6399, password="other")
    stranger = load_settings(tmp_path, environ={"PITSTOP_STATE_DIR": str(state),
                                                "PITSTOP_REDIS_URL": lookalike.url})
    assert stranger.sealer() is None
