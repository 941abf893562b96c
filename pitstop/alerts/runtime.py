"""Alerting wired from settings, for the worker shell and the CLI: the config (re-read when
``alerts.yaml`` changes), the redactor that knows its secrets, the store, the logs, the
manager and the deliverer."""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import redis

from pitstop.alerts.ack import AckLinks, signing_key
from pitstop.alerts.config import AlertsConfig, alerts_config_path, load_alerts_config
from pitstop.alerts.delivery import Deliverer
from pitstop.alerts.ledger import DeliveryLedger
from pitstop.alerts.manager import AlertManager
from pitstop.alerts.store import AlertStore
from pitstop.bus.eventbus import EventBus
from pitstop.kernel.constants import LOG_ALERT_ACTIVITY, LOG_ALERTS
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.settings import Settings
from pitstop.kernel.statelog import StateLog

__all__ = ["AlertsRuntime", "ManagerThread"]

log = logging.getLogger(__name__)

RELOAD_CHECK_EVERY = 2.0


def redis_seconds(client: redis.Redis) -> Callable[[], float]:
    """Epoch seconds on the Redis server's clock: one clock for every host."""

    def now() -> float:
        seconds, micros = client.time()
        return seconds + micros / 1_000_000

    return now


class AlertsRuntime:
    def __init__(self, settings: Settings, client: redis.Redis, bus: EventBus,
                 redactor: Redactor, *, clock: Callable[[], float] | None = None) -> None:
        self.settings = settings
        self.client = client
        self.bus = bus
        self.redactor = redactor
        self.clock = clock or redis_seconds(client)
        self.path: Path = alerts_config_path(settings.config_dir)
        self._stamp: tuple[int, int] | None = None
        self._config: AlertsConfig | None = None
        self._lock = threading.Lock()
        self.store = AlertStore(client, DeliveryLedger(client))

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def config(self) -> AlertsConfig | None:
        """The config in force: re-read when the file changed; a bad edit keeps the old one
        (logged). None without ``alerts.yaml`` (alerting is off)."""
        with self._lock:
            stamp = self._file_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                try:
                    self._config = load_alerts_config(self.settings.config_dir)
                except Exception as exc:
                    log.error("alerts: %s (keeping the previous config)", exc)
                if self._config is not None:
                    for secret in self._config.secrets:
                        self.redactor.add_secret(secret)
            return self._config

    def state_log(self, name: str) -> StateLog:
        return StateLog(name, self.settings.state_dir, redactor=self.redactor)

    def ack_links(self, config: AlertsConfig) -> AckLinks:
        return AckLinks(signing_key(self.client), config.file.ack.base_url,
                        config.file.ack.link_ttl)

    def deliverer(self) -> Deliverer | None:
        config = self.config()
        if config is None:
            return None
        return Deliverer(config, self.store, clock=self.clock, redactor=self.redactor,
                         bus=self.bus, activity=self.state_log(LOG_ALERT_ACTIVITY))

    def manager(self, enqueue: Callable[[str], None]) -> AlertManager | None:
        config = self.config()
        if config is None or not config.file.enabled:
            return None
        return AlertManager(config, self.bus, self.store, enqueue=enqueue, clock=self.clock,
                            alert_log=self.state_log(LOG_ALERTS),
                            activity_log=self.state_log(LOG_ALERT_ACTIVITY),
                            name=f"alerts@{socket.gethostname()}",
                            ack_links=self.ack_links(config))


class ManagerThread:
    """Runs an :class:`AlertManager` on a daemon thread, re-reading ``alerts.yaml`` as it
    changes (a bad edit is logged and the previous config kept)."""

    def __init__(self, runtime: AlertsRuntime, enqueue: Callable[[str], None]) -> None:
        self.runtime = runtime
        self.enqueue = enqueue
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pitstop-alert-manager",
                                       daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout)

    def _run(self) -> None:
        manager = self.runtime.manager(self.enqueue)
        if manager is None:
            log.info("alerts: no %s (or enabled: false): the alert manager waits for one",
                     self.runtime.path)
        while manager is None:
            if self.stop_event.wait(RELOAD_CHECK_EVERY):
                return
            try:
                manager = self.runtime.manager(self.enqueue)
            except Exception:
                log.exception("alerts: could not start the alert manager")
        log.info("alerts: alert manager started (pid %d)", os.getpid())
        config = manager.config
        watcher = threading.Thread(target=self._watch, args=(manager, config), daemon=True,
                                   name="pitstop-alerts-config")
        watcher.start()
        manager.run(self.stop_event)

    def _watch(self, manager: AlertManager, config: AlertsConfig) -> None:
        while not self.stop_event.wait(RELOAD_CHECK_EVERY):
            latest = self.runtime.config()
            if latest is not None and latest is not config:
                config = latest
                manager.reconfigure(latest)
                log.info("alerts: %s reloaded", self.runtime.path)
