"""Where the trigger config in force comes from, and hot reload.

The files (``config/triggers.yaml`` and ``config/workstreams.yaml``) are validated together; a
good pair is stored in Redis (:class:`ConfigSnapshot`) so that every router in the fleet switches
to it within a second, whichever machine loaded it. An invalid edit is refused with the
file:line error, recorded in Redis for ``pitstop doctor``, and the last good config stays in
force. A machine without a ``triggers.yaml`` never replaces the fleet's config: it adopts it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pitstop.kernel.constants import TRIGGERS_FILE, WORKSTREAMS_FILE
from pitstop.kernel.errors import ConfigError
from pitstop.kernel.ids import utc_iso
from pitstop.triggers.config import Catalog, TriggerConfig, parse_triggers
from pitstop.triggers.state import ConfigSnapshot, TriggerState, who

__all__ = ["ConfigSource", "LoadedConfig", "catalog_from_text"]

log = logging.getLogger(__name__)


def _catalog_class() -> Any:
    module = importlib.import_module("pitstop.workstreams")
    return getattr(module, "WorkstreamCatalog", None)


def catalog_from_text(text: str, file: str, *, path: Path | None = None,
                      environ: Mapping[str, str] | None = None) -> Catalog | None:
    """The workstream catalog of a workstreams.yaml text (None while the workstream engine
    offers none). ``path``: load the file itself, for errors with its lines."""
    cls = _catalog_class()
    if cls is None:
        return None
    if path is not None and path.is_file():
        return cls.load(path)  # type: ignore[no-any-return]
    # The same version as load() gives the file: a config compiled from Redis names the version
    # `pitstop triggers reload`, the routers and their decisions name.
    return cls.from_text(text, source=file, environ=environ)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class LoadedConfig:
    config: TriggerConfig
    catalog: Catalog | None
    snapshot: ConfigSnapshot


CatalogLoader = Callable[[str, str, "Path | None"], "Catalog | None"]


def _default_catalog_loader(text: str, file: str, path: Path | None) -> Catalog | None:
    return catalog_from_text(text, file, path=path)


class ConfigSource:
    """The files of one config directory, and the fleet-wide config in Redis."""

    def __init__(self, config_dir: Path, state: TriggerState, *,
                 catalog_loader: CatalogLoader = _default_catalog_loader) -> None:
        self.config_dir = Path(config_dir)
        self.state = state
        self.catalog_loader = catalog_loader
        self.triggers_path = self.config_dir / TRIGGERS_FILE
        self.workstreams_path = self.config_dir / WORKSTREAMS_FILE
        self._stamp: tuple[Any, ...] | None = None

    # --- files ----------------------------------------------------------------------------------
    def _read(self, path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read: {exc}", file=str(path)) from None

    def files_stamp(self) -> tuple[Any, ...]:
        """What changes when either file is edited (mtime, size, inode)."""
        stamp: list[Any] = []
        for path in (self.triggers_path, self.workstreams_path):
            try:
                st = path.stat()
                stamp.append((st.st_mtime_ns, st.st_size, st.st_ino))
            except OSError:
                stamp.append(None)
        return tuple(stamp)

    def load_files(self) -> LoadedConfig:
        """Validate the two files together; ConfigError (file:line, key) when they are bad."""
        triggers_text = self._read(self.triggers_path)
        workstreams_text = self._read(self.workstreams_path)
        catalog = self.catalog_loader(workstreams_text, str(self.workstreams_path),
                                      self.workstreams_path)
        config = parse_triggers(triggers_text, file=str(self.triggers_path), catalog=catalog)
        snapshot = ConfigSnapshot(
            version=config.version, triggers_text=triggers_text,
            triggers_file=str(self.triggers_path), workstreams_text=workstreams_text,
            workstreams_file=str(self.workstreams_path), loaded_at=utc_iso(datetime.now(UTC)),
            loaded_by=who())
        return LoadedConfig(config, catalog, snapshot)

    @staticmethod
    def compile(snapshot: ConfigSnapshot) -> LoadedConfig:
        catalog = catalog_from_text(snapshot.workstreams_text, snapshot.workstreams_file)
        config = parse_triggers(snapshot.triggers_text, file=snapshot.triggers_file,
                                catalog=catalog)
        return LoadedConfig(config, catalog, snapshot)

    # --- reload ---------------------------------------------------------------------------------
    def reload(self, *, by: str | None = None) -> LoadedConfig:
        """Validate the files and make them the fleet's config; on a bad edit record the error
        (``pitstop doctor`` shows it) and raise it: the config in force stays."""
        self._stamp = self.files_stamp()
        try:
            loaded = self.load_files()
        except ConfigError as exc:
            self.state.record_error(str(exc), at=utc_iso(datetime.now(UTC)), by=by)
            raise
        self.state.publish_config(loaded.snapshot)
        return loaded

    def startup(self) -> LoadedConfig | None:
        """The config for a starting router: this machine's files when they are good and
        present (published if new), else the fleet's config in Redis (None: there is none)."""
        if self.triggers_path.is_file():
            try:
                active = self.state.active_version()
                self._stamp = self.files_stamp()
                loaded = self.load_files()
                if loaded.config.version != active:
                    self.state.publish_config(loaded.snapshot)
                    log.info("trigger config %s loaded from %s", loaded.config.version,
                             self.triggers_path)
                return loaded
            except ConfigError as exc:
                self.state.record_error(str(exc), at=utc_iso(datetime.now(UTC)))
                log.error("refused %s: %s; keeping the config in force", self.triggers_path, exc)
        return self.active()

    def active(self) -> LoadedConfig | None:
        snapshot = self.state.active_config()
        return None if snapshot is None else self.compile(snapshot)

    def files_changed(self) -> bool:
        stamp = self.files_stamp()
        if self._stamp is None:
            self._stamp = stamp
            return False
        return stamp != self._stamp
