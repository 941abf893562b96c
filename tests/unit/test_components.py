"""The shared objects built from settings: what the settings actually change."""

from __future__ import annotations

from pathlib import Path

import fakeredis

from pitstop import components
from pitstop.kernel.settings import load_settings


def test_bus_consumers_default_to_the_configured_delivery_limits(tmp_path: Path) -> None:
    (tmp_path / "pitstop.yaml").write_text("bus:\n  max_deliveries: 2\n  claim_idle_ms: 1500\n")
    settings = load_settings(tmp_path, environ={"PITSTOP_STATE_DIR": str(tmp_path)})
    bus = components.event_bus(fakeredis.FakeRedis(), settings)
    consumer = bus.consumer("router", "c1")
    assert (consumer.max_deliveries, consumer.claim_idle_ms) == (2, 1500)
    explicit = bus.consumer("router", "c2", max_deliveries=7, claim_idle_ms=0)
    assert (explicit.max_deliveries, explicit.claim_idle_ms) == (7, 0)
