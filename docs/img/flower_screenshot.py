"""Make docs/img/flower.png: Flower (as ``pitstop flower`` runs it) listing pitstop tasks.

    python docs/img/flower_screenshot.py

Starts a private redis-server, a worker with task events on and Flower, runs a few pitstop
tasks (scripts through ``pitstop run``, the smoke test's canaries, a deployment on the worker),
then has headless Chromium (Debian's ``chromium`` package) take the tasks page. Needs
``chromium`` on PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from pitstop.connection.server import RedisServer, free_port  # noqa: E402
from pitstop.kernel.sealing import generate_key  # noqa: E402

LOGIN = "admin:screenshot-pw"


def pitstop(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pitstop", *args], env=env, text=True,
                          capture_output=True, timeout=120, check=False)


def main() -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("needs chromium (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory(prefix="pitstop-shot-") as tmp:
        home = Path(tmp)
        for name in ("config", "scripts"):
            (home / name).mkdir()
        (home / "scripts" / "build.py").write_text(
            "import sys, time\ntime.sleep(0.3)\nprint('built', sys.argv[1:])\n")
        (home / "scripts" / "flaky_test.py").write_text("import sys\nsys.exit(1)\n")
        (home / "scripts" / "ship.sh").write_text("#!/bin/sh\necho shipped \"$1\"\n")
        (home / "scripts" / "ship.sh").chmod(0o755)
        (home / "config" / "deployments.yaml").write_text(
            "environments:\n  staging:\n    deploy: {script: ship.sh, args: ['{version}']}\n")
        server = RedisServer(home / "redis", appendonly=False)
        info = server.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("PITSTOP_")}
        env.update({"PITSTOP_HOME": str(home), "PITSTOP_REDIS_URL": info.url,
                    "PITSTOP_SECRET_KEY": generate_key(), "PITSTOP_TASK_EVENTS": "1",
                    "PITSTOP_FLOWER_BASIC_AUTH": LOGIN, "PYTHONPATH": str(ROOT)})
        port = free_port()
        logs = (home / "worker.log").open("wb")
        worker = subprocess.Popen([sys.executable, "-m", "pitstop", "worker", "-Q",
                                   "default,linux", "-c", "2", "-n", "buildbox-1@%h"], env=env,
                                  stdout=logs, stderr=subprocess.STDOUT, start_new_session=True)
        flower = subprocess.Popen([sys.executable, "-m", "pitstop", "flower", "--port", str(port)],
                                  env=env, stdout=logs, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while "ready." not in (home / "worker.log").read_text(errors="replace"):
                if time.monotonic() > deadline:
                    raise SystemExit((home / "worker.log").read_text()[-3000:])
                time.sleep(0.2)
            for release in ("1.4.1", "1.4.2"):
                pitstop("run", "build.py", "--wait", "-e", "DEPLOY_TOKEN=s3cr3t", "-e",
                        f"VERSION={release}", "--", "--release", "--token", "s3cr3t", env=env)
            pitstop("run", "flaky_test.py", "--wait", env=env)
            pitstop("smoke", "--timeout", "1", env=env)
            pitstop("deploy", "staging", "--version", "1.4.2", "--queue", "default", env=env)
            time.sleep(2)  # let Flower take in the last events
            user, password = LOGIN.split(":")
            listed = httpx.get(f"http://127.0.0.1:{port}/api/tasks", auth=(user, password),
                               timeout=10)
            if listed.status_code != 200 or len(listed.json()) < 5:
                raise SystemExit(f"Flower lists too little: {listed.status_code} {listed.text}")
            target = ROOT / "docs" / "img" / "flower.png"
            subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                            "--hide-scrollbars", f"--screenshot={target}",
                            "--window-size=1400,720", "--virtual-time-budget=5000",
                            f"http://{LOGIN}@127.0.0.1:{port}/tasks"], check=True,
                           capture_output=True, timeout=120)
            print(f"wrote {target}")
        finally:
            for proc in (flower, worker):
                proc.terminate()
                proc.wait(30)
            server.stop()


if __name__ == "__main__":
    main()
