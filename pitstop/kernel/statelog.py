"""The JSONL state logs under ``.state/``: one writer for every component, and the reader.

Each record is one line written with one ``os.write`` on an ``O_APPEND`` descriptor, so lines
from many processes never interleave and a crash leaves every earlier line parseable. Logs rotate
by size (``name.jsonl`` -> ``name.1.jsonl`` ... ``name.<backups>.jsonl``) under an exclusive
``flock`` on ``name.jsonl.lock``; a writer that still holds the old file open simply appends its
line to the rotated file, where the reader finds it.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pitstop.kernel.errors import ValidationError
from pitstop.kernel.ids import utc_iso
from pitstop.kernel.redaction import Redactor

if sys.platform != "win32":
    import fcntl

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+\Z")
_ROTATED_RE = re.compile(r"^(?P<name>[A-Za-z0-9_-]+)\.(?P<n>\d+)\.jsonl\Z")
_CURRENT_RE = re.compile(r"^(?P<name>[A-Za-z0-9_-]+)\.jsonl\Z")
_HAS_PREAD = hasattr(os, "pread")  # not on Windows: there a torn tail is left to the reader
_OPEN_FLAGS = os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def _utc_now() -> datetime:
    return datetime.now(UTC)


def private_dir(path: Path) -> Path:
    """Create directory ``path`` and its missing parents, each private to its user (0700).

    ``Path.mkdir(mode=..., parents=True)`` gives the parents the default mode, and the mode is
    subject to the umask: a fresh project's ``.state`` would be world-readable. Existing
    directories are left as they are. Every file pitstop writes under ``.state`` is 0600 too.
    """
    missing: list[Path] = []
    current = Path(path)
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # made meanwhile by another process (or a file: the caller's open fails)
        os.chmod(directory, 0o700)  # mkdir's mode passes through the umask
    return Path(path)


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise ValidationError(
            f"state log name {name!r} is invalid: use letters, digits, '_' and '-' only"
        )
    return name


class StateLog:
    """Appends JSON records, one per line, to ``state_dir / f"{name}.jsonl"``."""

    def __init__(
        self,
        name: str,
        state_dir: Path,
        *,
        schema: str | None = None,
        max_bytes: int = 10 * 1024 * 1024,
        backups: int = 5,
        redactor: Redactor | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        if backups < 0:
            raise ValueError("backups must be >= 0")
        self.name = _check_name(name)
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / f"{name}.jsonl"
        self.lock_path = self.state_dir / f"{name}.jsonl.lock"
        self.schema = schema or f"pitstop.{name}/1"
        self.max_bytes = max_bytes
        self.backups = backups
        self.redactor = redactor
        self._clock = clock or _utc_now
        # flock excludes other processes; this excludes our own threads before they take it.
        self._rotate_lock = threading.Lock()

    def rotated_path(self, n: int) -> Path:
        return self.state_dir / f"{self.name}.{n}.jsonl"

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Write ``record`` as one line; returns what was written (with schema, ts, redacted)."""
        out: dict[str, Any] = {"schema": self.schema, "ts": utc_iso(self._clock())}
        out.update(record)
        if self.redactor is not None:
            redactor = self.redactor
            out = redactor.redact(out)
            line = json.dumps(
                out,
                separators=(",", ":"),
                default=lambda obj: redactor.redact_text(str(obj)),
            )
        else:
            line = json.dumps(out, separators=(",", ":"), default=str)
        self._write((line + "\n").encode("utf-8"))
        return out

    def _open(self) -> int:
        try:
            return os.open(self.path, _OPEN_FLAGS, 0o600)
        except FileNotFoundError:
            private_dir(self.state_dir)
            return os.open(self.path, _OPEN_FLAGS, 0o600)

    def _write(self, data: bytes) -> None:
        fd = self._open()
        try:
            size = os.fstat(fd).st_size
            if size and size + len(data) > self.max_bytes:
                os.close(fd)
                fd = -1
                fd = self._rotate_and_open(len(data))
                size = os.fstat(fd).st_size
            if size and _HAS_PREAD and os.pread(fd, 1, size - 1) != b"\n":
                # The previous writer died mid-line: end its torn line so ours stays parseable.
                data = b"\n" + data
            written = os.write(fd, data)
            while written < len(data):  # only on a full disk or a signal; finish the line
                written += os.write(fd, data[written:])
        finally:
            if fd >= 0:
                os.close(fd)

    def _rotate_and_open(self, incoming: int) -> int:
        """Rotate if the current file is (still) too full; return an fd on the current file."""
        with self._rotate_lock, _FileLock(self.lock_path):
            fd = self._open()
            size = os.fstat(fd).st_size
            if size == 0 or size + incoming <= self.max_bytes:
                return fd  # another writer rotated first
            os.close(fd)
            # Shift only the files that exist (one directory listing, not a stat per slot); the
            # oldest, and any left beyond a since-lowered ``backups``, are dropped.
            for n, path in _rotated_files(self.name, self.state_dir):
                if n >= self.backups:
                    path.unlink(missing_ok=True)
                else:
                    os.replace(path, self.rotated_path(n + 1))
            if self.backups == 0:
                self.path.unlink(missing_ok=True)
            else:
                os.replace(self.path, self.rotated_path(1))
            return self._open()


