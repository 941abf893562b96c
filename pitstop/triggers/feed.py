"""What Beat needs of the triggers: the schedules in force, refreshed as the config changes.

Beat wakes the ``fire_schedules`` task at each slot of these schedules (through
:class:`~pitstop.triggers.schedules.ScheduleTicker`); the task decides, fenced in Redis, which
slots fire. Redis unreachable: the schedules last seen stay.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pitstop.kernel.errors import PitstopError
from pitstop.triggers.schedules import ScheduleSpec
from pitstop.triggers.source import ConfigSource
from pitstop.triggers.state import TriggerState

if TYPE_CHECKING:
    import redis

__all__ = ["ScheduleFeed"]

log = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0


class ScheduleFeed:
    """Callable returning the schedule specs of the config in force (at most
    :data:`REFRESH_SECONDS` old)."""

    def __init__(self, config_dir: Path, connect: Callable[[], redis.Redis], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config_dir = config_dir
        self._connect = connect
        self._clock = clock
        self._source: ConfigSource | None = None
        self._specs: list[ScheduleSpec] = []
        self._version: str | None = None
        self._checked = -REFRESH_SECONDS

    def __call__(self) -> list[ScheduleSpec]:
        now = self._clock()
        if now - self._checked >= REFRESH_SECONDS:
            self._checked = now
            try:
                self._refresh()
            except PitstopError as exc:
                log.warning("beat: trigger schedules not refreshed: %s", exc)
        return self._specs

    def _refresh(self) -> None:
        if self._source is None:
            self._source = ConfigSource(self.config_dir, TriggerState(self._connect()))
        version = self._source.state.active_version()
        if version is not None and version == self._version:
            return
        loaded = self._source.active() if version is not None else None
        if loaded is None and self._source.triggers_path.is_file():
            loaded = self._source.load_files()  # nothing in force yet: the files say
        if loaded is None:
            return
        self._version = loaded.config.version
        self._specs = [rule.schedule.spec for rule in loaded.config.schedule_rules()
                       if rule.schedule is not None]
