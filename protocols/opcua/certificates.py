"""Application instance certificates: load the edge's, inspect the server's, make test ones.

OPC UA security identifies each application by a certificate whose subjectAltName holds
its application URI. Files may be PEM or DER whatever their extension: the content
decides, because technicians receive `.crt`, `.cer`, `.der` and `.pem` alike.

`python -m protocols.opcua.certificates DIR` writes a self-signed client certificate and
key for this edge (see the README's security section).
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from asyncua.crypto import cert_gen, uacrypto
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID

from protocols.driver import DeviceMisconfigured

# Unique per machine, as OPC UA expects of application URIs.
DEFAULT_CLIENT_URI = f"urn:{socket.gethostname()}:lot-trace:edge"

_USAGE: dict[str, list[x509.ObjectIdentifier]] = {
    "client": [ExtendedKeyUsageOID.CLIENT_AUTH],
    "server": [ExtendedKeyUsageOID.SERVER_AUTH],
}


@dataclass(frozen=True)
class ClientIdentity:
    """The edge's certificate and key, ready for asyncua (both DER)."""

    certificate: bytes
    private_key: bytes
    application_uri: str
    thumbprint: str


def thumbprint(der: bytes) -> str:
    """SHA-1 thumbprint as servers display it (UaExpert, Kepware, Siemens), upper-case hex."""
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()


def application_uri(certificate: x509.Certificate) -> str | None:
    """The URI in the certificate's subjectAltName: the application URI it was issued for."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return None
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def first_certificate(der_chain: bytes) -> bytes:
    """A server may send its certificate followed by its issuers; the first is its own."""
    return uacrypto.der_from_x509(uacrypto.x509_from_der(der_chain))


def _read(path: Path, what: str, key: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise DeviceMisconfigured(
            f"{what} {path} cannot be read ({err.strerror}): check connection.security.{key}"
        ) from err


def load_certificate(path: Path, what: str, key: str) -> x509.Certificate:
    """A certificate file, PEM or DER; `key` is the profile key that names the file."""
    data = _read(path, what, key)
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as err:
        raise DeviceMisconfigured(
            f"{what} {path} is not an X.509 certificate (PEM or DER): "
            f"check connection.security.{key}"
        ) from err


def load_private_key(path: Path) -> RSAPrivateKey:
    data = _read(path, "private key", "private_key")
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except TypeError as err:  # cryptography's way to say "it is encrypted"
        raise DeviceMisconfigured(
            f"private key {path} is password-protected: store it without a password "
            f"(e.g. openssl pkey -in {path.name} -out plain.pem) and keep the file readable "
            "only by the edge's user"
        ) from err
    except ValueError as err:
        raise DeviceMisconfigured(
            f"private key {path} is not a PEM or DER private key: check "
            "connection.security.private_key"
        ) from err
    if not isinstance(key, RSAPrivateKey):
        raise DeviceMisconfigured(
            f"private key {path} is not an RSA key: Basic256Sha256 needs RSA (2048 bits or more)"
        )
    return key


def load_client_identity(certificate_path: Path, private_key_path: Path) -> ClientIdentity:
    """The edge's certificate and key, checked against each other before any connection."""
    certificate = load_certificate(certificate_path, "client certificate", "certificate")
    key = load_private_key(private_key_path)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if certificate.public_key().public_bytes(der, public) != key.public_key().public_bytes(
        der, public
    ):
        raise DeviceMisconfigured(
            f"private key {private_key_path} does not belong to certificate "
            f"{certificate_path}: point both at the same pair"
        )
    uri = application_uri(certificate)
    if uri is None:
        raise DeviceMisconfigured(
            f"client certificate {certificate_path} has no application URI in its "
            "subjectAltName, which OPC UA servers require: regenerate it "
            "(python -m protocols.opcua.certificates)"
        )
    cert_der = certificate.public_bytes(der)
    key_der = key.private_bytes(
        der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ClientIdentity(cert_der, key_der, uri, thumbprint(cert_der))


def generate_certificate(
    certificate_path: Path,
    private_key_path: Path,
    application_uri: str,
    *,
    role: Literal["client", "server"] = "client",
    hostnames: list[str] | None = None,
    days: int = 365,
) -> None:
    """Write a self-signed application instance certificate (DER) and its key (PEM).

    For tests and for sites without their own certificate authority. The subjectAltName
    holds the application URI, the host names and 127.0.0.1, as OPC UA peers check them.
    """
    names = hostnames or [socket.gethostname(), "localhost"]
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    alt_names += [x509.DNSName(name) for name in names]
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    key = cert_gen.generate_private_key()
    certificate = cert_gen.generate_self_signed_app_certificate(
        key, application_uri, {}, alt_names, extended=_USAGE[role], days=days
    )
    certificate_path.parent.mkdir(parents=True, exist_ok=True)
    private_key_path.parent.mkdir(parents=True, exist_ok=True)
    certificate_path.write_bytes(certificate.public_bytes(serialization.Encoding.DER))
    private_key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    private_key_path.chmod(0o600)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m protocols.opcua.certificates",
        description="Write a self-signed OPC UA client certificate and key for this edge.",
    )
    parser.add_argument("directory", type=Path, help="where to write edge-client.der/.pem")
    parser.add_argument("--uri", default=DEFAULT_CLIENT_URI, help="application URI")
    parser.add_argument("--days", type=int, default=365 * 2, help="validity in days")
    args = parser.parse_args(argv)
    cert, key = args.directory / "edge-client.der", args.directory / "edge-client.pem"
    if cert.exists() or key.exists():
        parser.error(f"{cert} or {key} exists: remove them first or choose another directory")
    generate_certificate(cert, key, args.uri, days=args.days)
    print(f"certificate: {cert}  (thumbprint {thumbprint(cert.read_bytes())})")
    print(f"private key: {key}")
    print(
        "Trust the certificate on the OPC UA server, then set connection.security in the profile."
    )


if __name__ == "__main__":
    main()
