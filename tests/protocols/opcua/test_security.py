"""Basic256Sha256 Sign and SignAndEncrypt with generated certificates, and every way the
security setup can be wrong, each failing with a message that names the fix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from protocols.driver import DeviceMisconfigured
from protocols.opcua.certificates import (
    application_uri,
    generate_certificate,
    load_client_identity,
    main,
    thumbprint,
)
from protocols.opcua.client import OpcUaDriver
from protocols.opcua.simulator import APPLICATION_URI, ReactorSimulator
from tests.conftest import free_port
from tests.protocols.opcua.conftest import Pair, Pki
from tests.protocols.opcua.helpers import profile_for, subscribed

TEMPERATURE = {"name": "temperature", "node_id": "ns=2;s=Reactor1.Temperature"}


@pytest.fixture(scope="module")
async def secure(pki: Pki) -> AsyncIterator[ReactorSimulator]:
    """A reactor offering only Basic256Sha256 and trusting only the edge's certificate."""
    sim = ReactorSimulator(
        free_port(),
        security_modes=("Sign", "SignAndEncrypt"),
        certificate=pki.server.certificate,
        private_key=pki.server.private_key,
        trusted_client_certificates=[pki.client.certificate],
    )
    await sim.start()
    yield sim
    await sim.stop()


def secured(endpoint: str, mode: str, pair: Pair, **more: Any) -> OpcUaDriver:
    security = {
        "mode": mode,
        "certificate": str(pair.certificate),
        "private_key": str(pair.private_key),
    } | more
    return OpcUaDriver(profile_for(endpoint, [TEMPERATURE], connection={"security": security}))


@pytest.mark.parametrize("mode", ["Sign", "SignAndEncrypt"])
async def test_round_trip(mode: str, secure: ReactorSimulator, pki: Pki) -> None:
    await secure.set("Reactor1.Temperature", 66.5)
    driver = secured(
        secure.endpoint, mode, pki.client, server_certificate=str(pki.server.certificate)
    )
    await driver.open()
    try:
        assert [(s.value, s.quality) for s in await driver.read()] == [(66.5, "good")]
        async with subscribed(driver) as recorder:
            await recorder.wait_for(lambda: 66.5 in recorder.values("temperature"), "66.5")
            await secure.set("Reactor1.Temperature", 67.0)
            await recorder.wait_for(lambda: 67.0 in recorder.values("temperature"), "67.0")
    finally:
        await driver.close()


async def test_mode_none_against_a_secure_only_server_names_what_it_offers(
    secure: ReactorSimulator,
) -> None:
    driver = OpcUaDriver(profile_for(secure.endpoint, [TEMPERATURE]))
    with pytest.raises(DeviceMisconfigured) as err:
        await driver.open()
    assert "does not offer security None" in str(err.value)
    assert "it offers Basic256Sha256/Sign, Basic256Sha256/SignAndEncrypt" in str(err.value)
    assert "give this edge a certificate" in str(err.value)


async def test_a_mode_the_server_does_not_offer(pki: Pki) -> None:
    sim = ReactorSimulator(
        free_port(),
        security_modes=("SignAndEncrypt",),
        certificate=pki.server.certificate,
        private_key=pki.server.private_key,
    )
    async with sim:
        with pytest.raises(DeviceMisconfigured, match="it offers Basic256Sha256/SignAndEncrypt"):
            await secured(sim.endpoint, "Sign", pki.client).open()


async def test_an_untrusted_client_certificate_says_to_trust_it_on_the_server(
    secure: ReactorSimulator, pki: Pki
) -> None:
    with pytest.raises(DeviceMisconfigured) as err:
        await secured(secure.endpoint, "Sign", pki.stranger).open()
    assert "BadCertificateUntrusted (0x801A0000)" in str(err.value)
    assert "trust it on the server" in str(err.value)


