"""The outbox's byte bound: from the hours of outage at the site's capture rate, or given."""

from __future__ import annotations

from edge_agent.runtime import MIN_OUTBOX_BYTES, outbox_bytes
from edge_agent.settings import EdgeSettings
from edge_agent.site import load_site
from tests.conftest import ROOT

SITE = ROOT / "deploy" / "demo" / "site.yaml"


def test_the_bound_is_hours_of_outage_at_the_capture_rate_with_a_floor() -> None:
    site = load_site(SITE)
    assert outbox_bytes(EdgeSettings(outbox_hours=72), site) > MIN_OUTBOX_BYTES
    assert outbox_bytes(EdgeSettings(outbox_hours=0.001), site) == MIN_OUTBOX_BYTES


def test_an_explicit_byte_bound_replaces_the_hours_floor_included() -> None:
    # A line PC with a small disk (and the chaos tests, which fill it in seconds).
    settings = EdgeSettings(outbox_hours=72, outbox_max_bytes=20_000)
    assert outbox_bytes(settings, load_site(SITE)) == 20_000


def test_the_byte_bound_is_read_from_the_environment(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("TRACE_EDGE_OUTBOX_MAX_BYTES", "65536")
    assert EdgeSettings().outbox_max_bytes == 65536
