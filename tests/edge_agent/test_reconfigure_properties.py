"""The edge's site configurator against hostile pushes: whatever arrives on the config topic
(damaged bytes, a valid push with one value replaced by hostile JSON, a content that does
not match its hash) is refused with a reason or ignored, never raises, and the running
version changes only for a push that is whole, intact and valid."""

from __future__ import annotations

import asyncio
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from device_profiles import LIBRARY
from device_profiles.schema import read_yaml
from device_profiles.sites import (
    ResolvedSite,
    SiteChanges,
    canonical_json,
    content_hash,
    resolve_site,
)
from edge_agent.reconfigure import SiteConfigurator
from edge_agent.store import EdgeStore
from protocols.mqtt.contract import SitePush
from tests.hostile_input import damaged, dumps, one_value_replaced
from tests.hypothesis_profiles import load_from_env

load_from_env()
FOLDER = Path(tempfile.mkdtemp(prefix="reconfigure-properties-"))
EDGE = "edge-1"
PROFILE = read_yaml(LIBRARY / "modbus-tcp-temperature-pressure-controller.yaml")
SITE: dict[str, Any] = {
    "edge_id": EDGE,
    "lines": [{"id": "line-1", "devices": [{"profile": PROFILE, "connection": {"port": 1502}}]}],
}


def push(content: Any, version: int = 1, sha256: str | None = None) -> dict[str, Any]:
    text = canonical_json(content)
    return SitePush(
        edge_id=EDGE,
        version=version,
        sha256=sha256 or content_hash(text),
        author="tech",
        published_at=datetime.now(UTC),
        content=text,
    ).model_dump(mode="json")


class Applied:
    def __init__(self) -> None:
        self.sites: list[ResolvedSite] = []

    async def __call__(self, site: ResolvedSite, changes: SiteChanges) -> None:
        self.sites.append(site)


def configurator(applied: Applied) -> SiteConfigurator:
    store = EdgeStore(Path(tempfile.mkdtemp(dir=FOLDER)) / "edge.db")
    return SiteConfigurator(EDGE, store, resolve_site(SITE), applied, FOLDER)


def handle(payload: bytes) -> tuple[bool, SiteConfigurator, Applied]:
    applied = Applied()
    c = configurator(applied)
    try:
        return asyncio.run(c.handle(payload)), c, applied
    finally:
        c.store.close()


def test_a_whole_valid_push_is_applied() -> None:
    done, c, applied = handle(dumps(push(SITE)))
    assert done and c.state().version == 1 and len(applied.sites) == 1
    assert c.state().kept == [1]


@given(st.data())
def test_damaged_bytes_are_refused_or_applied_whole(data: st.DataObject) -> None:
    payload = data.draw(damaged(dumps(push(SITE))))
    done, c, applied = handle(payload)
    state = c.state()
    if done:  # damage that left the message whole and valid (e.g. in the author's name)
        assert state.version == 1 and len(applied.sites) == 1
    else:
        assert state.version is None and not applied.sites
        assert state.refused_reason or not payload  # empty: a cleared retained message


@given(st.data())
def test_a_push_with_one_hostile_value_never_raises(data: st.DataObject) -> None:
    message = data.draw(one_value_replaced(push(SITE)))
    done, c, applied = handle(dumps(message))
    assert done == bool(applied.sites)
    if not done:
        assert c.state().version is None


@given(st.data())
def test_hostile_content_with_a_matching_hash_is_refused_with_the_reason(
    data: st.DataObject,
) -> None:
    content = data.draw(one_value_replaced(SITE))
    try:
        message = push(content)
    except Exception:  # not expressible as canonical JSON: the collector never sends it
        return
    done, c, applied = handle(dumps(message))
    if not done:
        assert c.state().refused_version == 1 and c.state().refused_reason
        assert not applied.sites


def test_the_content_must_match_its_hash() -> None:
    done, c, _ = handle(dumps(push(SITE, sha256="0" * 64)))
    assert not done and "SHA-256" in (c.state().refused_reason or "")


def test_a_failing_apply_is_a_refusal_not_a_crash() -> None:
    async def broken(site: ResolvedSite, changes: SiteChanges) -> None:
        raise RuntimeError("driver exploded")

    store = EdgeStore(Path(tempfile.mkdtemp(dir=FOLDER)) / "edge.db")
    c = SiteConfigurator(EDGE, store, resolve_site(SITE), broken, FOLDER)
    try:
        assert asyncio.run(c.handle(dumps(push(SITE, version=4)))) is False
    finally:
        store.close()
    state = c.state()
    assert state.version is None and state.refused_version == 4
    assert state.refused_reason == "the apply failed: RuntimeError: driver exploded"


def test_the_running_version_again_changes_nothing_and_an_older_one_is_refused() -> None:
    applied = Applied()
    c = configurator(applied)
    try:
        assert asyncio.run(c.handle(dumps(push(SITE, version=3))))
        assert not asyncio.run(c.handle(dumps(push(SITE, version=3))))  # redelivered
        assert c.state().refused_version is None and len(applied.sites) == 1
        other = {**SITE, "docks": [{"id": "dock-1"}]}
        assert not asyncio.run(c.handle(dumps(push(other, version=2))))
    finally:
        c.store.close()
    state = c.state()
    assert state.version == 3 and state.refused_version == 2
    assert "not newer than version 3" in (state.refused_reason or "")
