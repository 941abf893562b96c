"""``deploy``: the Celery shell around :class:`pitstop.deploy.Deployer`.

``deploy(deployment_id=ID)`` runs a deployment the CLI recorded (``pitstop deploy ENV --version V
--queue Q``: the machine consuming ``Q`` runs the commands); ``deploy(env=ENV, version=V)``
requests and runs one (an environment that needs approval returns it ``awaiting_approval``:
``pitstop deploy approve ID`` then runs it). Returns the deployment record. A refused
deployment (another holds the environment) is not retried: the record says so.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task

from pitstop.deploy import configured_deployer
from pitstop.kernel.constants import TASK_DEPLOY
from pitstop.kernel.errors import DeployError, ValidationError
from workers import context


@shared_task(name=TASK_DEPLOY, bind=True, acks_late=True, reject_on_worker_lost=False,
             throws=(DeployError, ValidationError))
def deploy(self: Task, deployment_id: str | None = None, env: str | None = None,
           version: str | None = None, by: str = "task", trigger: str | None = None,
           rollback_to: str | None = None, rollback: bool = False) -> dict[str, Any]:
    deployer = configured_deployer(context.settings(), context.redis_client(), context.bus(),
                                   context.new_redactor())
    origin = trigger or f"task:{self.request.id}"
    if deployment_id is not None:
        return deployer.execute(deployment_id)
    if env is None:
        raise ValidationError("deploy needs deployment_id, or env (and version)")
    if rollback:
        return deployer.rollback(env, to=rollback_to, by=by, trigger=origin)
    if version is None:
        raise ValidationError("deploy needs a version")
    return deployer.deploy(env, version, by=by, trigger=origin)
