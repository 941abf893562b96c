"""The HTTP server: ``POST /events``, GitHub webhooks and health, behind the API token."""

from pitstop.server.app import create_app, serve
from pitstop.server.webhooks import github_events, verify_github_signature

__all__ = ["create_app", "github_events", "serve", "verify_github_signature"]
