"""Test triage (placeholder while the package is being built)."""
