"""The protocol registry: what it refuses, and what each installed protocol offers.

The optional traits are typed protocols checked with isinstance; this table is what the
edge finds of each protocol, so a trait lost in a refactoring shows here.
"""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field

from device_profiles import LIBRARY
from device_profiles.schema import ModbusTcpProfile, load_profile
from protocols.driver import CountsBadInput, Diagnosable, StreamingDriver, SubscribingDriver
from protocols.installed import REGISTRY
from protocols.modbus.client import ModbusDriver
from protocols.profile import Polled, ProfileBase, ReadingRate, Subscribable, Tagged
from protocols.registry import ProtocolEntry, Registry, RegistryError, UnknownProtocol
from protocols.rfid.profile import RfidReader

TRAITS = {
    "profile": {
        "Polled": Polled,
        "Subscribable": Subscribable,
        "Tagged": Tagged,
        "ReadingRate": ReadingRate,
        "RfidReader": RfidReader,
    },
    "driver": {
        "Streaming": StreamingDriver,
        "Subscribing": SubscribingDriver,
        "Diagnosable": Diagnosable,
        "CountsBadInput": CountsBadInput,
    },
}

# protocol: (sample profile, profile traits, driver traits)
OFFERS = {
    "modbus_tcp": (
        "modbus-tcp-temperature-pressure-controller.yaml",
        {"Polled", "Tagged"},
        {"CountsBadInput"},
    ),
    "modbus_rtu": ("modbus-rtu-flowmeter.yaml", {"Polled", "Tagged"}, {"CountsBadInput"}),
    "opcua": (
        "opcua-reactor-plc.yaml",
        {"Polled", "Subscribable", "Tagged", "ReadingRate"},
        {"Subscribing"},
    ),
    "rfid_serial": ("rfid-dock-door-gate.yaml", {"RfidReader"}, {"Streaming", "Diagnosable"}),
    "scanner_serial": ("scanner-line-station.yaml", set(), {"Streaming", "CountsBadInput"}),
    "scanner_wedge": ("scanner-dock-door.yaml", set(), {"Streaming", "CountsBadInput"}),
}


def test_the_installed_protocols_in_the_order_of_the_published_schema() -> None:
    assert REGISTRY.names() == tuple(OFFERS)


def test_what_a_site_asks_of_each_protocol() -> None:
    """Devices that report events may sit at a warehouse station; RS-485 devices are
    checked together (one line's settings, their own unit ids)."""
    assert REGISTRY.event_protocols() == ("rfid_serial", "scanner_serial", "scanner_wedge")
    assert [entry.name for entry in REGISTRY if entry.site_check] == ["modbus_rtu"]


@pytest.mark.parametrize("protocol", list(OFFERS))
def test_each_protocol_offers_its_traits(protocol: str) -> None:
    file, profile_traits, driver_traits = OFFERS[protocol]
    profile = load_profile(LIBRARY / file)
    entry = REGISTRY.entry_of(profile)
    assert entry.name == protocol == profile.protocol
    driver = REGISTRY.driver_for(profile)  # builds only: no port or socket opens here
    assert driver.name == profile.name
    found = {name for name, trait in TRAITS["profile"].items() if isinstance(profile, trait)}
    assert found == profile_traits
    found = {name for name, trait in TRAITS["driver"].items() if isinstance(driver, trait)}
    assert found == driver_traits
    assert (entry.events is not None) == ("Streaming" in driver_traits)


class OtherModbusProfile(ProfileBase):
    protocol: Literal["modbus_tcp"]
    connection: str = Field(min_length=1)


class MislabelledProfile(ProfileBase):
    protocol: Literal["modbus_tcp"]


def test_a_name_registered_twice_is_refused() -> None:
    with pytest.raises(RegistryError, match=r"'modbus_tcp' is registered twice"):
        REGISTRY.with_entries(ProtocolEntry("modbus_tcp", OtherModbusProfile, ModbusDriver))


def test_an_entry_whose_profile_declares_another_name_is_refused() -> None:
    with pytest.raises(
        RegistryError, match=r"MislabelledProfile must declare protocol: Literal\[\"bacnet\"\]"
    ):
        Registry([ProtocolEntry("bacnet", MislabelledProfile, ModbusDriver)])


def test_a_profile_of_no_installed_protocol_gets_no_driver() -> None:
    profile = OtherModbusProfile(profile_version=1, name="m", protocol="modbus_tcp", connection="x")
    with pytest.raises(UnknownProtocol, match=r"use one of modbus_tcp, modbus_rtu, opcua"):
        REGISTRY.driver_for(profile)
    only_tcp = Registry([REGISTRY.entry("modbus_tcp")])
    with pytest.raises(UnknownProtocol, match=r"'opcua'.*use one of modbus_tcp$"):
        only_tcp.entry("opcua")
    assert only_tcp.entry_of(load_profile(LIBRARY / OFFERS["modbus_tcp"][0])).profile is (
        ModbusTcpProfile
    )
