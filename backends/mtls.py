"""Mutual TLS between the gateway and the node agents of other machines.

Every machine of a cluster holds the cluster CA's certificate (``ca.pem``) and a certificate
of its own signed by it (``booagent certs init`` makes the CA and the gateway's; ``booagent
certs node NAME`` a node's). A node agent accepts only clients whose certificate the CA signed
(:func:`node_context`); the gateway accepts only nodes whose certificate the CA signed for the
node's name (:func:`gateway_context`, with the name as ``server_hostname``). TLS 1.2 or later.

:class:`TlsFiles` holds a context and rebuilds it when its files change on disk
(:meth:`TlsFiles.refresh`, called now and then): a renewed certificate is used for new
connections without a restart; a broken file keeps the current context, with an error in the
log. Keys are read from files only and never logged.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Callable
from pathlib import Path

import structlog

from backends.errors import BooagentError
from backends.filewatch import Watched, every

_log = structlog.get_logger("booagent.tls")


class TlsError(BooagentError):
    """A certificate, key or CA file is missing or unusable; the message names it."""

    code = "tls_error"


def node_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """A node agent's server side: its certificate; a client certificate is asked for and,
    when one is shown, must verify against the cluster CA (else the handshake fails with the
    reason as the alert: unknown CA, expired). A client that shows none completes the
    handshake and is refused in words by the agent (:mod:`backends.agent`), since with TLS 1.3
    such a client would otherwise only see its connection dropped."""
    context = _context(ssl.PROTOCOL_TLS_SERVER, cert, key, ca)
    context.verify_mode = ssl.CERT_OPTIONAL
    # TLS 1.2 checks the client's certificate inside the handshake, so a refused gateway gets
    # the reason as an alert ("unknown ca", "certificate expired"); TLS 1.3 checks it after
    # the client has finished, and the client sees only a reset.
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    return context


def gateway_context(cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """The gateway's client side: its certificate to present, and only the cluster CA trusted
    (hostnames are checked against the node's name, which its certificate carries)."""
    context = _context(ssl.PROTOCOL_TLS_CLIENT, cert, key, ca)
    context.check_hostname = True
    return context


def _context(protocol: int, cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(protocol)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot use certificate {cert} with key {key}: {_reason(exc)}") from exc
    try:
        context.load_verify_locations(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"cannot use CA certificate {ca}: {_reason(exc)}") from exc
    return context


def _reason(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)


def fingerprint(cert: Path) -> str:
    """SHA-256 of the certificate (DER), hex: what a node announces and the gateway checks."""
    return der_fingerprint(ssl.PEM_cert_to_DER_cert(cert.read_text()))


def der_fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


class TlsFiles:
    """A TLS context built from ``cert``, ``key`` and ``ca``, rebuilt when they change."""

    def __init__(
        self,
        cert: Path,
        key: Path,
        ca: Path,
        build: Callable[[Path, Path, Path], ssl.SSLContext],
    ) -> None:
        self.paths = (cert, key, ca)
        self._build = build
        self._files = Watched(*self.paths)
        self.context = build(cert, key, ca)

    @property
    def cert(self) -> Path:
        return self.paths[0]

    def refresh(self) -> bool:
        """Rebuild the context if a file changed; True when a new one is in force."""
        if not self._files.changed():
            return False
        try:
            self.context = self._build(*self.paths)
        except TlsError as exc:
            _log.error("tls_reload_failed", error=exc.message)
            return False
        _log.info("tls_reloaded", cert=str(self.cert), fingerprint=fingerprint(self.cert)[:16])
        return True

    async def watch(self, interval: float = 2.0) -> None:
        """Refresh every ``interval`` seconds, until cancelled."""
        await every(interval, self.refresh)
