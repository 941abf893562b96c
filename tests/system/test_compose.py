"""docker-compose.yml's Redis, run without Docker: the service's command and healthcheck as
Compose would interpolate them, under a stand-in for the image's docker-entrypoint.sh."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from pitstop.connection.server import find_redis_server, free_port
from tests.support import ROOT, wait_for

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]

CANARY = "compose-canary-pw-7f3a9c"
_VARIABLE = re.compile(r"\$\{(?P<braced>[A-Za-z_]\w*)(?::?[?-][^}]*)?\}|\$(?P<bare>[A-Za-z_]\w*)")

# The image's entrypoint execs "$@"; for redis-server we add where to listen and keep data.
# Every command line it runs is logged: none may carry the password.
ENTRYPOINT = """#!/bin/sh
printf '%s\\n' "$*" >> "$ARGV_LOG"
if [ "$1" = redis-server ]; then
    exec "$@" --port "$TEST_PORT" --bind 127.0.0.1 --dir "$TEST_DIR"
fi
exec "$@"
"""
REDIS_CLI = """#!/bin/sh
printf '%s\\n' "redis-cli $*" >> "$ARGV_LOG"
exec "$REAL_REDIS_CLI" -p "$TEST_PORT" "$@"
"""


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's variable interpolation: ${NAME}, ${NAME:?err}, ${NAME:-default}, $NAME, $$."""
    if isinstance(value, str):
        parts = value.split("$$")
        substituted = [_VARIABLE.sub(
            lambda m: env.get(m.group("braced") or m.group("bare"), ""), part) for part in parts]
        return "$".join(substituted)
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    return value


@pytest.fixture
def redis_service() -> dict[str, Any]:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    service: dict[str, Any] = interpolate(compose["services"]["redis"],
                                          {"REDIS_PASSWORD": CANARY})
    return service


@pytest.fixture
def fake_image(tmp_path: Path) -> Iterator[dict[str, str]]:
    server = Path(find_redis_server())
    cli = server.with_name("redis-cli")
    if not cli.is_file():
        cli = Path(shutil.which("redis-cli") or "/nonexistent")
    if not cli.is_file():
        pytest.skip("no redis-cli next to redis-server or on PATH")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "redis-server").symlink_to(server)
    for name, text in (("docker-entrypoint.sh", ENTRYPOINT), ("redis-cli", REDIS_CLI)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (tmp_path / "data").mkdir()
    yield {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin",
           "ARGV_LOG": str(tmp_path / "argv.log"), "TEST_PORT": str(free_port()),
           "TEST_DIR": str(tmp_path / "data"), "REAL_REDIS_CLI": str(cli)}


def _healthy(test: list[str], env: dict[str, str]) -> bool:
    argv = ["/bin/sh", "-c", test[1]] if test[0] == "CMD-SHELL" else test[1:]
    return subprocess.run(argv, env=env, capture_output=True, timeout=10,
                          check=False).returncode == 0


def test_the_redis_password_is_never_on_a_command_line(
        redis_service: dict[str, Any], fake_image: dict[str, str], tmp_path: Path) -> None:
    command, healthcheck = redis_service["command"], redis_service["healthcheck"]["test"]
    # What `docker inspect`, `docker compose config` and `ps` on the host would show.
    assert CANARY not in json.dumps(command)
    assert CANARY not in json.dumps(healthcheck)

    env = {**fake_image, **redis_service.get("environment", {})}
    server = subprocess.Popen([str(tmp_path / "bin" / "docker-entrypoint.sh"), *command],
                              env=env, cwd=tmp_path / "data", start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _healthy(healthcheck, env) or server.poll() is not None, 20,
                 interval=0.1, message="the healthcheck to pass")
        assert server.poll() is None, "redis-server exited"
        port = int(fake_image["TEST_PORT"])
        with redis.Redis(port=port) as anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        with redis.Redis(port=port, password=CANARY) as client:
            assert client.ping()
        # Unhealthy with the wrong password: the healthcheck really authenticates.
        assert not _healthy(healthcheck, {**env, "REDISCLI_AUTH": "wrong"})
    finally:
        with suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        server.wait(20)
    logged = Path(fake_image["ARGV_LOG"]).read_text()
    assert "redis-server" in logged
    assert CANARY not in logged


def test_compose_runs_flower_through_pitstop_so_its_login_is_checked() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    flower = compose["services"]["flower"]
    assert "entrypoint" not in flower  # the image's: pitstop
    assert flower["command"][0] == "flower"
    assert "PITSTOP_FLOWER_BASIC_AUTH" in flower["environment"]
    assert "FLOWER_BASIC_AUTH" not in flower["environment"]  # would bypass pitstop's check
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])
