"""pitstop's own web view, served by ``pitstop serve`` under ``/ui``: live events and their
traces, runs and workstream graphs, triggers, alerts, triage and the fleet, behind a login.

``web_routes(WebDeps(...))`` gives the routes to mount; ``hash_password`` makes the password
hashes ``config/web.yaml`` holds.
"""

from pitstop.web.app import create_web_app, web_routes
from pitstop.web.config import TOKEN_USER, WebConfig, WebUser, load_web_config
from pitstop.web.context import WebDeps
from pitstop.web.passwords import hash_password, verify_password

__all__ = ["TOKEN_USER", "WebConfig", "WebDeps", "WebUser", "create_web_app", "hash_password",
           "load_web_config", "verify_password", "web_routes"]
