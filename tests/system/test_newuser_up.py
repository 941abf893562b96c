"""Found trying pitstop as a new user: a second ``pitstop up`` in the same project ran, and when
it stopped it stopped the embedded Redis the first one keeps (its workers lost Redis until the
first ``up`` restarted it). Now the second is refused, saying which ``up`` runs and how to add a
worker to it."""

from __future__ import annotations

import pytest

from tests.support import run_cli
from tests.system.test_supervision import env, home, start_up, stop_up  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]


def test_a_second_up_in_the_project_is_refused_and_leaves_the_first_ones_redis_alone(
        home, env) -> None:  # noqa: F811
    up = start_up(home, env, "-c", "1")
    try:
        second = run_cli(["up", "-c", "1"], env, cwd=home, timeout=60)
        assert second.returncode == 1, second.stdout + second.stderr
        assert f"pitstop up already runs for this project (pid {up.pid}" in second.stderr
        assert "pitstop worker" in second.stderr
        assert "Traceback" not in second.stderr
        assert "died; restarting it" not in up.output()  # the first one's Redis untouched
        done = run_cli(["run", "scripts/hello.py", "--wait", "--timeout", "60"], env, cwd=home,
                       timeout=120)
        assert done.returncode == 0, done.stderr
    finally:
        code = stop_up(up)
    assert code == 0, up.output()[-3000:]
    again = start_up(home, env, "-c", "1")  # the lock went with the first up
    assert stop_up(again) == 0
