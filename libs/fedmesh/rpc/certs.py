"""A development certificate authority issuing SPIFFE-identified mTLS certificates.

Identities live in the certificates' URI SANs (``spiffe://<trust domain>/<kind>/<name>``)
and are matched exactly. Production deployments take certificates from cert-manager
or SPIRE instead (see docs/deployment.md); the layout of the files is the same.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedmesh.errors import InvalidArgument
from fedmesh.rpc.tls import TlsFiles

DEFAULT_TRUST_DOMAIN = "fedmesh.local"
TRUST_DOMAIN_ENV = "FEDMESH_TRUST_DOMAIN"
VALIDITY = datetime.timedelta(days=365)
KINDS = ("service", "node", "admin")


def trust_domain() -> str:
    """The SPIFFE trust domain: ``FEDMESH_TRUST_DOMAIN``, else ``fedmesh.local``."""
    return os.environ.get(TRUST_DOMAIN_ENV) or DEFAULT_TRUST_DOMAIN


def spiffe_id(kind: str, name: str, domain: str | None = None) -> str:
    """The SPIFFE ID of a service, node or admin in ``domain`` (default: `trust_domain()`)."""
    if kind not in KINDS:
        raise InvalidArgument(f"identity kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not name or "/" in name or any(c.isspace() for c in name):
        raise InvalidArgument(
            f"identity name {name!r}; expected a non-empty name without / or spaces"
        )
    return f"spiffe://{domain or trust_domain()}/{kind}/{name}"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


@dataclass(frozen=True)
class DevCertificateAuthority:
    """A CA key and certificate on disk that signs leaf certificates."""

    directory: Path

    @property
    def ca_path(self) -> Path:
        """The CA certificate (PEM) every party trusts."""
        return self.directory / "ca.pem"

    @classmethod
    def create(cls, directory: Path) -> DevCertificateAuthority:
        """Make a new CA in ``directory`` (an existing one is kept)."""
        authority = cls(directory)
        if authority.ca_path.exists():
            return authority
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedmesh dev CA")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(key, hashes.SHA256())
        )
        _write_private(
            directory / "ca-key.pem",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        authority.ca_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return authority

    def issue(
        self, kind: str, name: str, hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
    ) -> TlsFiles:
        """A key and certificate for ``kind/name``, usable as server and as client."""
        identity = spiffe_id(kind, name)
        ca_key = serialization.load_pem_private_key(
            (self.directory / "ca-key.pem").read_bytes(), password=None
        )
        if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
            raise InvalidArgument("the CA key is not an EC key made by `fedmesh certs init`")
        ca_cert = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity)]
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{kind}/{name}")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        stem = self.directory / f"{kind}-{name}"
        _write_private(
            stem.with_suffix(".key"),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        stem.with_suffix(".pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return TlsFiles(stem.with_suffix(".pem"), stem.with_suffix(".key"), self.ca_path)
