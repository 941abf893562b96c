"""Celery task shells: serialization, retries and routing only; the logic lives in ``pitstop``."""
