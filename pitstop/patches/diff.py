"""A unified diff, parsed the way ``git apply`` reads it, strictly: what files it touches, how.

The parser never trusts what it cannot account for: a header line it does not know, a hunk whose
line counts do not add up, a quoted name it cannot unquote, a binary block it cannot decode are
*problems* (the patch is refused), never skipped. Lines before the first file (an e-mail
preamble, a commit message) are ignored, as ``git apply`` ignores them. Content lines stay bytes:
files in other encodings, and CRLF line ends inside hunks, are legitimate; names and header lines
must be UTF-8 and free of carriage returns.

What :class:`ParsedDiff` tells the safety check (:mod:`pitstop.patches.safety`): every path a file
section names (``diff --git`` line, ``---``/``+++``, rename/copy lines), every mode, binary sizes
(decoded, so a small delta cannot hide a huge result), and for the coverage check the added line
numbers of each file.
"""

from __future__ import annotations

import base64
import re
import zlib
from dataclasses import dataclass, field

__all__ = ["FileChange", "Hunk", "ParsedDiff", "parse_diff", "unquote_c_path"]

_HUNK_RE = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_MODE_HEADERS = ("old mode ", "new mode ", "deleted file mode ", "new file mode ")
_NAME_HEADERS = ("rename from ", "rename to ", "copy from ", "copy to ")
_INFO_RE = re.compile(r"^(similarity index \d+%|dissimilarity index \d+%|"
                      r"index [0-9a-f]+\.\.[0-9a-f]+( [0-7]{6})?)$")
_B85_LENGTH = {**{chr(ord("A") + i): i + 1 for i in range(26)},
               **{chr(ord("a") + i): i + 27 for i in range(26)}}
_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


@dataclass
class Hunk:
    old_start: int
    old_len: int
    new_start: int
    new_len: int
    header: str
    added: list[int] = field(default_factory=list)
    """Line numbers, in the new file, of the lines this hunk adds."""


@dataclass
class FileChange:
    """One file section of the diff. Paths are repository-relative (``a/``, ``b/`` stripped)."""

    old_path: str | None = None
    new_path: str | None = None
    old_mode: str | None = None
    new_mode: str | None = None
    is_new: bool = False
    is_deleted: bool = False
    rename_from: str | None = None
    rename_to: str | None = None
    copy_from: str | None = None
    copy_to: str | None = None
    binary: bool = False
    binary_sizes: list[int] = field(default_factory=list)
    """Sizes of the files the binary blocks produce (decoded, not as declared)."""
    hunks: list[Hunk] = field(default_factory=list)
    named: list[str] = field(default_factory=list)
    """Every path any header line of this section names."""

    @property
    def path(self) -> str:
        """The path this change ends at (the old one for a deletion)."""
        return self.new_path or self.old_path or (self.named[0] if self.named else "")

    @property
    def modes(self) -> list[str]:
        return [mode for mode in (self.old_mode, self.new_mode) if mode is not None]


@dataclass
class ParsedDiff:
    files: list[FileChange] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def paths(self) -> list[str]:
        """Every path named anywhere, in order, without repeats."""
        return list(dict.fromkeys(name for change in self.files for name in change.named))

    def added_lines(self) -> dict[str, list[int]]:
        """New-file line numbers added, per resulting path (deleted files left out)."""
        lines: dict[str, list[int]] = {}
        for change in self.files:
            if change.new_path and not change.is_deleted:
                lines.setdefault(change.new_path, []).extend(
                    n for hunk in change.hunks for n in hunk.added)
        return lines


def unquote_c_path(text: str) -> str | None:
    """Undo git's C-style quoting of a name (``"a/\\303\\251"``); None when malformed."""
    if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
        return None
    body = text[1:-1]
    out = bytearray()
    i = 0
    while i < len(body):
        char = body[i]
        if char == '"':
            return None  # an unescaped quote inside
        if char != "\\":
            out.extend(char.encode("utf-8"))
            i += 1
            continue
        if i + 1 >= len(body):
            return None
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out.append(_ESCAPES[nxt])
            i += 2
        elif re.fullmatch(r"[0-3][0-7]{2}", body[i + 1:i + 4]):
            out.append(int(body[i + 1:i + 4], 8))
            i += 4
        else:
            return None
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        return None


