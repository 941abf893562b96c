"""What a script may be, and what it sees: the rules a worker applies before anything runs.

* **Paths.** A script must resolve (symlinks followed) to a regular file inside an allowed root,
  and no name may start with ``-``; a working directory likewise. A path that climbs out with
  ``..`` or is absolute is refused as outside even when nothing exists there.
* **Interpreters.** ``.py`` runs with this Python, ``.sh`` with bash, ``.ps1`` with ``pwsh``
  (or ``powershell``) ``-NonInteractive -NoProfile -File``, anything else executable directly.
* **Environment.** Allowlisted names from the worker's environment, non-interactive flags, then
  the caller's ``env``, except names that would run other code (:data:`PROTECTED_ENV`).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pitstop.kernel.constants import DEFAULT_ENV_ALLOWLIST
from pitstop.kernel.errors import InterpreterNotFound, PathNotAllowed, ScriptError, ValidationError
from pitstop.kernel.redaction import Redactor

__all__ = [
    "DEFAULT_ENV_ALLOWLIST",
    "NON_INTERACTIVE_ENV",
    "PROTECTED_ENV",
    "ScriptPolicy",
    "check_caller_env",
]

_POSIX = os.name == "posix"


PROTECTED_ENV: tuple[str, ...] = (
    # loaders and interpreters: each runs code of the caller's choosing before the script
    "LD_*", "DYLD_*", "GCONV_PATH", "GETCONF_DIR", "GLIBC_TUNABLES", "HOSTALIASES", "LOCALDOMAIN",
    "RES_OPTIONS", "NLSPATH", "LOCPATH",
    "PATH", "BASH_ENV", "ENV", "BASH_FUNC_*", "SHELLOPTS", "BASHOPTS", "PS4", "PROMPT_COMMAND",
    "IFS", "CDPATH", "GLOBIGNORE",
    "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONWARNINGS",
    "PYTHONEXECUTABLE", "PYTHONUSERBASE", "PYTHONPLATLIBDIR", "PYTHONSAFEPATH", "PYTHONBREAKPOINT",
    "PERL5OPT", "PERL5LIB", "PERLLIB", "RUBYOPT", "RUBYLIB", "NODE_OPTIONS", "NODE_PATH",
    "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "PSMODULEPATH",
    # tools scripts call, which run commands named in these
    "GIT_CONFIG*", "GIT_SSH*", "GIT_EXEC_PATH", "GIT_ASKPASS", "SSH_ASKPASS*", "GIT_PROXY_COMMAND",
    "GIT_EXTERNAL_DIFF", "GIT_PAGER", "GIT_EDITOR", "GIT_SEQUENCE_EDITOR", "GIT_TEMPLATE_DIR",
    "PAGER", "EDITOR", "VISUAL", "BROWSER",
    # pitstop's own markers
    "PITSTOP_RUN_ID", "PITSTOP_SUPERVISOR",
)
"""Names a caller may not set with ``--env`` (case-insensitive; a trailing ``*`` is a prefix).

