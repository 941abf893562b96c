from __future__ import annotations

from pathlib import Path

import pytest

from pitstop.errors import ConfigError
from pitstop.settings import load_settings


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
        ("celery:\n  visibility_timeout: 120\n", None, None, "visibility_timeout"),
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
    from pitstop.cliwrapper import CLIWrapper
    from pitstop.errors import PathNotAllowed

    settings = load_settings(Path("config"), environ={})
    wrapper = CLIWrapper(allowed_roots=settings.scripts.allowed_roots)
    assert wrapper.resolve_script("scripts/hello.sh") == (project / "scripts" / "hello.sh"
                                                          ).resolve()
    with pytest.raises(PathNotAllowed):
        wrapper.resolve_script(".venv/bin/pip")
    # Configured roots are kept as given: relative ones resolve against the working directory.
    write(project / "config", "scripts:\n  allowed_roots: [scripts, tools]\n")
    settings = load_settings(project / "config", environ={})
    assert settings.scripts.allowed_roots == [Path("scripts"), Path("tools")]
    from_env = load_settings(project / "config",
                             environ={"PITSTOP_ALLOWED_ROOTS": "/opt/ci:rel"})
    assert from_env.scripts.allowed_roots == [Path("/opt/ci"), Path("rel")]
