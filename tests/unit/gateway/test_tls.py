"""HTTPS on the gateway (gateway.tls): the real server, as `booagent serve` builds it
(gateway.runner.gateway_server), on loopback, on uvloop and on asyncio's own loop, with
certificates from `booagent certs init`, and real clients (the `openai` SDK, httpx, sockets)."""

from __future__ import annotations

import asyncio
import gc
import logging
import socket
import ssl
import struct
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import uvicorn
import uvloop
from openai import OpenAI
from structlog.testing import capture_logs

from backends.config import Member
from gateway.certs import Initialized, init
from gateway.runner import banner, gateway_server
from gateway.settings import ConfigError, load_settings
from gateway.tls import HttpsListener, ServerTls, https_url, refusal
from tests.fakes import FakeNode, fake_pool, settings_for
from tests.harness import free_port

M1 = Member(name="m1")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]
LOOPS = [
    pytest.param(asyncio.new_event_loop, id="asyncio"),
    pytest.param(uvloop.new_event_loop, id="uvloop"),
]


@dataclass
class Running:
    """A gateway serving HTTPS in a thread; ``left`` is filled when it stops: the tasks still
    on its loop after ``serve()`` returned."""

    port: int
    ca: Path
    server: uvicorn.Server
    thread: threading.Thread
    left: list[str] = field(default_factory=list)

    @property
    def https(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def trusting(self, ca: Path | None = None) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cafile=str(ca or self.ca)))

    def sdk(self) -> OpenAI:
        """The SDK, trusting the cluster CA through its own HTTP client (httpx2 since openai 3;
        it takes an ``httpx.Client`` too)."""
        verify = ssl.create_default_context(cafile=str(self.ca))
        return OpenAI(
            base_url=f"{self.https}/v1", api_key="unused", http_client=httpx2.Client(verify=verify)
        )

    def models(self) -> list[str]:
        with self.sdk() as client:
            return [m.id for m in client.models.list()]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)
        assert not self.thread.is_alive(), "the gateway did not stop"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Initialized:
    return init(tmp_path_factory.mktemp("certs"))


@pytest.fixture(autouse=True)
def _collect_leaks() -> Iterator[None]:
    """A socket or transport left unclosed fails the test that left it (warnings are errors)."""
    yield
    gc.collect()


@contextmanager
def serving(certs: Initialized, new_loop: LoopFactory) -> Iterator[Running]:
    port = free_port()
    server_settings = {"port": port, "tls_cert": str(certs.gateway.cert)}
    server_settings |= {"tls_key": str(certs.gateway.key), "log_level": "warning"}
    settings = settings_for([M1], [("a", "m1")], server=server_settings)
    pool = fake_pool([(FakeNode("a", reply="fine thanks"), M1)])
    server = gateway_server(settings, pool_factory=lambda _: pool)
    running = Running(port, certs.ca.cert, server, threading.Thread(target=lambda: None))

    def serve() -> None:
        async def serve_and_count() -> list[str]:
            await server.serve()
            current = asyncio.current_task()
            return [repr(t) for t in asyncio.all_tasks() if t is not current]

        with asyncio.Runner(loop_factory=new_loop) as runner:
            running.left = runner.run(serve_and_count())

    running.thread = threading.Thread(target=serve, daemon=True)
    running.thread.start()
    try:
        _wait_until_up(running)
        yield running
    finally:
        if running.thread.is_alive():
            running.stop()


