"""The router loop: the bus's consumer group ``router`` in, launches out.

It runs on a thread inside every worker (no extra daemon); any number of workers share the group,
each event going to one of them. Each turn it fires the debounced bursts that came due, then
blocks on XREADGROUP for at most the time until the next one (and at most
:data:`ROUTER_BLOCK_MS`), so a new event is routed the moment it arrives. Once a second it looks
for a new config in Redis (``pitstop triggers reload`` on any machine) and, with ``watch_files``,
for an edit of this machine's config files, which it validates and makes the fleet's config (an
invalid edit is refused and logged; the config in force stays).

Events are acknowledged only after every rule's decision is made (and launched): a router killed
mid-batch leaves its events pending, another router reclaims them after ``claim_idle_ms``, and the
launch keys make sure nothing launches twice.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis

from pitstop.bus.consumer import GroupConsumer
from pitstop.bus.events import Event
from pitstop.kernel.constants import ROUTER_BATCH, ROUTER_BLOCK_MS
from pitstop.kernel.errors import ConfigError, PitstopError, RedisUnavailable
from pitstop.triggers.engine import TriggerEngine
from pitstop.triggers.source import ConfigSource, LoadedConfig

__all__ = ["Router"]

log = logging.getLogger(__name__)

CHECK_CONFIG_SECONDS = 1.0
MAX_BACKOFF = 10.0


class Router:
    def __init__(self, engine: TriggerEngine, consumer: GroupConsumer, *,
                 source: ConfigSource | None = None,
                 on_loaded: Callable[[LoadedConfig], None] | None = None,
                 watch_files: bool = True, block_ms: int = ROUTER_BLOCK_MS,
                 batch: int = ROUTER_BATCH) -> None:
        self.engine = engine
        self.consumer = consumer
        self.source = source
        self.on_loaded = on_loaded
        self.watch_files = watch_files
        self.block_ms = block_ms
        self.batch = batch
        self.stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_check = 0.0
        self._started = False
        self._refused: str | None = None

    # --- lifecycle ------------------------------------------------------------------------------
    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name="pitstop-router", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 5.0) -> None:
        self.stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._leave_group()

    def _leave_group(self) -> None:
        """Drop this consumer from the group when it holds nothing pending (names include the
        worker's pid: without this the group would keep one dead consumer per restart)."""
        consumer = self.consumer
        client = consumer.bus.client
        try:
            pending = client.xpending_range(consumer.bus.stream, consumer.group, "-", "+", 1,
                                            consumername=consumer.name)
            if not pending:
                client.xgroup_delconsumer(consumer.bus.stream, consumer.group, consumer.name)
        except redis.RedisError as exc:
            log.debug("router: could not leave the group: %s", exc)

    def run(self) -> None:
        """Route until :meth:`stop`; Redis outages are waited out with backoff."""
        backoff = 0.5
        down = False
        while not self.stopping.is_set():
            try:
                if not self._started:
                    self._startup()
                self.turn()
                if down:
                    log.info("router: Redis answers again")
                down, backoff = False, 0.5
            except RedisUnavailable as exc:
                if not down:
                    log.warning("router: %s; retrying", exc)
                down = True
                self.stopping.wait(backoff)
                backoff = min(MAX_BACKOFF, backoff * 2)
            except Exception:
                log.exception("router: unexpected error; going on in a second")
                self.stopping.wait(1.0)

    def _startup(self) -> None:
        if self.source is not None:
            loaded = self.source.startup()
            if loaded is not None:
                self._adopt(loaded)
        self.consumer.ensure_group()
        self._started = True
        log.info("router: routing %s with %d rules (config %s)", self.consumer.group,
                 len(self.engine.config), self.engine.config.version)

    # --- one turn -------------------------------------------------------------------------------
    def turn(self) -> int:
        """Check the config, fire due bursts, then read and route one batch; returns how many
        events were routed."""
        now = time.monotonic()
        if self.source is not None and now >= self._next_check:
            self._next_check = now + CHECK_CONFIG_SECONDS
            self.check_config()
        self.engine.fire_due()
        block = self.block_ms
        due = self.engine.next_due_ms()
        if due is not None:
            wait = due - int(self.engine.state.now() * 1000)
            block = max(1, min(block, wait))
        return self.consumer.process(self._route, count=self.batch, block_ms=block,
                                     stop=self.stopping, max_batches=1)

    def _route(self, event: Event) -> None:
        self.engine.handle(event)

    def check_config(self) -> None:
        """Adopt a new fleet config from Redis; with ``watch_files``, reload an edited file."""
        if self.source is None:
            return
        if (self.watch_files and self.source.triggers_path.is_file()
                and self.source.files_changed()):
            try:
                loaded = self.source.reload(by="file watch")
            except ConfigError as exc:
                log.error("router: refused the edit: %s; the config in force (%s) stays", exc,
                          self.engine.config.version)
            else:
                log.info("router: reloaded %s (config %s)", self.source.triggers_path,
                         loaded.config.version)
                self._adopt(loaded)
                return
        active = self.source.state.active_version()
        if active is not None and active not in (self.engine.config.version, self._refused):
            try:
                loaded_active = self.source.active()
            except PitstopError as exc:
                self._refused = active  # said once, not every second
                log.error("router: cannot use config %s from Redis: %s", active, exc)
                return
            if loaded_active is not None:
                log.info("router: config %s is now in force", loaded_active.config.version)
                self._adopt(loaded_active)

    def _adopt(self, loaded: LoadedConfig) -> None:
        self.engine.load(loaded.config)
        if self.on_loaded is not None:
            self.on_loaded(loaded)