class _FileLock:
    """Exclusive ``flock`` on a lock file (a no-op where ``fcntl`` does not exist)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = -1

    def __enter__(self) -> _FileLock:
        if sys.platform != "win32":
            flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            self.fd = os.open(self.path, flags, 0o600)
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd >= 0:
            if sys.platform != "win32":
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def _rotated_files(name: str, state_dir: Path) -> list[tuple[int, Path]]:
    """``(n, path)`` of ``name.<n>.jsonl`` files, highest ``n`` (oldest) first."""
    try:
        entries = list(os.scandir(state_dir))
    except FileNotFoundError:
        return []
    rotated: list[tuple[int, Path]] = []
    for entry in entries:
        m = _ROTATED_RE.match(entry.name)
        if m and m.group("name") == name:
            rotated.append((int(m.group("n")), Path(entry.path)))
    return sorted(rotated, reverse=True)


def _log_files(name: str, state_dir: Path) -> list[Path]:
    """Files of one log, oldest first: the highest-numbered rotation down to the current file."""
    files = [path for _, path in _rotated_files(name, state_dir)]
    current = state_dir / f"{name}.jsonl"
    if current.exists():
        files.append(current)
    return files


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


def read_log(
    name: str,
    state_dir: Path,
    *,
    since: datetime | None = None,
    grep: str | None = None,
    limit: int | None = None,
) -> Iterator[dict[str, Any]]:
    """Records of log ``name``, oldest first, across its rotated files and the current one.

    Blank, torn or unparseable lines are skipped. ``since`` keeps records whose ``ts`` is at or
    after it; ``grep`` is a case-insensitive regex (a plain substring when it does not compile)
    matched against the raw line; ``limit`` keeps the last ``limit`` records.
    """
    _check_name(name)
    if limit is not None and limit <= 0:
        return
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    match = _grep_matcher(grep)
    # Open newest first and skip files already open (same inode): a rotation while we open then
    # shows a file under a second name, not twice.
    handles = []
    seen: set[tuple[int, int]] = set()
    try:
        for path in reversed(_log_files(name, Path(state_dir))):
            try:
                handle = path.open("rb")
            except FileNotFoundError:
                continue
            st = os.fstat(handle.fileno())
            if (st.st_dev, st.st_ino) in seen:
                handle.close()
                continue
            seen.add((st.st_dev, st.st_ino))
            handles.append(handle)
        records = _iter_records(reversed(handles), since, match)
        if limit is None:
            yield from records
        else:
            yield from deque(records, maxlen=limit)
    finally:
        for handle in handles:
            handle.close()


def _grep_matcher(grep: str | None) -> Callable[[str], bool] | None:
    if not grep:
        return None
    try:
        pattern = re.compile(grep, re.IGNORECASE)
    except re.error:
        needle = grep.lower()
        return lambda line: needle in line.lower()
    return lambda line: pattern.search(line) is not None


def _iter_records(
    handles: Iterator[Any],
    since: datetime | None,
    match: Callable[[str], bool] | None,
) -> Iterator[dict[str, Any]]:
    for handle in handles:
        for raw in handle:
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError:
                continue
            if not line or (match is not None and not match(line)):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict):
                continue
            if since is not None:
                ts = _parse_ts(record.get("ts"))
                if ts is None or ts < since:
                    continue
            yield record


def list_logs(state_dir: Path) -> list[str]:
    """Sorted names of the logs present in ``state_dir`` (current or rotated files)."""
    names: set[str] = set()
    try:
        entries = list(os.scandir(state_dir))
    except FileNotFoundError:
        return []
    for entry in entries:
        m = _CURRENT_RE.match(entry.name) or _ROTATED_RE.match(entry.name)
        if m and entry.is_file():
            names.add(m.group("name"))
    return sorted(names)
