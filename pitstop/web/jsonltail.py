"""The newest records of a ``.state/*.jsonl`` log, read from the end of the file.

``pitstop.kernel.statelog.read_log`` reads a log from its start (up to 60 MB with its
rotations); a page needs only the last few thousand records, so this reads backwards in blocks
from the end of the current file (and the previous rotation, when the current one is short),
with a byte budget. A ``needle`` skips lines not containing it before they are parsed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["tail_records"]

_BLOCK = 256 * 1024


def _lines_backwards(path: Path, budget: int) -> Iterator[bytes]:
    """Complete lines of ``path``, last first, reading at most ``budget`` bytes."""
    try:
        handle = path.open("rb")
    except OSError:
        return
    with handle:
        position = os.fstat(handle.fileno()).st_size
        stop = max(0, position - budget)
        rest = b""
        while position > stop:
            size = min(_BLOCK, position - stop)
            position -= size
            handle.seek(position)
            chunk = handle.read(size) + rest
            lines = chunk.split(b"\n")
            rest = lines[0]  # may be the tail of an earlier line: joined with the next block
            yield from reversed(lines[1:])
        if position == 0 and rest:
            yield rest


def tail_records(name: str, state_dir: Path, *, limit: int, needle: bytes | None = None,
                 max_bytes: int = 8 * 1024 * 1024) -> list[dict[str, Any]]:
    """Up to ``limit`` of the newest records of log ``name`` (oldest first), reading at most
    ``max_bytes`` (current file, then ``name.1.jsonl``); torn or non-JSON lines are skipped."""
    found: list[dict[str, Any]] = []
    budget = max_bytes
    for path in (state_dir / f"{name}.jsonl", state_dir / f"{name}.1.jsonl"):
        try:
            size = path.stat().st_size
        except OSError:
            continue
        for line in _lines_backwards(path, budget):
            if not line.strip() or (needle is not None and needle not in line):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                found.append(record)
                if len(found) >= limit:
                    return found[::-1]
        budget -= min(size, budget)
        if budget <= 0:
            break
    return found[::-1]
