"""Secret step params in run records: sealed at launch, opened by the worker that runs the step.

A step kind marks params that may hold secrets (``run`` marks ``env``) in ``sealed_params``. A
run record carries its workstream's definition, so without this a ``DEPLOY_TOKEN`` from the
config would sit in Redis in the clear. With the shared key (``PITSTOP_SECRET_KEY``) such a param
becomes ``{"__sealed__": token}``, bound to the launch, workstream, step and param; without a key,
a secret-named variable there is refused (as ``pitstop run --env`` refuses it).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from pitstop.kernel.errors import ConfigError
from pitstop.kernel.redaction import Redactor
from pitstop.kernel.sealing import Sealer
from pitstop.workstreams.spec import StepSpec, WorkstreamSpec
from pitstop.workstreams.steps import StepKind

__all__ = ["SEALED", "seal_spec", "unseal_params"]

SEALED = "__sealed__"
"""A sealed param is ``{"__sealed__": token}`` inside the run record."""


def _binding(root: str, workstream_id: str, step_id: str, name: str) -> dict[str, Any]:
    return {"launch": root, "workstream": workstream_id, "step": step_id, "param": name}


def seal_spec(spec: WorkstreamSpec, *, root: str, kinds: dict[str, StepKind],
              sealer: Sealer | None, redactor: Redactor) -> WorkstreamSpec:
    """``spec`` (and its sub-workstreams) with the marked params sealed for launch ``root``.

    Raises :class:`ConfigError` when there is no key and a marked param names a secret."""

    def seal_step(ws: WorkstreamSpec, step: StepSpec) -> StepSpec:
        params = dict(step.params)
        for name in getattr(kinds.get(step.kind), "sealed_params", ()):
            values = params.get(name)
            if not isinstance(values, dict) or not values:
                continue
            if sealer is None:
                secret = sorted(str(k) for k in values if redactor.is_secret_name(str(k)))
                if secret:
                    raise ConfigError(
                        f"step {step.id} of {ws.id} sets secret variable(s) {', '.join(secret)}"
                        ": they travel encrypted through Redis, with a key launchers and workers "
                        "share: set PITSTOP_SECRET_KEY (pitstop keygen)", key_path="secret_key")
                continue
            text = {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
            params[name] = {SEALED: sealer.seal(text, bound_to=_binding(root, ws.id, step.id,
                                                                          name))}
        return replace(step, params=params)

    def seal(ws: WorkstreamSpec) -> WorkstreamSpec:
        return replace(
            ws, stages=tuple(tuple(seal_step(ws, s) for s in st) for st in ws.stages),
            on_failure=tuple(tuple(seal_step(ws, s) for s in st) for st in ws.on_failure),
            subs={key: seal(sub) for key, sub in ws.subs.items()})

    return seal(spec)


def unseal_params(step: StepSpec, *, root: str, workstream_id: str,
                  sealer: Sealer | None) -> dict[str, Any]:
    """The step's params with sealed values opened. Raises :class:`ConfigError` without a key,
    or the sealer's error for a token bound to another launch."""
    params = dict(step.params)
    for name, value in step.params.items():
        if isinstance(value, dict) and set(value) == {SEALED}:
            if sealer is None:
                raise ConfigError("this step's params are encrypted but this worker has no "
                                  "PITSTOP_SECRET_KEY to decrypt them", key_path="secret_key")
            params[name] = sealer.unseal(str(value[SEALED]),
                                         bound_to=_binding(root, workstream_id, step.id, name))
    return params
