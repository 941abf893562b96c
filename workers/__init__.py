"""The Celery side of pitstop: the app, its configuration, per-process context and Beat."""
