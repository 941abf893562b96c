"""Sealing secret values for the trip through Redis.

``pitstop run --env DEPLOY_TOKEN`` (or ``-- --token X``) must hand the token to a worker on
another machine, but the task message sits in a Redis list and in its append-only file. Values of
secret-named variables and secret arguments are therefore encrypted (Fernet: AES-128-CBC +
HMAC-SHA256) with a key that CI and workers share (``PITSTOP_SECRET_KEY``) and Redis never sees.
With the embedded Redis on one machine, a key is created on first use in
``<state_dir>/secret.key`` (mode 0600).

A token is bound to what it was sealed for (the run id, script, arguments and working
directory): copied out of Redis into another task message, it does not decrypt there, so the
secrets cannot be handed to a script of someone else's choosing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from pitstop.kernel.errors import ConfigError, ScriptError
from pitstop.kernel.statelog import private_dir

KEY_FILE = "secret.key"


def generate_key() -> str:
    return Fernet.generate_key().decode()


class Sealer:
    """Encrypts a mapping of secret values into one token, and back."""

    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError("the secret key is not a valid key: make one with "
                              "`pitstop keygen`", key_path="secret_key") from None

    def seal(self, values: Mapping[str, str], *, bound_to: Mapping[str, Any] | None = None) -> str:
        """One token holding ``values``, usable only by an :meth:`unseal` given equal
        ``bound_to`` (JSON-compatible)."""
        document = {"values": dict(values), "bound_to": _canonical(bound_to)}
        return self._fernet.encrypt(json.dumps(document).encode()).decode()

    def unseal(self, token: str, *, bound_to: Mapping[str, Any] | None = None) -> dict[str, str]:
        try:
            document = json.loads(self._fernet.decrypt(token.encode()))
        except (InvalidToken, ValueError):
            raise ScriptError(
                "cannot decrypt the secret values (--env, secret arguments): the worker's "
                "PITSTOP_SECRET_KEY is not the one the run was enqueued with") from None
        if not isinstance(document, dict) or document.get("bound_to") != _canonical(bound_to):
            raise ScriptError("the encrypted values were sealed for another run, script, "
                              "arguments or part of the message: refusing to hand them to this "
                              "one")
        values = document.get("values")
        if not isinstance(values, dict):
            raise ScriptError("the encrypted values are malformed")
        return {str(name): str(value) for name, value in values.items()}


def _canonical(bound_to: Mapping[str, Any] | None) -> str:
    return json.dumps(dict(bound_to or {}), sort_keys=True, separators=(",", ":"))


def key_file_sealer(state_dir: Path, *, create: bool) -> Sealer | None:
    """The sealer of ``<state_dir>/secret.key``; created (0600) when missing and ``create``.

    The key is written to a private temporary file and linked into place, so a concurrent
    reader sees either no key file or a complete one, and the first creator wins.
    """
    path = state_dir / KEY_FILE
    try:
        return Sealer(path.read_bytes().strip())
    except FileNotFoundError:
        if not create:
            return None
    private_dir(state_dir)
    key = generate_key()
    fd, temporary = tempfile.mkstemp(dir=state_dir, prefix=".secret-key-")  # mode 0600
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
        os.link(temporary, path)
    except FileExistsError:  # another process made it first: use theirs
        return Sealer(path.read_bytes().strip())
    finally:
        os.unlink(temporary)
    return Sealer(key)