Whoever can enqueue a run picks only the script's arguments and plain data; these would let them
run any program on the build machine instead (``BASH_ENV='$(...)'``, ``LD_PRELOAD``,
``PATH=/tmp/evil``). The worker's own values (the parent environment allowlist) still pass.
"""

NON_INTERACTIVE_ENV: Mapping[str, str] = {
    "NON_INTERACTIVE": "1",
    "CI": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "DEBIAN_FRONTEND": "noninteractive",
    "PIP_NO_INPUT": "1",
    "PYTHONUNBUFFERED": "1",
}


class ScriptPolicy:
    """The path, interpreter and environment rules for one set of allowed roots."""

    def __init__(self, *, allowed_roots: Sequence[Path | str] | None = None,
                 env_allowlist: Sequence[str] = DEFAULT_ENV_ALLOWLIST,
                 protected_env: Sequence[str] = PROTECTED_ENV, redactor: Redactor,
                 host: str) -> None:
        roots = [Path.cwd()] if allowed_roots is None else [Path(r) for r in allowed_roots]
        if not roots:
            raise ValidationError("allowed_roots is empty: no script could ever run")
        self.allowed_roots: tuple[Path, ...] = tuple(r.expanduser().resolve() for r in roots)
        self.env_allowlist = tuple(env_allowlist)
        self.protected_env = tuple(protected_env)
        self.redactor = redactor
        self.host = host

    def resolve_workdir(self, cwd: str | Path) -> Path:
        """The real path of an existing working directory inside the allowed roots."""
        try:
            found = Path(cwd).resolve(strict=True)
        except (OSError, ValueError, RuntimeError):
            raise ScriptError(f"working directory {cwd} does not exist") from None
        if not found.is_dir():
            raise ScriptError(f"working directory {cwd} is not a directory")
        if not any(found.is_relative_to(root) for root in self.allowed_roots):
            raise PathNotAllowed(f"working directory {found} is outside the allowed roots "
                                 f"({self._roots_text()})")
        return found

    def resolve_script(self, path: str | Path) -> Path:
        """The real path of an allowed script, or :class:`PathNotAllowed`.

        A relative path is looked up in the current directory, then in each allowed root. The
        resolved path (symlinks followed) must be a regular file inside an allowed root, and no
        name may start with ``-``.
        """
        given = Path(path)
        if not str(path) or given.name.startswith("-"):
            raise PathNotAllowed(f"refusing script name {str(path)!r}: empty or starts with '-'")
        candidates = [given] if given.is_absolute() else [
            Path.cwd() / given, *(root / given for root in self.allowed_roots)]
        # A path that climbs out with ".." or is absolute is refused as outside the roots even
        # when nothing exists there: the answer must not depend on what the worker's disk holds.
        escapes = given.is_absolute() or os.path.normpath(given).startswith("..")
        resolved: Path | None = None
        outside: Path | None = None
        for candidate in candidates:
            try:
                found = candidate.resolve(strict=True)
            except (OSError, ValueError, RuntimeError):  # missing, NUL byte, symlink loop
                if escapes and outside is None:
                    lexical = Path(os.path.normpath(candidate.absolute()))
                    if not self._inside_roots(lexical):
                        outside = lexical
                continue
            if self._inside_roots(found):
                resolved = found
                break
            outside = outside or found
        if resolved is None and outside is not None:
            raise PathNotAllowed(f"script {str(path)!r} resolves to {outside}, outside the "
                                 f"allowed roots {self._roots_text()}")
        if resolved is None:
            raise PathNotAllowed(f"script not found: {str(path)!r}"
                                 + ("" if given.is_absolute() else
                                    f" (looked in the current directory and {self._roots_text()})"))
        if resolved.name.startswith("-"):
            raise PathNotAllowed(f"refusing script {resolved}: its name starts with '-'")
        if not resolved.is_file():
            raise PathNotAllowed(f"{resolved} is not a regular file")
        return resolved

    def _inside_roots(self, path: Path) -> bool:
        return any(path.is_relative_to(root) for root in self.allowed_roots)

    def command_for(self, script: Path, args: Sequence[str], *,
                    search_path: str | None = None) -> list[str]:
        """The argv that runs ``script``: by extension, else the executable itself.

        ``search_path`` is the PATH interpreters are looked up in (default: this process's).
        """
        for arg in args:
            if not isinstance(arg, str):
                raise ValidationError(f"script arguments must be strings, got {arg!r}")
        suffix = script.suffix.lower()
        if suffix == ".py":
            return [sys.executable, str(script), *args]
        if suffix == ".sh":
            return [self._interpreter(("bash",), script, search_path), str(script), *args]
        if suffix == ".ps1":
            shell = self._interpreter(("pwsh", "powershell"), script, search_path)
            return [shell, "-NonInteractive", "-NoProfile", "-File", str(script), *args]
        if _POSIX and not os.access(script, os.X_OK):
            raise PathNotAllowed(f"{script} is not executable and has no known extension "
                                 "(.py, .sh, .ps1): chmod +x it or rename it")
        return [str(script), *args]

    def child_env(self, env: Mapping[str, str] | None = None,
                  parent: Mapping[str, str] | None = None) -> dict[str, str]:
        """The script's environment: allowlisted parent names, non-interactive flags, ``env``.

        Values of secret-looking names are registered with the redactor.
        """
        source = os.environ if parent is None else parent
        exact = {n for n in self.env_allowlist if not n.endswith("*")}
        prefixes = tuple(n[:-1] for n in self.env_allowlist if n.endswith("*"))
        child = {k: v for k, v in source.items() if k in exact or k.startswith(prefixes)}
        child.update(NON_INTERACTIVE_ENV)
        check_caller_env(env or {}, self.protected_env)
        child.update(env or {})
        self.redactor.add_secrets_from(child)
        return child

    def _interpreter(self, names: Sequence[str], script: Path, search_path: str | None) -> str:
        for name in names:
            found = shutil.which(name, path=search_path)
            if found:
                return found
        raise InterpreterNotFound(
            f"cannot run {script.name}: {' or '.join(names)} is not installed or not on PATH"
            f" of this machine ({self.host})")

    def _roots_text(self) -> str:
        return ", ".join(str(r) for r in self.allowed_roots)


def check_caller_env(env: Mapping[str, str], protected: Sequence[str] = PROTECTED_ENV) -> None:
    """Refuse (:class:`ValidationError`) a caller's ``--env`` that is malformed or names a
    ``protected`` variable; the message never holds a value."""
    refused = []
    for name, value in env.items():
        if (not isinstance(name, str) or not isinstance(value, str) or not name
                or "=" in name or "\0" in name or "\0" in value):
            raise ValidationError(f"environment entries must be non-empty strings without '=' "
                                  f"or NUL in the name: {name!r}")
        if _protected(name, protected):
            refused.append(name)
    if refused:
        raise ValidationError(
            f"--env {', '.join(sorted(refused))}: may not be set by whoever enqueues a run (it "
            "would make the build machine run other code than the script); set it in the "
            "worker's environment or inside the script")


def _protected(name: str, protected: Sequence[str]) -> bool:
    upper = name.upper()
    return any(upper.startswith(p[:-1].upper()) if p.endswith("*") else upper == p.upper()
               for p in protected)