def _wait_until_up(running: Running, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not running.server.started:
        assert time.monotonic() < deadline, "the gateway did not start"
        assert running.thread.is_alive(), "the gateway stopped while starting"
        time.sleep(0.02)
    with running.trusting() as client:
        client.get(f"{running.https}/health").raise_for_status()


@pytest.fixture(params=LOOPS)
def gateway(request: pytest.FixtureRequest, certs: Initialized) -> Iterator[Running]:
    with serving(certs, request.param) as running:
        yield running


def plain(port: int, raw: bytes) -> bytes:
    """Send ``raw`` on a plain TCP connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


HTTPS_REQUIRED = {
    "type": "invalid_request_error",
    "param": None,
    "code": "https_required",
}


class TestHttps:
    def test_the_openai_sdk_lists_models_over_https(self, gateway: Running) -> None:
        assert "booagent-cluster" in gateway.models()

    def test_ssl_cert_file_is_enough_for_the_sdk(
        self, gateway: Running, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """As the README says: no code, only ``SSL_CERT_FILE`` naming ca.pem."""
        monkeypatch.setenv("SSL_CERT_FILE", str(gateway.ca))
        with OpenAI(base_url=f"{gateway.https}/v1", api_key="unused") as client:
            assert "booagent-cluster" in [m.id for m in client.models.list()]

    def test_a_streamed_chat_answer_arrives_over_https(self, gateway: Running) -> None:
        with gateway.sdk() as client:
            stream = client.chat.completions.create(
                model="booagent-cluster",
                messages=[{"role": "user", "content": "hi"}],
                stream=True,
            )
            text = "".join(
                chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices
            )
        assert text == "fine thanks"

    def test_a_client_that_does_not_trust_the_ca_fails_and_the_server_stays_up(
        self, gateway: Running
    ) -> None:
        with (
            httpx.Client(verify=ssl.create_default_context()) as stranger,
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"),
        ):
            stranger.get(f"{gateway.https}/v1/models")
        assert "booagent-cluster" in gateway.models()


class TestPlainHttp:
    def test_plain_http_gets_a_400_naming_the_https_url(self, gateway: Running) -> None:
        response = httpx.get(f"http://127.0.0.1:{gateway.port}/v1/models")
        assert response.status_code == 400
        url = f"https://127.0.0.1:{gateway.port}/v1/models"
        message = f"this port speaks HTTPS: use {url}"
        assert response.json() == {"error": {"message": message, **HTTPS_REQUIRED}}
        assert response.headers["connection"] == "close"

    def test_a_plain_post_with_a_body_gets_the_400_then_a_clean_close(
        self, gateway: Running
    ) -> None:
        """The body the gateway never reads does not reset the connection: the client reads
        the whole answer and then an orderly end (a reset can discard an answer in flight)."""
        body = b"x" * 32 * 1024 * 1024
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\n"
        answer = plain(gateway.port, head + b"Content-Length: %d\r\n\r\n" % len(body) + body)
        assert answer.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        assert answer.endswith(b'"code":"https_required"}}')

    def test_https_is_served_after_plain_http(self, gateway: Running) -> None:
        for _ in range(3):
            httpx.get(f"http://127.0.0.1:{gateway.port}/v1/models")
        assert "booagent-cluster" in gateway.models()

    def test_a_refusal_is_one_info_log_line(self, gateway: Running) -> None:
        with capture_logs() as logs:
            httpx.get(f"http://127.0.0.1:{gateway.port}/health")
        refused = [e for e in logs if e["event"] == "tls_refused"]
        assert [(e["reason"], e["log_level"]) for e in refused] == [("plain_http", "info")]


class TestBrokenClients:
    def test_a_client_that_resets_mid_request_is_one_log_line(self, gateway: Running) -> None:
        with capture_logs() as logs:
            with socket.create_connection(("127.0.0.1", gateway.port)) as sock:
                sock.sendall(b"GET /v1/models HTTP/1.1\r\n")
                time.sleep(0.2)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            assert "booagent-cluster" in gateway.models()
        refused = [(e["reason"], e["log_level"]) for e in logs if e["event"] == "tls_refused"]
        assert refused == [("connection_lost", "info")]


class TestBrokenHandshakes:
    def test_garbage_after_a_handshake_byte_is_closed_quietly(
        self, gateway: Running, caplog: pytest.LogCaptureFixture
    ) -> None:
        """No traceback, no warning: one info line; the server keeps serving."""
        logging.getLogger("uvicorn.error").addHandler(caplog.handler)
        try:
            with capture_logs() as logs:
                assert plain(gateway.port, b"\x16garbage, not a TLS record\r\n\r\n") == b""
                assert "booagent-cluster" in gateway.models()
        finally:
            logging.getLogger("uvicorn.error").removeHandler(caplog.handler)
        assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
        refused = [(e["reason"], e["log_level"]) for e in logs if e["event"] == "tls_refused"]
        assert refused == [("handshake_failed", "info")]

    def test_tls_1_1_is_refused_by_the_server(self, gateway: Running) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(gateway.ca)
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
        with capture_logs() as logs, socket.create_connection(("127.0.0.1", gateway.port)) as sock:
            with pytest.raises(ssl.SSLError):
                context.wrap_socket(sock, server_hostname="localhost")
            assert "booagent-cluster" in gateway.models()
        errors = [e["error"] for e in logs if e["event"] == "tls_refused"]
        assert len(errors) == 1
        assert "UNSUPPORTED_PROTOCOL" in errors[0]


class TestShutdown:
    def test_shutdown_leaves_no_task_and_releases_the_port(self, gateway: Running) -> None:
        with gateway.trusting() as client:
            client.get(f"{gateway.https}/v1/models").raise_for_status()
            gateway.stop()
        assert gateway.left == []
        with socket.socket() as again:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", gateway.port))
            again.listen()

    def test_a_silent_connection_does_not_hold_up_shutdown(self, gateway: Running) -> None:
        with socket.create_connection(("127.0.0.1", gateway.port)) as silent:
            started = time.monotonic()
            gateway.stop()
            assert time.monotonic() - started < 3
            assert silent.recv(1) == b""
        assert gateway.left == []


class TestReload:
    def test_new_certificates_are_served_without_a_restart(self, tmp_path: Path) -> None:
        """Files replaced on disk are picked up within the watch interval; connections
        accepted from then on use them."""
        own = init(tmp_path / "own")
        other = init(tmp_path / "other")
        with serving(own, asyncio.new_event_loop) as gateway:
            own.gateway.cert.write_bytes(other.gateway.cert.read_bytes())
            own.gateway.key.write_bytes(other.gateway.key.read_bytes())
            deadline = time.monotonic() + 15
            while not _serves_with(gateway, other.ca.cert):
                assert time.monotonic() < deadline, "the new certificate was not taken up"
                time.sleep(0.2)

    def test_unusable_files_keep_the_current_certificate(self, tmp_path: Path) -> None:
        own = init(tmp_path / "own")
        tls = ServerTls(own.gateway.cert, own.gateway.key)
        before = tls.context
        assert not tls.refresh(), "nothing changed"
        own.gateway.cert.write_text("not a certificate")
        assert not tls.refresh() and tls.context is before


def _serves_with(gateway: Running, ca: Path) -> bool:
    try:
        with gateway.trusting(ca) as client:
            return client.get(f"{gateway.https}/health").status_code == 200
    except httpx.ConnectError:
        return False


class TestListener:
    """The listener alone, with a short timeout and a trivial protocol."""

    @pytest.mark.parametrize("new_loop", LOOPS)
    def test_a_connection_that_sends_nothing_is_closed_after_the_timeout(
        self, certs: Initialized, new_loop: LoopFactory
    ) -> None:
        async def main() -> tuple[bytes, float]:
            sock = socket.create_server(("127.0.0.1", 0))
            sock.setblocking(False)
            tls = ServerTls(certs.gateway.cert, certs.gateway.key)
            listener = HttpsListener(sock, asyncio.Protocol, tls, refusal, timeout=0.2)
            reader, writer = await asyncio.open_connection(*sock.getsockname())
            started = time.monotonic()
            answer = await asyncio.wait_for(reader.read(), 5)
            waited = time.monotonic() - started
            writer.close()
            listener.close()
            await listener.wait_closed()
            return answer, waited

        with asyncio.Runner(loop_factory=new_loop) as runner:
            answer, waited = runner.run(main())
        assert answer == b""
        assert 0.15 < waited < 2


class TestUrl:
    @pytest.mark.parametrize(
        ("head", "local", "url"),
        [
            (
                b"GET /v1/models HTTP/1.1\r\nHost: gw.lan:8100\r\n\r\n",
                ("10.0.0.2", 8100),
                "https://gw.lan:8100/v1/models",
            ),
            (
                b"GET /v1/models HTTP/1.0\r\n\r\n",
                ("10.0.0.2", 8100),
                "https://10.0.0.2:8100/v1/models",
            ),
            (
                b"GET / HTTP/1.1\r\nhost: [::1]:8100\r\n\r\n",
                ("::1", 8100, 0, 0),
                "https://[::1]:8100/",
            ),
            (b"SSH-2.0-OpenSSH_9.6\r\n", ("::1", 8100, 0, 0), "https://[::1]:8100/"),
            (
                b'GET /<script> HTTP/1.1\r\nHost: a"b\r\n\r\n',
                ("127.0.0.1", 1),
                "https://127.0.0.1:1/<script>",
            ),
        ],
        ids=["host-header", "no-host", "ipv6", "not-http", "odd-host"],
    )
    def test_the_https_url_is_the_request_s_own(self, head: bytes, local: Any, url: str) -> None:
        assert https_url(head, local) == url


class TestSettings:
    def write(self, tmp_path: Path, **server: str) -> Path:
        path = tmp_path / "cluster.yaml"
        lines = [f"  {k}: {v}" for k, v in server.items()]
        path.write_text(
            "members: [{name: m1}]\nnodes: [{name: a, member: m1, url: 'http://x:1'}]\n"
            "server:\n" + "\n".join(lines or ["  port: 8100"]) + "\n"
        )
        return path

    def test_cert_and_key_from_the_file_serve_https(
        self, tmp_path: Path, certs: Initialized
    ) -> None:
        path = self.write(
            tmp_path, tls_cert=str(certs.gateway.cert), tls_key=str(certs.gateway.key)
        )
        server = load_settings(path, {}).server
        assert server.tls_files == (certs.gateway.cert, certs.gateway.key)
        assert server.scheme == "https"

    def test_the_environment_sets_them(self, tmp_path: Path, certs: Initialized) -> None:
        env = {
            "BOOAGENT_TLS_CERT": str(certs.gateway.cert),
            "BOOAGENT_TLS_KEY": str(certs.gateway.key),
        }
        settings = load_settings(self.write(tmp_path), env)
        assert settings.server.tls_files == (certs.gateway.cert, certs.gateway.key)
        assert "is ready at https://127.0.0.1:8100/v1" in banner(settings)
        assert f"curl --cacert {certs.ca.cert}" in banner(settings)

    def test_empty_environment_values_turn_https_off(
        self, tmp_path: Path, certs: Initialized
    ) -> None:
        path = self.write(
            tmp_path, tls_cert=str(certs.gateway.cert), tls_key=str(certs.gateway.key)
        )
        env = {"BOOAGENT_TLS_CERT": "", "BOOAGENT_TLS_KEY": ""}
        settings = load_settings(path, env)
        assert settings.server.tls_files is None
        assert "is ready at http://127.0.0.1:8100/v1" in banner(settings)

    def test_a_cert_without_a_key_names_the_key(self, tmp_path: Path, certs: Initialized) -> None:
        path = self.write(tmp_path, tls_cert=str(certs.gateway.cert))
        with pytest.raises(ConfigError, match=r"server\.tls_key is missing"):
            load_settings(path, {})

    def test_an_unreadable_file_is_named(self, tmp_path: Path, certs: Initialized) -> None:
        missing = tmp_path / "nope.key"
        path = self.write(tmp_path, tls_cert=str(certs.gateway.cert), tls_key=str(missing))
        with pytest.raises(ConfigError, match=f"cannot read {missing}"):
            load_settings(path, {})

    def test_a_file_that_is_not_pem_is_named(self, tmp_path: Path, certs: Initialized) -> None:
        der = tmp_path / "cert.der"
        der.write_bytes(b"\x30\x82\x01\x00")
        path = self.write(tmp_path, tls_cert=str(der), tls_key=str(certs.gateway.key))
        with pytest.raises(ConfigError, match=f"{der} is not a PEM file"):
            load_settings(path, {})

    def test_a_key_of_another_certificate_is_refused(
        self, tmp_path: Path, certs: Initialized
    ) -> None:
        path = self.write(tmp_path, tls_cert=str(certs.gateway.cert), tls_key=str(certs.ca.key))
        with pytest.raises(ConfigError, match="not a certificate and its private key"):
            load_settings(path, {})
