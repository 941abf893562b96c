"""Building a :class:`Deployer` from the settings (the CLI, the task and the step use this)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime

import httpx
import redis

from pitstop.bus.eventbus import EventBus
from pitstop.deploy.checks import HttpProbe, ScriptStep, SmokeSuite
from pitstop.deploy.config import load_deployments
from pitstop.deploy.service import Deployer
from pitstop.deploy.store import DeployStore
from pitstop.kernel.constants import LOG_CLI_EXECUTIONS, LOG_DEPLOYMENTS
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.settings import Settings
from pitstop.kernel.statelog import StateLog
from pitstop.scripts.cliwrapper import CLIWrapper

__all__ = ["configured_deployer"]


def configured_deployer(settings: Settings, client: redis.Redis, bus: EventBus,
                        redactor: Redactor, *, say: Callable[[str], None] | None = None,
                        output: Callable[[str, str], None] | None = None,
                        http: httpx.Client | None = None,
                        clock: Callable[[], datetime] | None = None,
                        sleep: Callable[[float], None] = time.sleep) -> Deployer:
    """A deployer for ``config/deployments.yaml``: scripts through the supervisor (inside
    ``scripts.allowed_roots``, recorded in ``cli_executions`` and as ``tool.*`` events), HTTP
    checks through ``http`` (default: a fresh client that verifies TLS)."""
    config = load_deployments(settings.config_dir)
    scripts_settings = settings.scripts
    cli_log = StateLog(LOG_CLI_EXECUTIONS, settings.state_dir, redactor=redactor)

    def wrapper_for(timeout: float) -> CLIWrapper:
        return CLIWrapper(timeout=timeout, allowed_roots=scripts_settings.allowed_roots,
                          env_allowlist=scripts_settings.env_allowlist,
                          output_cap_bytes=scripts_settings.output_cap_bytes,
                          redactor=redactor, bus=bus, state_log=cli_log, output_sink=output,
                          project=False)

    steps = ScriptStep(wrapper_for, redactor=redactor, sleep=sleep)
    probe = HttpProbe(http or httpx.Client(), redactor=redactor, sleep=sleep)
    return Deployer(config, DeployStore(client), bus, scripts=steps,
                    smoke=SmokeSuite(steps, probe), redactor=redactor,
                    state_log=StateLog(LOG_DEPLOYMENTS, settings.state_dir, redactor=redactor),
                    clock=clock, sleep=sleep, say=say)