async def test_a_pinned_server_certificate_that_does_not_match_is_refused(
    secure: ReactorSimulator, pki: Pki
) -> None:
    driver = secured(
        secure.endpoint, "Sign", pki.client, server_certificate=str(pki.impostor.certificate)
    )
    with pytest.raises(DeviceMisconfigured) as err:
        await driver.open()
    offered = thumbprint(pki.server.certificate.read_bytes())
    pinned = thumbprint(pki.impostor.certificate.read_bytes())
    assert f"presents certificate {offered}" in str(err.value)
    assert f"server_certificate is {pinned}" in str(err.value)


async def test_trust_on_first_use_refuses_a_changed_server_certificate(pki: Pki) -> None:
    port = free_port()
    driver = None
    for pair, fails in ((pki.server, False), (pki.impostor, True)):
        sim = ReactorSimulator(
            port,
            security_modes=("Sign",),
            certificate=pair.certificate,
            private_key=pair.private_key,
        )
        async with sim:
            driver = driver or secured(sim.endpoint, "Sign", pki.client)
            if fails:
                with pytest.raises(DeviceMisconfigured, match="now presents certificate"):
                    await driver.open()
            else:
                await driver.open()
                await driver.close()


def write_encrypted_key(pair: Pair, target: Path) -> None:
    key = serialization.load_pem_private_key(pair.private_key.read_bytes(), password=None)
    target.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )


def write_certificate_without_uri(cert: Path, key: Path) -> None:
    private = cert_gen.generate_private_key()
    bare = cert_gen.generate_self_signed_app_certificate(
        private, "bare", {}, [x509.DNSName("localhost")], extended=[]
    )
    cert.write_bytes(bare.public_bytes(serialization.Encoding.DER))
    key.write_bytes(cert_gen.dump_private_key_as_pem(private))


@pytest.mark.parametrize(
    ("problem", "message"),
    [
        ("missing certificate", r"client certificate .*missing.der cannot be read"),
        ("key of another certificate", r"private key .* does not belong to certificate"),
        ("password-protected key", r"private key .* is password-protected"),
        ("not a certificate", r"client certificate .* is not an X\.509 certificate"),
        ("no application URI", r"client certificate .* has no application URI in its"),
    ],
)
async def test_a_certificate_problem_is_reported_before_connecting(
    problem: str, message: str, pki: Pki, tmp_path: Path
) -> None:
    cert, key = pki.client.certificate, pki.client.private_key
    if problem == "missing certificate":
        cert = tmp_path / "missing.der"
    elif problem == "key of another certificate":
        key = pki.stranger.private_key
    elif problem == "password-protected key":
        key = tmp_path / "locked.pem"
        write_encrypted_key(pki.client, key)
    elif problem == "not a certificate":
        cert = key
    elif problem == "no application URI":
        cert, key = tmp_path / "bare.der", tmp_path / "bare.pem"
        write_certificate_without_uri(cert, key)
    # Nothing listens there: the check must not need the server.
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}/nowhere"
    with pytest.raises(DeviceMisconfigured, match=f"device-under-test: {message}"):
        await secured(endpoint, "Sign", Pair(cert, key)).open()


def test_the_certificate_command_writes_a_usable_pair(tmp_path: Path) -> None:
    main([str(tmp_path), "--uri", "urn:site:edge-7"])
    identity = load_client_identity(tmp_path / "edge-client.der", tmp_path / "edge-client.pem")
    assert identity.application_uri == "urn:site:edge-7"
    assert (tmp_path / "edge-client.pem").stat().st_mode & 0o077 == 0
    with pytest.raises(SystemExit):  # never overwrites a pair a server already trusts
        main([str(tmp_path)])
    generate_certificate(tmp_path / "s.der", tmp_path / "s.pem", APPLICATION_URI, role="server")
    server = x509.load_der_x509_certificate((tmp_path / "s.der").read_bytes())
    assert application_uri(server) == APPLICATION_URI
