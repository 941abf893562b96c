"""Alerting: severity routing of failure events to Slack, e-mail, webhooks and the log, with
grouping, throttling, silences, inhibition, acknowledgement, escalation and a daily summary."""

from pitstop.alerts.config import AlertsConfig, Route, load_alerts_config, parse_alerts_config
from pitstop.alerts.delivery import Deliverer, Outcome
from pitstop.alerts.engine import AlertEngine, Decision, Silence
from pitstop.alerts.ledger import DeliveryLedger
from pitstop.alerts.manager import AlertManager
from pitstop.alerts.model import Alert
from pitstop.alerts.runtime import AlertsRuntime, ManagerThread
from pitstop.alerts.store import AlertStore

__all__ = ["Alert", "AlertEngine", "AlertManager", "AlertStore", "AlertsConfig", "AlertsRuntime",
           "Decision", "Deliverer", "DeliveryLedger", "ManagerThread", "Outcome", "Route",
           "Silence", "load_alerts_config", "parse_alerts_config"]
