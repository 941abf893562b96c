"""What makes a patch unsafe to apply, decided before anything is written.

:meth:`PatchSafety.inspect` reads the diff (:mod:`pitstop.patches.diff`), the base commit's tree
(read-only ``git ls-tree``) and what ``git apply --numstat`` itself finds in the patch, and
returns a :class:`SafetyReport`: *refusals* (the patch never touches a worktree) and the
*protected* paths it edits (it goes to manual review whatever its score).

Refused: names with ``..``, ``.`` or empty components, absolute or drive paths, backslashes,
control or invisible (format) characters, names that are not NFC or not UTF-8; anything into
``.git`` (case folded, trailing dots and spaces dropped, NTFS short names ``git~1``) or
``.gitmodules``; modes other than regular files (symlinks ``120000``, submodules ``160000``);
a path whose parent in the base tree is a symlink or a submodule (write-through), or that is a
symlink there itself; renames and copies whose source or target breaks a rule; binary content
over the cap, or without its data; header lines with carriage returns; a diff git reads as
touching a path the parser did not see.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pitstop.kernel.errors import PatchError
from pitstop.patches.diff import ParsedDiff, parse_diff
from pitstop.patches.git import Git

__all__ = ["DEFAULT_PROTECTED", "PatchSafety", "PathRules", "SafetyReport", "glob_to_regex"]

DEFAULT_PROTECTED: tuple[str, ...] = (
    ".github/workflows/**", ".github/actions/**", ".gitlab-ci.yml", ".gitlab/**",
    ".circleci/**", ".travis.yml", "azure-pipelines.yml", ".buildkite/**", "Jenkinsfile",
    "**/Jenkinsfile", ".pre-commit-config.yaml", ".gitattributes", "CODEOWNERS",
    ".github/CODEOWNERS", "**/.env", "**/.env.*", "**/*.pem", "**/*.key", "**/id_rsa*",
    "**/id_ed25519*", "**/secrets.*", "**/*secret*", "**/credentials*", "**/.npmrc",
    "**/.pypirc", "**/.netrc",
)
"""Edits here always go to manual review: CI definitions, code owners, secrets files."""

REGULAR_MODES = frozenset({"100644", "100755"})
_MAX_PATH = 4096
_MAX_COMPONENT = 255


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """A gitignore-like glob (``**`` any depth, ``*`` within a name, ``?`` one character),
    anchored at the repository root, matched case-insensitively."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(f"^{out}$", re.IGNORECASE)


class PathRules:
    """The rules one path must meet, and the protected globs."""

    def __init__(self, protected: Iterable[str] = DEFAULT_PROTECTED) -> None:
        self.protected = list(protected)
        self._protected = [glob_to_regex(p) for p in self.protected]

    def problem(self, path: str) -> str | None:
        """Why ``path`` may not be written, or None."""
        if not path:
            return "an empty path"
        if len(path) > _MAX_PATH:
            return "a path longer than 4096 characters"
        for char in path:
            category = unicodedata.category(char)
            if char == "\\":
                return f"a backslash in {path!r}"
            if category in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") or (
                    category == "Zs" and char != " "):
                return f"a control or invisible character (U+{ord(char):04X}) in {path!r}"
        if unicodedata.normalize("NFC", path) != path:
            return f"a name that is not in Unicode NFC form: {path!r}"
        if path.startswith("/") or re.match(r"^[A-Za-z]:", path):
            return f"an absolute path {path!r}"
        if path.startswith("~"):
            return f"a home-relative path {path!r}"
        for part in path.split("/"):
            if part in ("", ".", ".."):
                return f"a path with {part or 'an empty'!r} component: {path!r}"
            if len(part.encode("utf-8", errors="surrogateescape")) > _MAX_COMPONENT:
                return f"a name longer than 255 bytes in {path!r}"
            folded = unicodedata.normalize("NFKC", part).casefold().rstrip(". ")
            if folded == ".git" or re.fullmatch(r"git~\d+", folded):
                return f"a path into .git: {path!r}"
            if folded == ".gitmodules":
                return f"an edit of .gitmodules (submodules): {path!r}"
        return None

    def is_protected(self, path: str) -> str | None:
        """The protected glob ``path`` matches, or None."""
        for pattern, regex in zip(self.protected, self._protected, strict=True):
            if regex.match(path):
                return pattern
        return None


@dataclass
class SafetyReport:
    parsed: ParsedDiff
    refusals: list[str] = field(default_factory=list)
    protected: dict[str, str] = field(default_factory=dict)
    """Protected path -> the glob it matched."""

    @property
    def safe(self) -> bool:
        return not self.refusals


class PatchSafety:
    def __init__(self, rules: PathRules | None = None, *,
                 binary_cap: int = 1024 * 1024, max_files: int = 2000) -> None:
        self.rules = rules or PathRules()
        self.binary_cap = binary_cap
        self.max_files = max_files

    def inspect_diff(self, data: bytes) -> SafetyReport:
        """The checks that need only the diff itself."""
        parsed = parse_diff(data, binary_cap=self.binary_cap)
        report = SafetyReport(parsed, refusals=list(parsed.problems))
        if len(parsed.files) > self.max_files:
            report.refusals.append(f"{len(parsed.files)} files: more than {self.max_files}")
        for change in parsed.files:
            for mode in change.modes:
                if mode not in REGULAR_MODES:
                    kind = {"120000": "a symlink", "160000": "a submodule (gitlink)",
                            "040000": "a directory"}.get(mode, "an unsupported")
                    report.refusals.append(f"{change.path!r} has mode {mode}: {kind} mode")
            for size in change.binary_sizes:
                if size > self.binary_cap:
                    report.refusals.append(f"binary {change.path!r} is {size} bytes: over the "
                                           f"{self.binary_cap}-byte cap")
        for path in parsed.paths:
            problem = self.rules.problem(path)
            if problem is not None:
                report.refusals.append(f"refused {problem}")
            else:
                pattern = self.rules.is_protected(path)
                if pattern is not None:
                    report.protected[path] = pattern
        return report

    def inspect(self, data: bytes, git: Git, base: str, patch_file: Path) -> SafetyReport:
        """Everything: the diff, then (only if it passed) the base tree and git's own reading."""
        report = self.inspect_diff(data)
        if not report.safe:
            return report
        paths = report.parsed.paths
        self._check_base_tree(report, git, base, paths)
        try:
            seen_by_git = git.numstat_paths(patch_file)
        except PatchError as exc:
            report.refusals.append(str(exc))
            return report
        unseen = sorted(set(seen_by_git) - set(paths))
        if unseen:
            report.refusals.append(f"git reads paths the patch check did not see: {unseen[:5]}")
        return report

    @staticmethod
    def _check_base_tree(report: SafetyReport, git: Git, base: str, paths: Sequence[str]) -> None:
        prefixes: dict[str, str] = {}
        for path in paths:
            parts = path.split("/")
            for end in range(1, len(parts) + 1):
                prefixes.setdefault("/".join(parts[:end]), path)
        modes = git.tree_modes(base, sorted(prefixes))
        for prefix, mode in sorted(modes.items()):
            owner = prefixes.get(prefix, "")
            if not owner:
                continue
            if mode == "120000":
                what = "is a symlink" if prefix == owner else f"goes through the symlink {prefix!r}"
                report.refusals.append(f"refused {owner!r}: it {what} in the base tree")
            elif mode == "160000":
                report.refusals.append(f"refused {owner!r}: {prefix!r} is a submodule in the "
                                       "base tree")
            elif prefix != owner and mode != "040000":
                report.refusals.append(f"refused {owner!r}: {prefix!r} is a file in the base tree")
