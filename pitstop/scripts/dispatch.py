"""Enqueueing a script run: the run record, the sealed secrets and the task message.

Used by ``pitstop run``, and meant for anything else that launches scripts (a workstream step). It
never imports Celery: the caller hands in ``send``, which is ``celery_app.send_task``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from pitstop.kernel.constants import (
    EXPIRES_SLACK_SECONDS,
    QUEUE_NAME_PATTERN,
    RUN_KIND_SCRIPT,
    RUN_TTL_SECONDS,
    TASK_RUN_SCRIPT,
)
from pitstop.kernel.errors import ConfigError, ValidationError
from pitstop.kernel.redaction import REDACTED, Redactor
from pitstop.kernel.sealing import Sealer
from pitstop.kernel.settings import Settings
from pitstop.runs.store import Run, RunStore
from pitstop.scripts.policy import check_caller_env, check_script_path

SendTask = Callable[..., Any]


class ScriptDispatcher:
    """Records a queued run and sends ``run_script`` for it; the run id is the task id.

    The run gets a queue deadline (``queue_timeout``, default ``scripts.queue_ttl_seconds``) on
    Redis's clock: a claim after it, the reaper or the waiting CLI end the run ``expired``. The
    message's ``expires`` is the same span plus :data:`EXPIRES_SLACK_SECONDS`, so a worker whose
    clock disagrees with the sender's never drops a message that is still in time.
    """

    def __init__(self, settings: Settings, runs: RunStore, redactor: Redactor,
                 send: SendTask) -> None:
        self._settings = settings
        self._runs = runs
        self._redactor = redactor
        self._send = send

    def enqueue(self, script: str, args: Sequence[str] = (), *, queue: str | None = None,
                timeout: float | None = None, env: Mapping[str, str] | None = None,
                cwd: str | None = None, idempotent: bool = False,
                trace_id: str | None = None, queue_timeout: float | None = None,
                secret_env: Collection[str] = ()) -> Run:
        """Validate, record and send. Raises ValidationError / ConfigError / PathNotAllowed
        before anything is recorded or sent.

        The checks that need only this side's config come first (the worker checks again): a
        path that is absolute or climbs out with ``..`` beyond ``scripts.allowed_roots``, a
        malformed queue name, ``--env`` names outside ``scripts.caller_env``.

        ``secret_env`` names the ``env`` values to treat as secrets whatever their names: they
        are redacted from the output like ``*_TOKEN`` values (other values are not).
        """
        scripts = self._settings.scripts
        if script.startswith("-"):
            raise ValidationError(f"script name may not start with '-': {script!r}")
        check_script_path(script, scripts.allowed_roots, cwd=Path.cwd())
        queue = queue or scripts.default_queue
        if not re.fullmatch(QUEUE_NAME_PATTERN, queue):
            raise ValidationError(f"--queue {queue!r}: a queue name is letters, digits, '.', "
                                  "'_' and '-' (at most 100, starting with a letter or digit)")
        if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
            raise ValidationError(f"--timeout {timeout:g}: give a positive number of seconds")
        if timeout is not None and timeout > scripts.max_timeout:
            raise ValidationError(f"--timeout {timeout:g} is over scripts.max_timeout "
                                  f"({scripts.max_timeout:g}s)")
        if queue_timeout is not None and not (math.isfinite(queue_timeout)
                                              and 0 < queue_timeout <= RUN_TTL_SECONDS):
            raise ValidationError(f"--queue-timeout {queue_timeout:g}: give seconds, more than 0 "
                                  f"and at most {RUN_TTL_SECONDS} (as long as runs are kept)")
        queue_ttl = scripts.queue_ttl_seconds if queue_timeout is None else queue_timeout
        env = dict(env or {})
        secret_env = sorted(set(secret_env))
        unset = [name for name in secret_env if name not in env]
        if unset:
            raise ValidationError(f"secret_env names {', '.join(unset)}, which env does not set")
        # The worker checks again, with its own config; this is the early, clear refusal.
        check_caller_env(env, allowed=scripts.caller_env)
        redactor = self._redactor
        redactor.add_secrets_from(env)
        for name in secret_env:
            redactor.add_secret(env[name])
        # Secret flag values (--token X, --password=X) and known secrets become *** in what is
        # stored and shown; the real ones travel sealed, like secret --env values.
        real_args = list(args)
        shown_args = redactor.redact_args(real_args)
        hidden = {str(index): real for index, (real, shown) in
                  enumerate(zip(real_args, shown_args, strict=True)) if real != shown}
        sealer = self._sealer_for(
            sorted(name for name in env if name in secret_env or redactor.is_secret_name(name)),
            shown_args if hidden else None)
        limit = timeout or scripts.default_timeout
        run = self._runs.create_run(
            kind=RUN_KIND_SCRIPT, queue=queue, trace_id=trace_id, queue_ttl=queue_ttl,
            params=redactor.redact({"script": script, "args": shown_args, "cwd": cwd,
                                    "timeout": limit, "env": sorted(env)}),
        )
        # With a key, every --env value travels sealed (a retried message waiting in a worker
        # shows its arguments in the clear to Flower), bound to this run, script and the
        # arguments as sent, and to which names the worker must treat as secret.
        sealed_env = sealed_args = None
        if sealer is not None:
            if env:
                sealed_env = sealer.seal(env, bound_to=seal_binding(
                    run.run_id, script, shown_args, cwd, secret_env=secret_env))
            if hidden:
                sealed_args = sealer.seal(hidden, bound_to=seal_binding(
                    run.run_id, script, shown_args, cwd, part="args"))
        kwargs: dict[str, Any] = {
            "run_id": run.run_id, "script": script, "args": shown_args,
            "env": {} if sealed_env else env, "sealed_env": sealed_env,
            "sealed_args": sealed_args, "secret_env": secret_env, "cwd": cwd, "timeout": limit,
            "idempotent": idempotent, "trace_id": trace_id or run.run_id,
        }
        # What worker logs, task events and Flower show: never an environment value.
        shown = redactor.redact({**kwargs, "env": dict.fromkeys(env, REDACTED),
                                 "sealed_env": REDACTED if sealed_env else None,
                                 "sealed_args": REDACTED if sealed_args else None})
        self._send(TASK_RUN_SCRIPT, kwargs=kwargs, queue=queue, task_id=run.run_id,
                   time_limit=limit + self._settings.celery.time_limit_grace,
                   expires=queue_ttl + EXPIRES_SLACK_SECONDS,
                   kwargsrepr=repr(shown), argsrepr="()")
        return run

    def _sealer_for(self, secret_env: Sequence[str],
                    secret_args: Sequence[str] | None) -> Sealer | None:
        """The sealer, or None when there is no shared key; refuses secret values without one
        (the names of secret ``--env`` values; the shown arguments when some are secret)."""
        sealer = self._settings.sealer()
        if sealer is not None:
            return sealer
        how = ("they are encrypted on their way through Redis, with a key CI and workers share: "
               "set PITSTOP_SECRET_KEY on both (make one with `pitstop keygen`)")
        if secret_env:
            raise ConfigError(f"--env {', '.join(secret_env)}: secret values: {how}",
                              key_path="secret_key")
        if secret_args is not None:
            shown = " ".join(secret_args)
            shown = shown if len(shown) <= 200 else shown[:199] + "…"
            raise ConfigError(f"the script's arguments hold secret values ({shown}): {how}",
                              key_path="secret_key")
        return None


def seal_binding(run_id: str, script: str, args: list[str], cwd: str | None, *,
                 part: str = "env", secret_env: Sequence[str] = ()) -> dict[str, Any]:
    """What sealed values are bound to: the worker unseals them only for the same run, script,
    arguments as sent (secret ones shown as ``***``) and working directory, in the same
    ``part`` of the message (``env`` or ``args``), with the same names marked secret."""
    return {"run_id": run_id, "script": script, "args": args, "cwd": cwd, "part": part,
            "secret_env": sorted(secret_env)}
