"""What a script may be, and what it sees: the rules a worker applies before anything runs.

* **Paths.** A script must resolve (symlinks followed) to a regular file inside an allowed root,
  and no name may start with ``-``; a working directory likewise. A path that climbs out with
  ``..`` or is absolute is refused as outside even when nothing exists there.
* **Interpreters.** ``.py`` runs with this Python, ``.sh`` with bash, ``.ps1`` with ``pwsh``
  (or ``powershell``) ``-NonInteractive -NoProfile -File``, anything else executable directly.
* **Environment.** Allowlisted names from the worker's environment, non-interactive flags, then
  the caller's ``env``: on a worker only names its ``scripts.caller_env`` allows (plain CI data
  such as ``GIT_SHA`` or ``BUILD_NUMBER``, never ``CC``, ``HOME`` or ``MAKEFLAGS``), and never,
  allowed or not, names that would run other code (:data:`PROTECTED_ENV`).
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

from pitstop.kernel.constants import DEFAULT_CALLER_ENV, DEFAULT_ENV_ALLOWLIST, ENV_NAME_PATTERN
from pitstop.kernel.errors import InterpreterNotFound, PathNotAllowed, ScriptError, ValidationError
from pitstop.kernel.redaction import Redactor

__all__ = [
    "DEFAULT_CALLER_ENV",
    "DEFAULT_ENV_ALLOWLIST",
    "NON_INTERACTIVE_ENV",
    "PROTECTED_ENV",
    "ScriptPolicy",
    "check_caller_env",
    "check_script_path",
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
    "GIT_DIR", "GIT_WORK_TREE", "GIT_COMMON_DIR",  # a repository whose config runs fsmonitor
    # libraries and toolchains that load code named in these
    "OPENSSL_CONF", "OPENSSL_MODULES", "OPENSSL_ENGINES", "PYTHONPYCACHEPREFIX", "LUA_INIT*",
    "LUA_PATH*", "LUA_CPATH*", "DOTNET_STARTUP_HOOKS", "DOTNET_ADDITIONAL_DEPS",
    "CORECLR_PROFILER*", "COR_PROFILER*", "RUSTC_WRAPPER", "RUSTC_WORKSPACE_WRAPPER",
    # version managers pick the interpreter or compiler that runs (PYENV_VERSION …)
    "PYENV_*", "RBENV_*", "NODENV_*", "GOENV_*", "JENV_*", "PLENV_*", "ASDF_*", "MISE_*",
    "NVM_*", "VOLTA_*", "RUSTUP_*", "SDKMAN_*",
    # pitstop's own markers
    "PITSTOP_RUN_ID", "PITSTOP_SUPERVISOR",
)
"""Names a caller may not set with ``--env`` (case-insensitive; a trailing ``*`` is a prefix).

Whoever can enqueue a run picks only the script's arguments and plain data; these would let them
run any program on the build machine instead (``BASH_ENV='$(...)'``, ``LD_PRELOAD``,
``PATH=/tmp/evil``). The worker's own values (the parent environment allowlist) still pass.
A hard limit: ``scripts.caller_env`` (the allowlist a worker applies) cannot open these.
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
                 protected_env: Sequence[str] = PROTECTED_ENV,
                 caller_env: Sequence[str] | None = None, redactor: Redactor,
                 host: str) -> None:
        """``caller_env``: the names (globs) a caller's ``env`` may set; None for a trusted
        caller (any name but ``protected_env``)."""
        roots = [Path.cwd()] if allowed_roots is None else [Path(r) for r in allowed_roots]
        if not roots:
            raise ValidationError("allowed_roots is empty: no script could ever run")
        self.allowed_roots: tuple[Path, ...] = tuple(r.expanduser().resolve() for r in roots)
        self.env_allowlist = tuple(env_allowlist)
        self.protected_env = tuple(protected_env)
        self.caller_env = None if caller_env is None else tuple(caller_env)
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
        check_caller_env(env or {}, self.protected_env, allowed=self.caller_env)
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


def check_caller_env(env: Mapping[str, str], protected: Sequence[str] = PROTECTED_ENV, *,
                     allowed: Sequence[str] | None = None) -> None:
    """Refuse (:class:`ValidationError`) a caller's ``--env`` that is malformed, names a
    ``protected`` variable, or (``allowed`` given: a caller that is not trusted) is not a plain
    variable name matching one of the ``allowed`` globs. The message never holds a value."""
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
    if allowed is None:
        return
    malformed = sorted(name for name in env if not _ENV_NAME_RE.fullmatch(name))
    if malformed:
        raise ValidationError(f"--env {', '.join(repr(n) for n in malformed)}: a variable name "
                              "is letters, digits and _, and does not start with a digit")
    outside = sorted(name for name in env
                     if not any(fnmatch.fnmatchcase(name, pattern) for pattern in allowed))
    if outside:
        raise ValidationError(
            f"--env {', '.join(outside)}: not a name callers may set (scripts.caller_env); "
            "add it to scripts.caller_env in the workers' config/pitstop.yaml (or "
            "PITSTOP_CALLER_ENV) if it is plain data, or set it in the worker's environment")


_ENV_NAME_RE = re.compile(ENV_NAME_PATTERN)


def check_script_path(script: str, roots: Sequence[Path | str], *, cwd: Path) -> None:
    """Refuse (:class:`PathNotAllowed`) a script path that is absolute or climbs out with
    ``..`` and so lies outside every one of ``roots`` whatever exists there: the fast, early
    answer a sender can give from its own config. Plain relative paths are left to the worker,
    which looks them up in its roots (and checks every path again, symlinks resolved)."""
    given = Path(script)
    if given.is_absolute():
        candidates = [given]
    elif Path(os.path.normpath(given)).parts[:1] == ("..",):
        candidates = [cwd / given, *(Path(root) / given for root in roots)]
    else:
        return
    inside: list[Path] = []
    for root in roots:
        base = Path(root).expanduser()
        inside += [Path(os.path.normpath(base.absolute())), base.resolve()]
    for candidate in candidates:
        lexical = Path(os.path.normpath(candidate.absolute()))
        for form in (lexical, lexical.resolve()):
            if any(form.is_relative_to(root) for root in inside):
                return
    shown = Path(os.path.normpath(candidates[0].absolute()))
    raise PathNotAllowed(f"script {script!r} resolves to {shown}, outside the allowed roots "
                         f"{', '.join(str(r) for r in roots)}")


def _protected(name: str, protected: Sequence[str]) -> bool:
    upper = name.upper()
    return any(upper.startswith(p[:-1].upper()) if p.endswith("*") else upper == p.upper()
               for p in protected)


def _not_an_option(value: str) -> str:
    if value.startswith("-"):
        raise ValueError("a script name may not start with '-'")
    return value


def _as_text(value: Any) -> Any:
    """YAML numbers and booleans among a script's arguments are meant as text (``--jobs 4``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


ScriptName = Annotated[str, Field(min_length=1), AfterValidator(_not_an_option)]
"""A script named in config (a workstream ``run`` step, a deploy step): never an option."""
ScriptText = Annotated[str, BeforeValidator(_as_text)]
"""An argument or environment value of a script named in config, a YAML number or boolean
taken as the text it was written as."""
