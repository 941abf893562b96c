"""Triggers: rules that turn events and schedule slots into workstream launches, and the router
that applies them inside every worker (see docs/triggers.md)."""

from pitstop.triggers.conditions import Condition, parse_condition
from pitstop.triggers.config import Catalog, TriggerConfig, parse_triggers
from pitstop.triggers.decisions import Decision
from pitstop.triggers.engine import TriggerEngine
from pitstop.triggers.router import Router
from pitstop.triggers.rules import Rule
from pitstop.triggers.schedules import ScheduleTicker, next_slot, parse_cron
from pitstop.triggers.source import ConfigSource, LoadedConfig
from pitstop.triggers.state import TriggerState

__all__ = ["Catalog", "Condition", "ConfigSource", "Decision", "LoadedConfig", "Router", "Rule",
           "ScheduleTicker", "TriggerConfig", "TriggerEngine", "TriggerState", "next_slot",
           "parse_condition", "parse_cron", "parse_triggers"]
