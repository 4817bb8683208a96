"""The cluster CA and the certificates it signs (gateway.certs, `booagent certs init`)."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.certs import Authority, CertificateError, Initialized, init, issue
from gateway.cli import main
from gateway.tls import server_context


@pytest.fixture
def made(tmp_path: Path) -> Initialized:
    return init(tmp_path / "certs", ["gw.lan", "10.0.0.7"])


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def handshake(ca: Path, cert: Path, key: Path, name: str) -> None:
    """A TLS handshake in memory: a client trusting only ``ca`` and checking ``name`` against a
    server presenting ``cert``; raises ``ssl.SSLCertVerificationError`` if it does not verify."""
    client_context = ssl.create_default_context(cafile=str(ca))
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_context.wrap_bio(client_in, client_out, server_hostname=name)
    server = server_context(cert, key).wrap_bio(server_in, server_out, server_side=True)
    for _ in range(10):
        done = 0
        for end in (client, server):
            try:
                end.do_handshake()
                done += 1
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if done == 2:
            return
    raise AssertionError("the handshake did not finish")


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "::1", "gw.lan", "10.0.0.7"])
def test_the_gateway_certificate_verifies_against_the_ca_for_each_name(
    made: Initialized, name: str
) -> None:
    """A client that trusts only ca.pem completes a handshake for every name the cert holds."""
    handshake(made.ca.cert, made.gateway.cert, made.gateway.key, name)


def test_a_name_the_certificate_does_not_hold_fails_verification(made: Initialized) -> None:
    """The check above can fail: a name outside the SANs is refused by the client."""
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        handshake(made.ca.cert, made.gateway.cert, made.gateway.key, "elsewhere.example")


def test_the_gateway_certificate_is_signed_by_the_ca(made: Initialized) -> None:
    """cryptography's own check: the CA's key signed the gateway certificate."""
    load(made.gateway.cert).verify_directly_issued_by(load(made.ca.cert))


def test_the_sans_are_loopback_the_host_name_and_the_extra_names(made: Initialized) -> None:
    sans = load(made.gateway.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    dns = sans.value.get_values_for_type(x509.DNSName)
    ips = sans.value.get_values_for_type(x509.IPAddress)
    assert set(dns) == {"localhost", socket.gethostname(), "gw.lan"}
    assert set(ips) == {ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.0.0.7")}


def test_private_keys_are_readable_by_the_owner_only(made: Initialized) -> None:
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (made.ca.key, made.gateway.key)}
    assert modes == {"ca.key": 0o600, "gateway.key": 0o600}


def test_existing_files_are_not_overwritten(made: Initialized) -> None:
    """A second init fails naming the files, and leaves every byte as it was."""
    files = (made.ca.cert, made.ca.key, made.gateway.cert, made.gateway.key)
    before = [p.read_bytes() for p in files]
    with pytest.raises(CertificateError, match="--force") as raised:
        init(made.ca.cert.parent)
    assert str(made.ca.key) in raised.value.message
    assert [p.read_bytes() for p in files] == before


def test_force_replaces_the_ca_and_keeps_keys_private(made: Initialized) -> None:
    old_ca = made.ca.cert.read_bytes()
    again = init(made.ca.cert.parent, force=True)
    assert again.ca.cert.read_bytes() != old_ca
    assert stat.S_IMODE(again.gateway.key.stat().st_mode) == 0o600


def test_another_certificate_is_one_call_with_the_saved_ca(made: Initialized) -> None:
    """The seam `certs node NAME` will use: load the CA, issue, write."""
    ca = Authority.load(made.ca.cert.parent)
    files = issue(ca, "laptop", ["laptop.lan"], client=True).write(made.ca.cert.parent, "laptop")
    cert = load(files.cert)
    cert.verify_directly_issued_by(load(made.ca.cert))
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    handshake(made.ca.cert, files.cert, files.key, "laptop.lan")


class TestCommand:
    def test_init_writes_the_files_and_prints_no_key(self, tmp_path: Path) -> None:
        result = CliRunner().invoke(main, ["certs", "init", str(tmp_path), "--san", "gw.lan"])
        assert result.exit_code == 0, result.output
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "ca.key",
            "ca.pem",
            "gateway.key",
            "gateway.pem",
        ]
        assert "gw.lan" in result.output
        assert "PRIVATE KEY" not in result.output

    def test_a_second_init_is_refused_without_force(self, tmp_path: Path) -> None:
        CliRunner().invoke(main, ["certs", "init", str(tmp_path)])
        result = CliRunner().invoke(main, ["certs", "init", str(tmp_path)])
        assert result.exit_code == 1
        assert "pass --force" in result.output
