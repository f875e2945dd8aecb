"""The driver against the simulator: subscriptions, deadbands, failures and recovery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from protocols.driver import (
    DeviceMisconfigured,
    DeviceUnavailable,
    PollingDriver,
    SubscribingDriver,
)
from protocols.opcua.client import OpcUaDriver
from protocols.opcua.simulator import ReactorSimulator
from tests.conftest import free_port
from tests.protocols.opcua.helpers import WAIT_S, SilentLink, profile_for, subscribed

TEMPERATURE = {"name": "temperature", "node_id": "ns=2;s=Reactor1.Temperature", "unit": "Cel"}
PRESSURE = {"name": "pressure", "node_id": "ns=2;s=Reactor1.Pressure", "unit": "bar"}


@pytest.fixture
async def driver(reactor: ReactorSimulator) -> AsyncIterator[OpcUaDriver]:
    await reactor.set("Reactor1.Temperature", 20.0)
    await reactor.set("Reactor1.Pressure", 1.0)
    driver = OpcUaDriver(profile_for(reactor.endpoint, [TEMPERATURE, PRESSURE]))
    await driver.open()
    yield driver
    await driver.close()


def test_is_a_polling_and_a_subscribing_driver(reactor: ReactorSimulator) -> None:
    driver: PollingDriver = OpcUaDriver(profile_for(reactor.endpoint, [TEMPERATURE]))
    assert isinstance(driver, SubscribingDriver)
    assert driver.name == "device-under-test"


async def test_subscription_delivers_initial_values_then_changes(
    driver: OpcUaDriver, reactor: ReactorSimulator
) -> None:
    async with subscribed(driver) as recorder:
        await recorder.wait_for(
            lambda: (
                recorder.values("temperature") == [20.0] and recorder.values("pressure") == [1.0]
            ),
            "the initial values",
        )
        await reactor.set("Reactor1.Temperature", 25.5)
        await recorder.wait_for(lambda: recorder.values("temperature")[-1:] == [25.5], "25.5")
        await reactor.set("Reactor1.Pressure", 1.25, status="UncertainLastUsableValue")
        await recorder.wait_for(lambda: recorder.values("pressure")[-1:] == [1.25], "1.25")
    assert recorder.values("temperature") == [20.0, 25.5]
    pressure = recorder.latest("pressure")
    assert pressure is not None and pressure.quality == "uncertain"
    assert all(s.device_time is not None for s in recorder.samples)


async def test_deadband_suppresses_small_changes(reactor: ReactorSimulator) -> None:
    await reactor.set("Reactor1.Temperature", 80.0)
    await reactor.set("Reactor1.Pressure", 2.0)
    tags = [TEMPERATURE | {"deadband": {"type": "absolute", "value": 0.5}}, PRESSURE]
    driver = OpcUaDriver(profile_for(reactor.endpoint, tags))
    await driver.open()
    try:
        async with subscribed(driver) as recorder:
            await recorder.wait_for(lambda: len(recorder.samples) >= 2, "the initial values")
            for value in (80.2, 80.4, 80.1, 81.0):  # only 80.1 -> 81.0 moves more than 0.5
                await reactor.set("Reactor1.Temperature", value)
            await reactor.set("Reactor1.Pressure", 2.01)  # no deadband: every change counts
            await recorder.wait_for(lambda: 81.0 in recorder.values("temperature"), "81.0")
            await recorder.wait_for(lambda: 2.01 in recorder.values("pressure"), "2.01")
    finally:
        await driver.close()
    # Notifications arrive in order, so nothing suppressed can still be on its way.
    assert recorder.values("temperature") == [80.0, 81.0]
    assert recorder.values("pressure") == [2.0, 2.01]


async def test_bad_status_in_a_subscription_is_a_bad_reading_then_recovers(
    driver: OpcUaDriver, reactor: ReactorSimulator
) -> None:
    async with subscribed(driver) as recorder:
        await recorder.wait_for(lambda: len(recorder.samples) >= 2, "the initial values")
        await reactor.set("Reactor1.Temperature", status="BadSensorFailure")
        await recorder.wait_for(
            lambda: (s := recorder.latest("temperature")) is not None and s.quality == "bad",
            "the bad reading",
        )
        bad = recorder.latest("temperature")
        await reactor.set("Reactor1.Temperature", 21.0)
        await recorder.wait_for(lambda: recorder.values("temperature")[-1:] == [21.0], "21.0")
    assert bad is not None
    assert (bad.value, bad.detail) == (None, "BadSensorFailure (0x808C0000)")
    assert recorder.latest("temperature").quality == "good"  # type: ignore[union-attr]


async def test_an_unknown_node_does_not_stop_the_other_tags(reactor: ReactorSimulator) -> None:
    ghost = {"name": "ghost", "node_id": "ns=2;s=Reactor1.Nope"}
    driver = OpcUaDriver(profile_for(reactor.endpoint, [TEMPERATURE, ghost]))
    await driver.open()
    try:
        async with subscribed(driver) as recorder:
            await recorder.wait_for(lambda: len(recorder.samples) >= 2, "the initial values")
            await reactor.set("Reactor1.Temperature", 30.0)
            await recorder.wait_for(lambda: 30.0 in recorder.values("temperature"), "30.0")
        (bad,) = [s for s in recorder.samples if s.tag == "ghost"]
        assert bad.quality == "bad" and "BadNodeIdUnknown" in (bad.detail or "")
        assert "ns=2;s=Reactor1.Nope" in (bad.detail or "")
    finally:
        await driver.close()


async def test_a_profile_whose_nodes_all_are_unknown_is_misconfigured(
    reactor: ReactorSimulator,
) -> None:
    tags = [
        {"name": "a", "node_id": "ns=2;s=Reactor1.Temperatur"},
        {"name": "b", "node_id": "ns=5;i=1"},
    ]
    driver = OpcUaDriver(profile_for(reactor.endpoint, tags))
    await driver.open()
    try:
        with pytest.raises(DeviceMisconfigured) as err:
            await driver.subscribe(lambda batch: None)
    finally:
        await driver.close()
    message = str(err.value)
    assert "monitors none of the tags" in message
    assert "ns=2;s=Reactor1.Temperatur" in message and "ns=5;i=1" in message
    assert "correct the tag's node_id" in message


async def test_an_unknown_namespace_uri_is_misconfigured(reactor: ReactorSimulator) -> None:
    tag = {"name": "t", "node_id": "nsu=urn:nowhere;s=Reactor1.Temperature"}
    driver = OpcUaDriver(profile_for(reactor.endpoint, [tag]))
    with pytest.raises(DeviceMisconfigured, match="tag t: namespace 'urn:nowhere' is not on"):
        await driver.open()


async def test_a_malformed_node_id_is_refused_before_any_connection() -> None:
    # Nothing listens on this port: the error can only come from checking the profile.
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/nowhere"
    driver = OpcUaDriver(profile_for(endpoint, [{"name": "t", "node_id": "Reactor1.Temp"}]))
    with pytest.raises(DeviceMisconfigured, match="device-under-test: tag t: node_id"):
        await driver.open()


async def test_a_refused_connection_is_unavailable_and_names_the_endpoint() -> None:
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/nowhere"
    driver = OpcUaDriver(profile_for(endpoint, [TEMPERATURE]))
    with pytest.raises(DeviceUnavailable, match=f"connecting to {endpoint}"):
        await driver.open()
    with pytest.raises(DeviceUnavailable, match="not connected"):
        await driver.read()
    with pytest.raises(DeviceUnavailable, match="not connected"):
        await driver.subscribe(lambda batch: None)


async def test_a_server_that_refuses_large_reads_is_read_node_by_node() -> None:
    sim = ReactorSimulator(free_port(), max_nodes_per_read=1)
    async with sim:
        await sim.set("Reactor1.Temperature", 70.5)
        await sim.set("Reactor1.Pressure", 2.5)
        driver = OpcUaDriver(profile_for(sim.endpoint, [TEMPERATURE, PRESSURE]))
        await driver.open()
        try:
            first = await driver.read()
            second = await driver.read()
        finally:
            await driver.close()
    assert [(s.tag, s.value, s.quality) for s in first] == [
        ("temperature", 70.5, "good"),
        ("pressure", 2.5, "good"),
    ]
    assert [s.value for s in second] == [70.5, 2.5]


async def test_username_and_password() -> None:
    sim = ReactorSimulator(free_port(), users={"edge": "s3cret"})
    async with sim:
        await sim.set("Reactor1.Temperature", 55.0)

        def driver(**login: str) -> OpcUaDriver:
            return OpcUaDriver(profile_for(sim.endpoint, [TEMPERATURE], connection=login))

        good = driver(username="edge", password="s3cret")
        await good.open()
        try:
            assert [s.value for s in await good.read()] == [55.0]
        finally:
            await good.close()
        with pytest.raises(DeviceMisconfigured, match=r"BadUserAccessDenied .*check connection"):
            await driver(username="edge", password="wrong").open()
        with pytest.raises(DeviceMisconfigured, match=r"requires a login .* set connection\.user"):
            await driver().open()


async def test_a_stopped_server_ends_the_subscription_and_a_restarted_one_serves_again() -> None:
    sim = ReactorSimulator(free_port())
    await sim.start()
    try:
        await sim.set("Reactor1.Temperature", 40.0)
        driver = OpcUaDriver(profile_for(sim.endpoint, [TEMPERATURE]))
        await driver.open()
        async with subscribed(driver) as recorder:
            await recorder.wait_for(lambda: recorder.values("temperature") == [40.0], "40.0")
            stopped = time.monotonic()
            await sim.stop()
            with pytest.raises(DeviceUnavailable, match="lost the connection") as err:
                async with asyncio.timeout(WAIT_S):
                    await recorder.task  # type: ignore[misc]
            assert time.monotonic() - stopped < 10, "loss must be noticed within seconds"
        assert sim.endpoint in str(err.value)
        with pytest.raises(DeviceUnavailable):
            await driver.read()
        await driver.close()

        await sim.start()  # the same port, as a rebooted PLC
        await sim.set("Reactor1.Temperature", 41.0)
        await driver.open()
        try:
            async with subscribed(driver) as recorder:
                await recorder.wait_for(lambda: 41.0 in recorder.values("temperature"), "41.0")
            assert [s.value for s in await driver.read()] == [41.0]
        finally:
            await driver.close()
    finally:
        await sim.stop()


async def test_a_server_that_goes_silent_is_noticed_within_the_timeout(
    reactor: ReactorSimulator,
) -> None:
    """No FIN, no RST, just silence (a pulled cable): only the watchdog can notice."""
    await reactor.set("Reactor1.Temperature", 50.0)
    link = SilentLink(reactor.host, reactor.port)
    await link.start()
    try:
        endpoint = reactor.endpoint.replace(str(reactor.port), str(link.port))
        driver = OpcUaDriver(profile_for(endpoint, [TEMPERATURE], connection={"timeout_s": 2}))
        await driver.open()
        async with subscribed(driver) as recorder:
            await recorder.wait_for(lambda: recorder.values("temperature") == [50.0], "50.0")
            silent = time.monotonic()
            link.go_silent()
            with pytest.raises(DeviceUnavailable, match="lost the connection"):
                async with asyncio.timeout(WAIT_S):
                    await recorder.task  # type: ignore[misc]
            assert time.monotonic() - silent < 12, "a silent server must not hang the edge"
        closing = time.monotonic()
        await driver.close()
        assert time.monotonic() - closing < 5, "closing must not wait for a silent server"
    finally:
        await link.stop()
