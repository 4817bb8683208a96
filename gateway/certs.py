"""The cluster's own certificate authority, and the certificates it signs.

``booagent certs init`` makes a CA (``ca.pem``, ``ca.key``) and a server certificate for the
gateway signed by it (``gateway.pem``, ``gateway.key``). Clients trust ``ca.pem``; the CA key
stays on the machine that issues certificates. Another certificate is one call::

    ca = Authority.load(directory)
    issue(ca, "laptop", ["laptop.local"], client=True).write(directory, "laptop")

Keys are ECDSA P-256 (every TLS stack, Python's ``ssl`` included, speaks it; an Ed25519
certificate is refused by most). Certificates carry what strict verifiers ask for
(Python 3.13's ``VERIFY_X509_STRICT``, Apple's rules for server certificates): subject and
authority key identifiers, critical basic constraints and key usage, a serverAuth extended key
usage and a validity of 825 days at most. Private keys are written with mode 0600 and never
printed; no file is overwritten unless asked.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from backends.errors import BooagentError

DEFAULT_DIR = Path("~/.config/booagent/certs")
"""Where ``booagent certs init`` writes when no directory is given."""

CA_DAYS = 3650
LEAF_DAYS = 825
_BACKDATE = datetime.timedelta(minutes=5)
"""Certificates start a little in the past, so a client whose clock lags accepts them."""


class CertificateError(BooagentError):
    """A certificate or key could not be written or read; the message names the file.

    A branch of the one tree (``backends.errors.BooagentError``), raised on the CLI side only."""

    code = "certificate_error"


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, directory: Path, stem: str, *, force: bool = False) -> CertFiles:
        """Write ``stem.pem`` (mode 0644) and ``stem.key`` (mode 0600) into ``directory``;
        :class:`CertificateError` if either exists and ``force`` is not set."""
        files = CertFiles.named(directory, stem)
        refuse_existing([files], force=force)
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(files.key, _key_pem(self.key), 0o600)
        _write(files.cert, self.cert.public_bytes(serialization.Encoding.PEM), 0o644)
        return files


@dataclass(frozen=True, slots=True)
class Authority(Issued):
    """The cluster CA: the certificate clients trust, and the key that signs."""

    @classmethod
    def create(cls, name: str = "booagent-cluster CA") -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(name)
        cert = (
            _builder(subject, subject, key.public_key(), CA_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, directory: Path, stem: str = "ca") -> Authority:
        """The CA written by ``booagent certs init`` into ``directory``."""
        files = CertFiles.named(directory, stem)
        try:
            cert = x509.load_pem_x509_certificate(files.cert.read_bytes())
            key = serialization.load_pem_private_key(files.key.read_bytes(), password=None)
        except OSError as exc:
            raise CertificateError(f"cannot read {exc.filename}: {exc.strerror}") from exc
        except ValueError as exc:
            raise CertificateError(f"{files.cert} or {files.key} is not a PEM CA: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(f"{files.key} is not an ECDSA key")
        return cls(cert, key)


@dataclass(frozen=True, slots=True)
class CertFiles:
    """Where a certificate and its key are, or will be, written."""

    cert: Path
    key: Path

    @classmethod
    def named(cls, directory: Path, stem: str) -> CertFiles:
        return cls(directory / f"{stem}.pem", directory / f"{stem}.key")


@dataclass(frozen=True, slots=True)
class Initialized:
    """What ``booagent certs init`` wrote, and the names the gateway certificate holds."""

    ca: CertFiles
    gateway: CertFiles
    sans: tuple[str, ...]


def issue(
    ca: Authority, name: str, sans: Sequence[str], *, client: bool = False, days: int = LEAF_DAYS
) -> Issued:
    """A new key and a certificate for it signed by ``ca``, valid for ``name`` and ``sans``
    (host names, or IP addresses), for TLS servers; ``client`` also lets it authenticate a
    TLS client (mutual TLS between machines of the cluster)."""
    key = ec.generate_private_key(ec.SECP256R1())
    purposes = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client:
        purposes.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    ca_id = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        _builder(_name(name), ca.cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(purposes), critical=False)
        .add_extension(x509.SubjectAlternativeName(_general_names(sans)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_id), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(cert, key)


def default_sans() -> list[str]:
    """The names a gateway on this machine is reached by: loopback, and the host name."""
    return ["localhost", "127.0.0.1", "::1", socket.gethostname()]


def init(directory: Path, extra_sans: Iterable[str] = (), *, force: bool = False) -> Initialized:
    """Create the CA and the gateway's certificate in ``directory``. Nothing is written if
    any of the four files exists, unless ``force``."""
    ca_files = CertFiles.named(directory, "ca")
    gateway_files = CertFiles.named(directory, "gateway")
    refuse_existing([ca_files, gateway_files], force=force)
    sans = tuple(dict.fromkeys([*default_sans(), *extra_sans]))
    ca = Authority.create()
    ca.write(directory, "ca", force=force)
    issue(ca, "booagent gateway", sans, client=True).write(directory, "gateway", force=force)
    return Initialized(ca_files, gateway_files, sans)


@dataclass(frozen=True, slots=True)
class NodeBundle:
    """What a machine joining the cluster needs: the CA's certificate (not its key), and a
    certificate and key of its own for its node agent."""

    directory: Path
    ca: Path
    node: CertFiles


def node_bundle(
    certs: Path, name: str, out: Path, extra_sans: Iterable[str] = (), *, force: bool = False
) -> NodeBundle:
    """Issue node ``name`` a certificate from the CA in ``certs`` into ``out`` (with a copy of
    ``ca.pem``): valid for ``name`` (what the gateway checks) and ``extra_sans``, as a server
    and, for node-to-node use, a client."""
    files = CertFiles.named(out, name)
    refuse_existing([files], force=force)
    ca = Authority.load(certs)
    issue(ca, name, [name, *extra_sans], client=True).write(out, name, force=force)
    ca_copy = out / "ca.pem"
    ca_copy.write_bytes((certs / "ca.pem").read_bytes())
    return NodeBundle(out, ca_copy, files)


def refuse_existing(files: Iterable[CertFiles], *, force: bool) -> None:
    """:class:`CertificateError` naming the files that exist, unless ``force``."""
    existing = [str(p) for f in files for p in (f.cert, f.key) if p.exists()]
    if existing and not force:
        raise CertificateError(f"{', '.join(existing)} exist; pass --force to overwrite them")


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name, issuer: x509.Name, public: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _general_names(sans: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for san in dict.fromkeys(sans):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(san)))
        except ValueError:
            names.append(x509.DNSName(san))
    return names


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to a new file created with ``mode`` (a key is never readable by others,
    not even for a moment); an existing file is replaced."""
    try:
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except OSError as exc:
        raise CertificateError(f"cannot write {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "wb") as file:
        os.fchmod(file.fileno(), mode)
        file.write(data)
