"""Reading an input to triage: its format (JUnit XML or text), refusing binary or oversized
data, and streaming text through the scanner in bounded chunks."""

from __future__ import annotations

import codecs
import io
from pathlib import Path
from typing import IO

from pitstop.kernel.errors import TriageInputError
from pitstop.triage.junit import parse_junit
from pitstop.triage.parsed import ParsedInput
from pitstop.triage.textparser import TextParser
from pitstop.triage.textscanner import TextScanner

CHUNK_BYTES = 4 * 1024 * 1024
SNIFF_BYTES = 64 * 1024
MAX_CONTROL_SHARE = 0.02
"""Share of NUL and other control bytes (tab, newlines, CR, ESC, form feed excepted) above
which an input is binary, not output."""
_TEXT_CONTROLS = frozenset(b"\t\n\r\x1b\x0c\x08")


def _looks_binary(head: bytes) -> bool:
    if not head:
        return False
    if b"\x00" in head[:SNIFF_BYTES] and head.count(b"\x00") > len(head) // 1000:
        return True
    controls = sum(1 for byte in head[:SNIFF_BYTES] if byte < 32 and byte not in _TEXT_CONTROLS)
    return controls > MAX_CONTROL_SHARE * min(len(head), SNIFF_BYTES)


def _is_xml(head: bytes) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n")[:200]
    return start.startswith((b"<?xml", b"<testsuite", b"<testsuites", b"<!DOCTYPE", b"<!ENTITY"))


def parse_stream(stream: IO[bytes], name: str, *, max_bytes: int) -> ParsedInput:
    """Parse what ``stream`` holds (at most ``max_bytes`` of it; more is an error)."""
    head = stream.read(SNIFF_BYTES)
    if _looks_binary(head):
        raise TriageInputError(f"{name}: binary data, not test output or a JUnit report")
    if _is_xml(head):
        limited = _Limited(stream, head, max_bytes, name)
        parsed = parse_junit(limited, name)  # type: ignore[arg-type]
        parsed.bytes_read = limited.total
        return parsed
    scanner = TextScanner(TextParser(name))
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    total = len(head)
    scanner.feed(decoder.decode(head))
    while True:
        block = stream.read(CHUNK_BYTES)
        if not block:
            break
        total += len(block)
        if total > max_bytes:
            raise TriageInputError(f"{name}: larger than the limit of {max_bytes // (1024 * 1024)}"
                                   " MB (triage.max_input_mb)")
        scanner.feed(decoder.decode(block))
    scanner.feed(decoder.decode(b"", final=True))
    parsed = scanner.close()
    parsed.bytes_read = total
    return parsed


def parse_file(path: Path, *, max_bytes: int) -> ParsedInput:
    """Parse the file at ``path``; a missing, unreadable or unsuitable file is one clear error."""
    name = str(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise TriageInputError(f"{name}: not a regular file")
        if size > max_bytes:
            raise TriageInputError(f"{name}: {size // (1024 * 1024)} MB is larger than the limit of "
                                   f"{max_bytes // (1024 * 1024)} MB (triage.max_input_mb)")
        with path.open("rb") as stream:
            return parse_stream(stream, name, max_bytes=max_bytes)
    except FileNotFoundError:
        raise TriageInputError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise TriageInputError(f"{name}: is a directory") from None
    except PermissionError:
        raise TriageInputError(f"{name}: permission denied") from None
    except OSError as exc:
        raise TriageInputError(f"{name}: cannot read: {exc.strerror or exc}") from None


def parse_bytes(data: bytes, name: str, *, max_bytes: int) -> ParsedInput:
    if len(data) > max_bytes:
        raise TriageInputError(f"{name}: larger than the limit of {max_bytes // (1024 * 1024)} MB")
    return parse_stream(io.BytesIO(data), name, max_bytes=max_bytes)


class _Limited(io.RawIOBase):
    """The sniffed head and then the rest of a stream, refusing to go past ``limit`` bytes."""

    def __init__(self, stream: IO[bytes], head: bytes, limit: int, name: str) -> None:
        super().__init__()
        self._stream = stream
        self._head = head
        self._limit = limit
        self._name = name
        self.total = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            data, self._head = self._head, b""
        else:
            data = self._stream.read(size if size and size > 0 else CHUNK_BYTES)
        self.total += len(data)
        if self.total > self._limit:
            raise TriageInputError(f"{self._name}: larger than the limit of "
                                   f"{self._limit // (1024 * 1024)} MB (triage.max_input_mb)")
        return data

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)
