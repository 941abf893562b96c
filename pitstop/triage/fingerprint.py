"""Fingerprints: the same root cause in 200 tests gives one fingerprint.

The error line is normalized before hashing: temporary paths, other absolute paths (to their
last two parts), memory addresses, UUIDs, long hex ids and numbers are replaced by placeholders,
so ``assert 3 == 4`` and ``assert 5 == 7``, or a ``/tmp/pytest-of-ci/pytest-12/x`` path and its
twin from another run, fall together, while a different message or module does not.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable

from pitstop.triage.model import Category

MAX_NORMALIZED = 240

def _tail(match: re.Match[str]) -> str:
    parts = re.split(r"[\\/]", match.group())
    return "…/" + "/".join(parts[-2:])


_RULES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (re.compile(r"(?:[A-Za-z]:)?(?:[\\/](?:tmp|temp|var[\\/]folders|private[\\/]var|AppData"
                r"[\\/]Local[\\/]Temp)[\\/]|pytest-of-[\w-]+[\\/]pytest-\d+[\\/])[^\s'\")\]:,]*",
                re.IGNORECASE), "<tmp>"),
    (re.compile(r"(?:[A-Za-z]:|file://)?(?:[\\/][\w.@+~-]+){3,}"), _tail),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<addr>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
     "<uuid>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{7,}\b"), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "N"),
    (re.compile(r"\s+"), " "),
]


def normalize(text: str) -> str:
    """``text`` with run-specific details replaced by placeholders (see the module)."""
    out = text.strip()
    for pattern, replacement in _RULES:
        out = pattern.sub(replacement, out)
    return out.strip()[:MAX_NORMALIZED]


def fingerprint(category: Category, error: str) -> str:
    """A short stable id of (category, normalized error)."""
    digest = hashlib.sha256(f"{category}|{normalize(error)}".encode()).hexdigest()
    return digest[:12]
