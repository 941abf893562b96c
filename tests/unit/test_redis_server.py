"""The embedded server's module where ``fcntl`` does not exist (Windows)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.timeout(60)

# Pretend to be Windows once the third-party modules are loaded (their import-time platform
# checks would look for Windows-only modules that are not here), then import pitstop.
AS_WINDOWS = """
import sys, sysconfig, tempfile, pathlib, zoneinfo
import click, redis, pydantic, pydantic.main, yaml, rich, cryptography.fernet, httpx, starlette
sysconfig.get_config_vars()
sys.platform = "win32"
sys.modules["fcntl"] = None  # import fcntl -> ImportError, as on Windows
import pitstop.cli
from pitstop.kernel.errors import RedisUnavailable
from pitstop.connection.server import RedisServer
try:
    RedisServer(pathlib.Path(tempfile.mkdtemp())).start()
except RedisUnavailable as exc:
    print("refused:", exc)
"""


def test_pitstop_imports_without_fcntl_and_refuses_the_embedded_server_clearly(
        tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", AS_WINDOWS], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False, env={"PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused: the embedded Redis is not supported on Windows" in done.stdout
    assert "PITSTOP_REDIS_URL" in done.stdout
