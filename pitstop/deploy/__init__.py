"""Deployments: deploy a version to an environment, smoke-check it, roll back automatically,
wait for approvals (``config/deployments.yaml``; see :mod:`pitstop.deploy.service`)."""

from pitstop.deploy.checks import HttpProbe, ScriptStep, SmokeSuite, StepOutcome
from pitstop.deploy.config import (
    DeploymentsConfig,
    EnvironmentConfig,
    check_environment_name,
    check_version,
    load_deployments,
)
from pitstop.deploy.lock import EnvironmentLock, Lease
from pitstop.deploy.runtime import configured_deployer
from pitstop.deploy.service import FINAL_STATUSES, Deployer, default_identity
from pitstop.deploy.store import DeployStore, EnvironmentState

__all__ = ["FINAL_STATUSES", "DeployStore", "Deployer", "DeploymentsConfig", "EnvironmentConfig",
           "EnvironmentLock", "EnvironmentState", "HttpProbe", "Lease", "ScriptStep", "SmokeSuite",
           "StepOutcome", "check_environment_name", "check_version", "configured_deployer",
           "default_identity", "load_deployments"]
