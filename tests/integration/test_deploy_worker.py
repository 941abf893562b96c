"""The ``deploy`` task on a real worker (``pitstop deploy ENV --queue Q``) and the ``deploy``
workstream step kind."""

from __future__ import annotations

import json
from pathlib import Path

import pydantic
import pytest
import redis

from pitstop.bus.eventbus import EventBus
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.settings import load_settings
from pitstop.workstreams.steps import StepContext, get_step_kind
from tests.support import Proc, run_cli, write_script

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def write_config(home: Path, state: Path) -> None:
    write_script(home, "wdeploy.sh", """\
        #!/bin/sh
        echo "$1 $PITSTOP_RUN_ID" > "$STATE"
        """)
    write_script(home, "wcheck.sh", """\
        #!/bin/sh
        case "$(cat "$STATE")" in bad*) exit 1;; esac
        """)
    (home / "config" / "deployments.yaml").write_text(f"""
environments:
  worker-test:
    deploy: {{script: wdeploy.sh, args: ["{{version}}"], env: {{STATE: "{state}"}}}}
    rollback: {{script: wdeploy.sh, args: ["{{version}}"], env: {{STATE: "{state}"}}}}
    smoke: [{{name: check, script: wcheck.sh, env: {{STATE: "{state}"}}}}]
""")


def test_deploy_on_a_worker_through_its_queue(session_worker: Proc, pitstop_env: dict[str, str],
                                              pitstop_home: Path, tmp_path: Path) -> None:
    state = tmp_path / "deployed"
    write_config(pitstop_home, state)
    done = run_cli(["deploy", "worker-test", "--version", "w1", "--queue", "default", "--json"],
                   pitstop_env)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == "succeeded"
    assert "sent to queue default" in done.stderr
    assert "ok   smoke" in done.stderr  # steps followed live
    assert state.read_text().split()[0] == "w1"
    bad = run_cli(["deploy", "worker-test", "--version", "bad1", "--queue", "default", "--json"],
                  pitstop_env)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["status"] == "rolled_back"
    assert state.read_text().split()[0] == "w1"


def test_the_deploy_step_kind_succeeds_only_when_the_deployment_does(
        redis_client: redis.Redis, tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "config").mkdir(parents=True)
    (home / "scripts").mkdir()
    write_config(home, tmp_path / "deployed")
    settings = load_settings(home / "config", environ={"PITSTOP_STATE_DIR": str(home / ".state")})
    kind = get_step_kind("deploy")
    assert kind.name == "deploy"
    with pytest.raises(pydantic.ValidationError):
        kind.params_model.model_validate({"environment": "Bad.Env", "version": "1"})

    def context(version: str) -> StepContext:
        params = kind.params_model.model_validate({"environment": "worker-test",
                                                   "version": version})
        return StepContext(run_id="run-1", workstream_id="WS-SHIP", step_id="ship", attempt=1,
                           params=params, event=None, trace_id="trace-1", hops=0, timeout=60.0,
                           settings=settings, redis=redis_client, bus=EventBus(redis_client),
                           redactor=Redactor())

    good = kind.execute(context("s1"))
    assert good.status == "succeeded", good.message
    assert good.outputs["status"] == "succeeded" and good.outputs["deployment_id"]
    bad = kind.execute(context("bad2"))
    assert bad.status == "failed"
    assert bad.outputs["status"] == "rolled_back" and bad.outputs["rolled_back_to"] == "s1"
    assert "rolled_back" in bad.message
    unknown = kind.execute(context("s2").__class__(**{**context("s2").__dict__, "params":
                           kind.params_model.model_validate({"environment": "nowhere",
                                                             "version": "1"})}))
    assert unknown.status == "failed" and "no environment 'nowhere'" in unknown.message
