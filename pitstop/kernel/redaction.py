"""Secret redaction for everything pitstop writes: state logs, events, run records, output.

A :class:`Redactor` knows secret *values* (from the environment or given) and secret *names*
(fnmatch patterns such as ``*TOKEN*``). ``redact_text`` removes known values, credentials in URLs,
``Authorization`` header values and ``NAME=value`` / ``"name": "value"`` pairs whose name is a
secret name. Each pass is guarded by a cheap check, so lines that cannot hold a secret cost little.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_SECRET_NAME_PATTERNS: tuple[str, ...] = (
    "*TOKEN*",
    "*SECRET*",
    "*PASSWORD*",
    "*PASSWD*",
    "*PASSPHRASE*",
    "*API_KEY*",
    "*APIKEY*",
    "*ACCESS_KEY*",
    "*PRIVATE_KEY*",
    "*CREDENTIAL*",
    "*WEBHOOK_URL*",
    "*AUTH*",
    "*COOKIE*",
    "*SESSION_KEY*",
    # Suffixes and words with a separator in front, so ordinary words and CI's own names stay
    # readable: not PWD/OLDPWD (directories), PATH, KEYBOARD, BYPASS, automake's "PASS: test".
    "*_PASS",  # DB_PASS, SMTP_PASS
    "*_PWD",  # MYSQL_PWD
    "*_KEY",  # SSH_KEY, SIGNING_KEY, LICENSE_KEY (not CACHE_KEY & co, see the words below)
    "*DSN*",  # SENTRY_DSN, DATABASE_DSN
    "*_PAT",  # GH_PAT, AZURE_DEVOPS_PAT (a personal access token)
)
"""Names (case-insensitive fnmatch; ``-`` and ``.`` count as ``_``) whose values are secrets."""

DEFAULT_NON_SECRET_WORDS: tuple[str, ...] = (
    "AUTHOR", "AUTHORS", "XAUTHORITY",
    "CACHE_KEY", "PUBLIC_KEY", "PRIMARY_KEY", "SORT_KEY", "PARTITION_KEY",
)
"""Whole words removed from a name before matching, so ``GIT_AUTHOR_NAME`` or ``Author:`` (git log)
are not taken for ``*AUTH*`` while ``GIT_AUTHOR_TOKEN`` and ``Authorization`` still are; likewise
``CACHE_KEY`` or ``SSH_PUBLIC_KEY`` are not taken for ``*_KEY``."""

_SECRET_FLAG_NAMES = frozenset({"pass", "pat"})
"""Flag names that are secrets although, as variable names, they are too common to be
(``--pass X``, ``--pat X``; ``PASS: test_x`` is automake's test log)."""
_FLAG_NAME_NOT_A_VALUE = ("_stdin",)
"""A secret-named flag ending so takes no value (``docker login --password-stdin``)."""
_FLAG_VALUE_NOT_A_SECRET = ("_file", "_path", "_dir", "_env", "_var", "_name", "_type")
"""A secret-named flag ending so is given where the secret is, not the secret
(``--token-file PATH``): its value is hidden in the arguments but not learnt as a secret."""
_FLAG_RE = re.compile(r"(?P<dashes>-{1,2})?(?P<name>[A-Za-z_][\w.-]*)(?:=(?P<value>.*))?",
                      re.DOTALL)

REDACTED = "***"

# Values of secret-named environment variables that are flags, not secrets (AUTH_ENABLED=true):
# registering them would blank every "true".
_NOT_SECRET_VALUES = frozenset(
    {"true", "false", "yes", "no", "none", "null", "on", "off", "enabled", "disabled"}
)

_JSON_LITERALS = frozenset({"null", "true", "false", "none"})

# NAME=value, NAME: value, "name": "value", 'name'='value', --name=value. Keys are found on their
# own, so a pair inside another pair's value (https://h/?token=x) is still seen; the name cannot
# start in the middle of a word and the possessive quantifier keeps long words linear.
_KEY_RE = re.compile(
    r"""(?<![\w.-])(?P<kq>["'])?(?P<name>[\w.-]++)(?(kq)(?P=kq))(?P<sep>[ \t]*[=:][ \t]*)"""
)
_VALUE_TEMPLATE = r"""
    "(?P<dq>(?:\\.|[^"\\\n])*)"
  | '(?P<sq>(?:\\.|[^'\\\n])*)'
  | (?P<oq>["']?)(?P<scheme>(?:bearer|basic|token|digest|negotiate|ntlm|apikey)[ \t]+)?
    (?P<val>[^\s"',;&STOP]+)
"""
_VALUE_RE = re.compile(_VALUE_TEMPLATE.replace("STOP", ""), re.VERBOSE | re.IGNORECASE)
# After a quoted key (JSON, a dict repr) an unquoted value also ends at "}" or "]".
_VALUE_AFTER_QUOTED_KEY_RE = re.compile(
    _VALUE_TEMPLATE.replace("STOP", "}\\]"), re.VERBOSE | re.IGNORECASE
)

# scheme://user:password@host and scheme://token@host.
_URL_CRED_RE = re.compile(
    r"(?<![A-Za-z0-9+.-])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)"
    r"(?P<user>[^\s/?#@:\"'<>]*)(?::(?P<pw>[^\s/?#\"'<>]*))?@"
)
# A user name alone is a token (https://ghp_xxx@github.com) except the usual ssh login (git@host).
_SSH_SCHEMES = frozenset({"ssh://", "git+ssh://", "ssh+git://", "sftp://", "scp://"})
_SSH_USER_MAX = 20

# A bearer token outside a header (curl -v output, logged requests); must look like a token.
_BEARER_RE = re.compile(
    r"\b(?P<scheme>bearer[ \t]+)(?=[A-Za-z]*[0-9._~+/-])(?P<tok>[A-Za-z0-9._~+/-]{8,}=*)",
    re.IGNORECASE,
)


def _normalize_name(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


def _literal_core(pattern: str) -> str:
    """The longest wildcard-free run of an fnmatch pattern ("" when there is none)."""
    parts = re.split(r"[*?]|\[[^\]]*\]", pattern)
    return max(parts, key=len) if parts else ""


class Redactor:
    """Removes secrets from text and JSON-like values.

    Secret values shorter than ``min_secret_length`` (or made only of ``*``) are ignored: they would
    blank ordinary words. ``from_environ`` also skips flag values such as ``true`` or ``off``.
    """

    def __init__(
        self,
        secrets: Iterable[str] = (),
        secret_names: Iterable[str] = DEFAULT_SECRET_NAME_PATTERNS,
        min_secret_length: int = 4,
        *,
        non_secret_words: Iterable[str] = DEFAULT_NON_SECRET_WORDS,
    ) -> None:
        self.min_secret_length = max(1, min_secret_length)
        self._names = tuple(secret_names)
        self._secrets: set[str] = set()
        self._secret_re: re.Pattern[str] | None = None
        self._name_cache: dict[str, bool] = {}
        if self._names:
            self._name_re: re.Pattern[str] | None = re.compile(
                "|".join(f"(?:{fnmatch.translate(_normalize_name(p))})" for p in self._names),
                re.IGNORECASE,
            )
            cores = [_normalize_name(_literal_core(p)).lower() for p in self._names]
            # A line holding no core cannot hold a secret-named pair: skip that pass.
            self._name_cores: tuple[str, ...] | None = tuple(cores) if all(cores) else None
        else:
            self._name_re = None
            self._name_cores = ()
        words = sorted({w.lower() for w in non_secret_words if w}, key=len, reverse=True)
        self._non_secret_re = (
            re.compile("|".join(re.escape(w) for w in words), re.IGNORECASE) if words else None
        )
        for value in secrets:
            self._add(value)
        self._rebuild()

    @classmethod
    def from_environ(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        extra_names: Iterable[str] = (),
        extra_secrets: Iterable[str] = (),
    ) -> Redactor:
        """A redactor knowing the values of every variable whose name is a secret name."""
        env = os.environ if environ is None else environ
        redactor = cls(secret_names=(*DEFAULT_SECRET_NAME_PATTERNS, *extra_names))
        redactor.add_secrets_from(env)
        for value in extra_secrets:
            redactor._add(value)
        redactor._rebuild()
        return redactor

    @property
    def secrets(self) -> frozenset[str]:
        return frozenset(self._secrets)

    def add_secrets_from(self, environ: Mapping[str, str]) -> None:
        """Remember the values of secret-named variables; flag values (``true``, ``off`` …) are
        not secrets and would blank every such word in the output."""
        added = False
        for name, value in environ.items():
            if (isinstance(value, str) and self.is_secret_name(name)
                    and value.strip().lower() not in _NOT_SECRET_VALUES):
                added = self._add(value) or added
        if added:
            self._rebuild()

    def add_secret(self, value: str) -> None:
        """Remember ``value`` (and each line of a multi-line value) as a secret."""
        if self._add(value):
            self._rebuild()

    def _add(self, value: str) -> bool:
        if not isinstance(value, str):
            return False
        # Stripped, so the whitespace around a secret survives it; unless the core alone is
        # too short to count as a secret, then the value as given.
        core = value.strip()
        candidates = {core if len(core) >= self.min_secret_length else value}
        if "\n" in value:
            candidates.update(line.strip() for line in value.splitlines())
        added = False
        for item in candidates:
            if (
                len(item) >= self.min_secret_length
                and item.strip("*")
                and item not in self._secrets
            ):
                self._secrets.add(item)
                added = True
        return added

    def _rebuild(self) -> None:
        if not self._secrets:
            self._secret_re = None
            return
        ordered = sorted(self._secrets, key=lambda s: (-len(s), s))
        self._secret_re = re.compile("|".join(re.escape(s) for s in ordered))

    def is_secret_name(self, name: str) -> bool:
        """Whether ``name`` matches a secret-name pattern (case-insensitive; ``-`` and ``.``
        count as ``_``, so ``x-api-key`` is an API key)."""
        cached = self._name_cache.get(name)
        if cached is not None:
            return cached
        result = False
        if self._name_re is not None:
            bare = self._strip_non_secret_words(_normalize_name(name))
            result = self._name_re.match(bare) is not None
        if len(self._name_cache) > 4096:
            self._name_cache.clear()
        self._name_cache[name] = result
        return result

    def _strip_non_secret_words(self, name: str) -> str:
        """Remove whole non-secret words: ``Author``, ``GIT_AUTHOR_NAME``, ``authorName``, but not
        the ``AUTHOR`` in ``Authorization``."""
        if self._non_secret_re is None:
            return name
        kept: list[str] = []
        pos = 0
        for m in self._non_secret_re.finditer(name):
            word = m.group(0)
            before = name[m.start() - 1] if m.start() else ""
            after = name[m.end()] if m.end() < len(name) else ""
            starts_word = not before.isalpha() or (before.islower() and word[0].isupper())
            ends_word = not after.isalpha() or (after.isupper() and not word.isupper())
            if starts_word and ends_word:
                kept.append(name[pos : m.start()])
                pos = m.end()
        kept.append(name[pos:])
        return "".join(kept)

    # --- text -----------------------------------------------------------------------------------

    def redact_text(self, text: str) -> str:
        if not text:
            return text
        if "://" in text and "@" in text:
            text = _URL_CRED_RE.sub(self._url_sub, text)
        lowered: str | None = None
        if "=" in text or ":" in text:
            cores = self._name_cores
            if cores is None:
                text = self._redact_pairs(text)
            elif cores:
                lowered = text.lower()
                folded = lowered.replace("-", "_").replace(".", "_")
                if any(core in folded for core in cores):
                    text = self._redact_pairs(text)
                    lowered = None
        if len(text) >= 15:
            if lowered is None:
                lowered = text.lower()
            if "bearer" in lowered:
                text = _BEARER_RE.sub(_bearer_sub, text)
        # Known values last, until none is left: a replacement can splice a new occurrence
        # together; each round removes a non-"*" character, so this ends.
        secret_re = self._secret_re
        if secret_re is not None:
            while secret_re.search(text) is not None:
                text = secret_re.sub(REDACTED, text)
        return text

    @staticmethod
    def _url_sub(match: re.Match[str]) -> str:
        scheme, user, pw = match.group("scheme", "user", "pw")
        if pw is not None:
            return f"{scheme}{user}:{REDACTED}@" if pw else match.group(0)
        if not user or (scheme.lower() in _SSH_SCHEMES and len(user) < _SSH_USER_MAX):
            return match.group(0)
        return f"{scheme}{REDACTED}@"

    def _redact_pairs(self, text: str) -> str:
        out: list[str] = []
        pos = 0
        for key in _KEY_RE.finditer(text):
            if key.start() < pos or not self.is_secret_name(key.group("name").lstrip("-")):
                continue
            quote = key.group("kq") or ""
            value_re = _VALUE_AFTER_QUOTED_KEY_RE if quote else _VALUE_RE
            value = value_re.match(text, key.end())
            if value is None or value.group(0).startswith(REDACTED):
                continue  # nothing there, or already redacted (https://x-token:***@host)
            replacement = self._value_replacement(value, quote)
            if replacement is None:
                continue
            out.append(text[pos : key.end()])
            out.append(replacement)
            pos = value.end()
        if not out:
            return text
        out.append(text[pos:])
        return "".join(out)

    @staticmethod
    def _value_replacement(value: re.Match[str], key_quote: str) -> str | None:
        if value.group("dq") is not None:
            return f'"{REDACTED}"' if value.group("dq") else None
        if value.group("sq") is not None:
            return f"'{REDACTED}'" if value.group("sq") else None
        if value.group("val").lower() in _JSON_LITERALS:
            return None
        if key_quote == '"' and not value.group("oq"):
            return f'"{REDACTED}"'  # a JSON number stays valid JSON
        return f"{value.group('oq')}{value.group('scheme') or ''}{REDACTED}"

    # --- command-line arguments ------------------------------------------------------------------

    def redact_args(self, args: Iterable[str]) -> list[str]:
        """``args`` as they may be shown (run records, events, logs, task repr).

        The value of a secret-named flag (``--token X``, ``--password=X``, ``--api-key X``,
        Go-style ``-token X``, make-style ``DB_PASS=X``) becomes ``***`` and is remembered as a
        secret, so the script's own output cannot show it either; then every argument goes
        through :meth:`redact_text`. Call it before the script runs.
        """
        items = list(args)
        hidden: set[int] = set()
        added = False
        for index, arg in enumerate(items):
            if not isinstance(arg, str):
                continue
            flag = _FLAG_RE.fullmatch(arg)
            if flag is None or (flag.group("dashes") is None and flag.group("value") is None):
                continue  # a plain word, not a flag or NAME=value
            name = _normalize_name(flag.group("name")).lower()
            if name.startswith("no_") or not (self.is_secret_name(name)
                                              or name in _SECRET_FLAG_NAMES):
                continue
            value = flag.group("value")
            if value is None:
                if flag.group("dashes") is None or name.endswith(_FLAG_NAME_NOT_A_VALUE):
                    continue
                if index + 1 >= len(items) or items[index + 1] == "--":
                    continue
                hidden.add(index + 1)
                value = items[index + 1]
            if (isinstance(value, str) and not name.endswith(_FLAG_VALUE_NOT_A_SECRET)
                    and not value.startswith("--")
                    and value.strip().lower() not in _NOT_SECRET_VALUES):
                added = self._add(value) or added
        if added:
            self._rebuild()
        shown: list[str] = []
        for index, arg in enumerate(items):
            if index in hidden:
                shown.append(REDACTED)
            elif isinstance(arg, str):
                shown.append(self.redact_text(arg))
            else:
                shown.append(arg)
        return shown

    # --- values ---------------------------------------------------------------------------------

    def redact(self, value: Any) -> Any:
        """A redacted deep copy of ``value`` (dicts, lists, tuples and strings; others as they are).

        A value under a secret-named key becomes ``REDACTED`` unless it is None, empty or a bool.
        """
        if isinstance(value, str):
            return self.redact_text(value)
        if isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                new_key = self.redact_text(key) if isinstance(key, str) else key
                if (
                    item is not None
                    and item != ""
                    and not isinstance(item, bool)
                    and (not isinstance(item, list | tuple | dict) or item)
                    and self.is_secret_name(str(key))
                ):
                    out[new_key] = REDACTED
                else:
                    out[new_key] = self.redact(item)
            return out
        if isinstance(value, list):
            return [self.redact(item) for item in value]
        if isinstance(value, tuple):
            return tuple(self.redact(item) for item in value)
        return value


def _bearer_sub(match: re.Match[str]) -> str:
    return f"{match.group('scheme')}{REDACTED}"
