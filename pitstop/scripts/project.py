"""Where a plain :class:`~pitstop.scripts.cliwrapper.CLIWrapper` records, inside a project.

The seed's API, ``CLIWrapper(timeout=300).wrap("scripts/my_script.py", args=["--flag"])``, is
given no state log and no bus. Used inside a pitstop project (found the way git finds ``.git``:
``PITSTOP_HOME``, else the nearest directory up holding ``config/pitstop.yaml`` or ``.state/``),
it still appends to ``.state/cli_executions.jsonl`` and, when the project's Redis is up,
publishes the ``tool.*`` events. It never starts the embedded Redis: a wrapper call is no reason
to leave a server running. Outside a project it records nothing.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import redis

from pitstop.bus.eventbus import EventBus
from pitstop.connection.connect import client_for_url, resolve_redis_url
from pitstop.kernel.constants import LOG_CLI_EXECUTIONS
from pitstop.kernel.errors import PitstopError
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.settings import (
    CONFIG_DIR_NAME,
    HOME_ENV,
    SETTINGS_FILE,
    STATE_DIR_NAME,
    Settings,
    find_project_dir,
    load_settings,
)
from pitstop.kernel.statelog import StateLog

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 1.0
"""Seconds to wait for the project's Redis before recording without events."""


@dataclass
class ProjectRecording:
    """The state log of a project and, while its Redis answers, a bus on it."""

    settings: Settings
    redactor: Redactor
    state_log: StateLog
    bus: EventBus | None = None

    def connect_bus(self) -> EventBus | None:
        """The bus, connecting first if there is none yet (None while Redis is not up)."""
        if self.bus is None:
            self.bus = _reachable_bus(self.settings)
        return self.bus


def in_project(environ: Mapping[str, str], cwd: Path | None = None) -> bool:
    """Whether ``cwd`` (default: the working directory) lies in a pitstop project."""
    if environ.get(HOME_ENV) or environ.get("PITSTOP_STATE_DIR") or environ.get(
            "PITSTOP_CONFIG_DIR"):
        return True
    project = find_project_dir(environ, cwd=cwd)
    return ((project / CONFIG_DIR_NAME / SETTINGS_FILE).is_file()
            or (project / STATE_DIR_NAME).is_dir())


def project_recording(redactor: Redactor | None, *, environ: Mapping[str, str] | None = None,
                      cwd: Path | None = None) -> ProjectRecording | None:
    """How a wrapper built without a state log or bus records here; None outside a project
    or when its config cannot be read (said once in the log: the script still runs).

    ``redactor`` None: one knowing this process's secrets and the project's ``secret_names``.
    """
    env = os.environ if environ is None else environ
    try:
        if not in_project(env, cwd):
            return None
        settings = load_settings(environ=env, cwd=cwd)
    except PitstopError as exc:
        log.warning("not recording this script's execution in the project: %s", exc)
        return None
    if redactor is None:
        redactor = Redactor.from_environ(env, extra_names=settings.secret_names)
    state_log = StateLog(LOG_CLI_EXECUTIONS, settings.state_dir, redactor=redactor)
    return ProjectRecording(settings, redactor, state_log)


def _reachable_bus(settings: Settings) -> EventBus | None:
    """A bus on the project's Redis if it answers now; never starts the embedded one."""
    try:
        url = resolve_redis_url(settings, start_embedded=False)
        client = client_for_url(url, socket_connect_timeout=CONNECT_TIMEOUT, socket_timeout=5)
        client.ping()
    except (PitstopError, redis.RedisError, OSError) as exc:
        log.info("the project's Redis is not reachable (%s): no tool.* events", exc)
        return None
    return EventBus(client, maxlen=settings.bus.stream_maxlen,
                    max_data_bytes=settings.bus.max_data_bytes, max_hops=settings.bus.max_hops,
                    source=f"cliwrapper@{socket.gethostname()}")
