"""Fixtures: certificates made once per run, and reactor simulators on free ports.

A simulator takes about a second to start, so the ones whose state tests do not disturb
are shared per module; every test sets the values it reads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asyncua import ua

from protocols.opcua.certificates import DEFAULT_CLIENT_URI, generate_certificate
from protocols.opcua.simulator import APPLICATION_URI, REACTOR, ReactorSimulator, Variable
from tests.conftest import free_port

# Variables beyond the reactor's, for the types a PLC may hold that are not numbers.
EXTRA: dict[str, Variable] = {
    "Reactor1.ZoneTemperatures": Variable(ua.VariantType.Double, [180.0, 181.5]),
    "Reactor1.LastCleaned": Variable(ua.VariantType.DateTime, datetime(2024, 1, 1, tzinfo=UTC)),
    "Reactor1.Counter": Variable(ua.VariantType.UInt32, 0),
}


@dataclass(frozen=True)
class Pair:
    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class Pki:
    server: Pair  # the simulator's
    client: Pair  # this edge's, trusted by the secure simulator
    stranger: Pair  # a client certificate nobody trusts
    impostor: Pair  # another server certificate


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")

    def pair(name: str, uri: str, role: str) -> Pair:
        cert, key = root / f"{name}.der", root / f"{name}.pem"
        generate_certificate(cert, key, uri, role=role)  # type: ignore[arg-type]
        return Pair(cert, key)

    return Pki(
        server=pair("server", APPLICATION_URI, "server"),
        client=pair("client", DEFAULT_CLIENT_URI, "client"),
        stranger=pair("stranger", "urn:somewhere:else", "client"),
        impostor=pair("impostor", APPLICATION_URI, "server"),
    )


@pytest.fixture(scope="module")
async def reactor() -> AsyncIterator[ReactorSimulator]:
    """A plain (security None) reactor with the extra variables, shared by a module."""
    sim = ReactorSimulator(free_port(), variables=REACTOR | EXTRA)
    await sim.start()
    yield sim
    await sim.stop()