class _Parser:
    def __init__(self, data: bytes, binary_cap: int) -> None:
        self.lines = data.split(b"\n")
        if self.lines and self.lines[-1] == b"":
            self.lines.pop()
        self.i = 0
        self.binary_cap = binary_cap
        self.result = ParsedDiff()

    def problem(self, message: str) -> None:
        self.result.problems.append(f"line {self.i + 1}: {message}")

    def text(self, raw: bytes) -> str | None:
        """A header line as text: UTF-8 without CR (None and a problem otherwise)."""
        if b"\r" in raw:
            self.problem("carriage return in a header line")
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.problem("header line is not valid UTF-8")
            return None

    def name(self, raw: str, *, strip_prefix: bool) -> str | None:
        """A name from a header: unquoted, ``a/``/``b/`` stripped (git's -p1)."""
        if raw.startswith('"'):
            name = unquote_c_path(raw)
            if name is None:
                self.problem(f"malformed quoted name {raw!r}")
                return None
        else:
            name = raw.split("\t", 1)[0] if "\t" in raw else raw
        if name == "/dev/null":
            return name
        if strip_prefix:
            if "/" not in name:
                self.problem(f"name {name!r} has no a/ or b/ prefix")
                return None
            name = name.split("/", 1)[1]
        return name

    def run(self) -> ParsedDiff:
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.startswith(b"diff --git "):
                self.git_section()
            elif (line.startswith(b"--- ") and self.i + 1 < len(self.lines)
                  and self.lines[self.i + 1].startswith(b"+++ ")):
                self.traditional_section()
            elif self.result.files and line.startswith(b"@@ "):
                self.problem("hunk outside a file section")
                self.i += 1
            else:
                self.i += 1  # preamble or trailing text, ignored like git apply does
        if not self.result.files and not self.result.problems:
            self.result.problems.append("no file changes found in the patch")
        return self.result

    def git_section(self) -> None:
        change = FileChange()
        self.result.files.append(change)
        header = self.text(self.lines[self.i])
        self.i += 1
        if header is None:
            return
        self.git_header_names(change, header[len("diff --git "):])
        while self.i < len(self.lines):
            raw = self.lines[self.i]
            if raw.startswith((b"diff --git ", b"@@ ")) or (
                    raw.startswith(b"--- ") and self.i + 1 < len(self.lines)
                    and self.lines[self.i + 1].startswith(b"+++ ")):
                break
            if raw.startswith(b"GIT binary patch") or raw.startswith(b"Binary files "):
                break
            line = self.text(raw)
            self.i += 1
            if line is None:
                continue
            self.extended_header(change, line)
        self.body(change)

    def git_header_names(self, change: FileChange, rest: str) -> None:
        if rest.startswith('"'):
            end = self._quoted_end(rest)
            first, second = rest[:end + 1], rest[end + 1:].lstrip(" ")
        else:
            # Unquoted names may hold spaces: ``a/X b/X`` splits in the middle when both halves
            # agree; otherwise the second name is the one starting at " b/" (or quoted).
            half = (len(rest) - 1) // 2
            if len(rest) % 2 == 1 and rest[half] == " " and rest[:half][2:] == rest[half + 1:][2:]:
                first, second = rest[:half], rest[half + 1:]
            elif ' "' in rest:
                first, _, second = rest.partition(' "')
                second = '"' + second
            else:
                first, _, second = rest.partition(" b/")
                second = "b/" + second if second else ""
        if not first or not second:
            self.problem(f"cannot read the names of {rest!r}")
            return
        for raw in (first, second):
            name = self.name(raw, strip_prefix=True)
            if name is not None and name != "/dev/null":
                change.named.append(name)

    @staticmethod
    def _quoted_end(text: str) -> int:
        i = 1
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == '"':
                return i
            i += 1
        return len(text) - 1

    def extended_header(self, change: FileChange, line: str) -> None:
        for prefix in _MODE_HEADERS:
            if line.startswith(prefix):
                mode = line[len(prefix):]
                if not re.fullmatch(r"[0-7]{6}", mode):
                    self.problem(f"malformed mode {mode!r}")
                    return
                if prefix in ("old mode ", "deleted file mode "):
                    change.old_mode = mode
                else:
                    change.new_mode = mode
                change.is_new = change.is_new or prefix == "new file mode "
                change.is_deleted = change.is_deleted or prefix == "deleted file mode "
                return
        for prefix in _NAME_HEADERS:
            if line.startswith(prefix):
                name = self.name(line[len(prefix):], strip_prefix=False)
                if name is None:
                    return
                change.named.append(name)
                setattr(change, prefix.strip().replace(" ", "_"), name)
                return
        if _INFO_RE.match(line):
            return
        self.problem(f"unknown header line {line[:80]!r}")

    def traditional_section(self) -> None:
        change = FileChange()
        self.result.files.append(change)
        self.body(change)

    def body(self, change: FileChange) -> None:
        """``---``/``+++`` names, then hunks or a binary block."""
        if self.i < len(self.lines) and self.lines[self.i].startswith(b"--- "):
            if self.i + 1 >= len(self.lines) or not self.lines[self.i + 1].startswith(b"+++ "):
                self.problem("--- line without a +++ line")
                self.i += 1
                return
            for attr, raw in (("old_path", self.lines[self.i]), ("new_path", self.lines[self.i + 1])):
                line = self.text(raw)
                if line is None:
                    continue
                name = self.name(line[4:], strip_prefix=True)
                if name is not None and name != "/dev/null":
                    setattr(change, attr, name)
                    change.named.append(name)
                elif name == "/dev/null":
                    if attr == "old_path":
                        change.is_new = True
                    else:
                        change.is_deleted = True
            self.i += 2
            if self.i >= len(self.lines) or not self.lines[self.i].startswith(b"@@ "):
                self.problem("file header without a hunk")
            while self.i < len(self.lines) and self.lines[self.i].startswith(b"@@ "):
                self.hunk(change)
        elif self.i < len(self.lines) and self.lines[self.i].startswith(b"GIT binary patch"):
            change.binary = True
            self.i += 1
            self.binary_blocks(change)
        elif self.i < len(self.lines) and self.lines[self.i].startswith(b"Binary files "):
            change.binary = True
            self.problem("binary change without its content (git diff --binary is needed)")
            self.i += 1
        if change.old_path is None and change.new_path is None and len(change.named) >= 1:
            source = change.rename_from or change.copy_from or change.named[0]
            target = change.rename_to or change.copy_to or change.named[-1]
            change.old_path = None if change.is_new else source
            change.new_path = None if change.is_deleted else target

    def hunk(self, change: FileChange) -> None:
        raw = self.lines[self.i]
        match = _HUNK_RE.match(raw)
        if match is None:
            self.problem("malformed hunk header")
            self.i += 1
            return
        old_start, new_start = int(match.group(1)), int(match.group(3))
        old_left = int(match.group(2)) if match.group(2) is not None else 1
        new_left = int(match.group(4)) if match.group(4) is not None else 1
        hunk = Hunk(old_start, old_left, new_start, new_left,
                    raw[:match.end()].decode("ascii"))
        change.hunks.append(hunk)
        self.i += 1
        new_line = new_start
        while old_left > 0 or new_left > 0:
            if self.i >= len(self.lines):
                self.problem(f"hunk {hunk.header} ends early")
                return
            line = self.lines[self.i]
            tag = line[:1]
            if tag in (b" ", b"") and old_left > 0 and new_left > 0:
                old_left -= 1
                new_left -= 1
                new_line += 1
            elif tag == b"-" and old_left > 0:
                old_left -= 1
            elif tag == b"+" and new_left > 0:
                hunk.added.append(new_line)
                new_left -= 1
                new_line += 1
            elif tag == b"\\":
                pass
            else:
                self.problem(f"hunk {hunk.header} does not add up (corrupt patch)")
                return
            self.i += 1
        while self.i < len(self.lines) and self.lines[self.i].startswith(b"\\"):
            self.i += 1  # "\ No newline at end of file"

    def binary_blocks(self, change: FileChange) -> None:
        for _ in range(2):  # forward, then the optional reverse block
            if self.i >= len(self.lines):
                return
            head = self.lines[self.i]
            match = re.fullmatch(rb"(literal|delta) (\d+)", head)
            if match is None:
                if _ in (0,):
                    self.problem("GIT binary patch without a literal or delta block")
                return
            self.i += 1
            data = bytearray()
            while self.i < len(self.lines) and self.lines[self.i]:
                decoded = self.base85_line(self.lines[self.i])
                if decoded is None:
                    return
                data.extend(decoded)
                self.i += 1
            self.i += 1  # the blank line closing the block
            size = self.inflated_size(bytes(data), match.group(1) == b"delta",
                                      int(match.group(2)))
            if size is not None and _ == 0:
                change.binary_sizes.append(size)

    def base85_line(self, raw: bytes) -> bytes | None:
        try:
            text = raw.decode("ascii")
            length = _B85_LENGTH[text[0]]
            decoded = base64.b85decode(text[1:])
        except (UnicodeDecodeError, KeyError, ValueError, IndexError):
            self.problem("malformed base85 line in a binary patch")
            return None
        if length > len(decoded):
            self.problem("base85 line shorter than it says")
            return None
        return decoded[:length]

    def inflated_size(self, data: bytes, delta: bool, declared: int) -> int | None:
        """The size of what the block produces, inflating at most one byte past the cap."""
        if declared > self.binary_cap and not delta:
            return declared
        inflater = zlib.decompressobj()
        try:
            out = inflater.decompress(data, self.binary_cap + 1)
        except zlib.error:
            self.problem("binary patch data does not inflate")
            return None
        if not delta:
            if len(out) != declared and len(out) <= self.binary_cap:
                self.problem("binary literal is not the size it declares")
            return max(len(out), declared)
        # A delta starts with two varints: the source size and the size of the result.
        pos, sizes = 0, []
        for _ in range(2):
            value, shift = 0, 0
            while True:
                if pos >= len(out):
                    self.problem("binary delta header is truncated")
                    return None
                byte = out[pos]
                pos += 1
                value |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            sizes.append(value)
        return sizes[1]


def parse_diff(data: bytes, *, binary_cap: int = 1024 * 1024) -> ParsedDiff:
    """Parse ``data`` (a unified or git diff); problems make the patch unsafe to apply."""
    return _Parser(data, binary_cap).run()
