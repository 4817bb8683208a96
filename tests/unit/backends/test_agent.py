"""The node agent (backends.agent) behind its real mutual-TLS listener, reached by the
gateway's own node client (backends.http.HttpNode) with certificates made by the project's
`booagent certs` code. The "local server" is a small aiohttp app on loopback that streams
slowly and records what it saw."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from backends.base import ChatRequest
from backends.config import Node, Timeouts
from backends.errors import NodeUnreachable
from backends.http import HttpNode
from backends.mtls import TlsFiles, gateway_context, node_context
from gateway.certs import Authority, init, issue, node_bundle
from tests.agent_kit import MEMBER, Cluster, Local, Running, make_cluster, running_agent

pytestmark = pytest.mark.anyio


@pytest.fixture
def cluster(tmp_path: Path) -> Cluster:
    return make_cluster(tmp_path)


@pytest.fixture
async def agent(cluster: Cluster) -> AsyncIterator[Running]:
    async for running in running_agent(Local(), cluster.node_tls()):
        yield running


def _node(
    port: int, session: aiohttp.ClientSession, tls: TlsFiles, name: str = "laptop"
) -> HttpNode:
    spec = Node(
        name="laptop/tiny", member=MEMBER, url=f"https://127.0.0.1:{port}/m/{MEMBER}",
        tls_name=name,
    )  # fmt: skip
    return HttpNode(spec, session, Timeouts(first_token=5, stall=5, total=20), tls=tls)


async def _answer(node: HttpNode) -> str:
    request = ChatRequest({"messages": [{"role": "user", "content": "hi"}]})
    async with node.stream(request) as reply:
        return "".join([c.content async for c in reply.chunks])


class TestServing:
    async def test_the_gateway_learns_the_kind_behind_therunning_agent(
        self, agent: Running, cluster: Cluster
    ) -> None:
        """The health answer is the agent's own, with the local server's kind and slots."""
        async with aiohttp.ClientSession() as session:
            probe = await _node(agent.port, session, cluster.gateway_tls()).probe(2.0)
        assert (probe.state, probe.kind, probe.slots) == ("ready", "llama_cpp_server", 1)

    async def test_a_stream_is_relayed_through_mutual_tls(
        self, agent: Running, cluster: Cluster
    ) -> None:
        async with aiohttp.ClientSession() as session:
            text = await _answer(_node(agent.port, session, cluster.gateway_tls()))
        assert text == "w0 w1 w2 w3 w4 "
        assert agent.local.bodies[0]["model"] == MEMBER

    async def test_a_starting_server_is_loading_not_down(self, cluster: Cluster) -> None:
        async for running in running_agent(Local(), cluster.node_tls(), ready=False):
            async with aiohttp.ClientSession() as session:
                probe = await _node(running.port, session, cluster.gateway_tls()).probe(2.0)
            assert probe.state == "loading"

    async def test_the_gateway_leaving_cancels_the_local_request(self, cluster: Cluster) -> None:
        """A gateway that closes its stream mid-answer frees the local server at once."""
        async for running in running_agent(Local(words=50, delay=0.05), cluster.node_tls()):
            async with aiohttp.ClientSession() as session:
                node = _node(running.port, session, cluster.gateway_tls())
                request = ChatRequest({"messages": [{"role": "user", "content": "hi"}]})
                async with node.stream(request) as reply:
                    async for chunk in reply.chunks:
                        if chunk.is_content:
                            break
            deadline = time.monotonic() + 3
            while running.local.cancelled == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert running.local.cancelled == 1


class TestRefusals:
    async def test_a_gateway_of_another_cluster_is_refused_on_both_sides(
        self, agent: Running, tmp_path: Path
    ) -> None:
        """A gateway whose certificate another CA signed cannot use the node: the gateway's
        error names the handshake, the agent's log names the unknown issuer."""
        init(tmp_path / "other")
        stranger = TlsFiles(
            tmp_path / "other" / "gateway.pem", tmp_path / "other" / "gateway.key",
            agent_ca(tmp_path), gateway_context,
        )  # fmt: skip
        with capture_logs() as logs:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(NodeUnreachable) as refused:
                    await _answer(_node(agent.port, session, stranger))
        assert refused.value.node == "laptop/tiny"
        assert "does not accept this gateway's certificate" in refused.value.message
        (line,) = [e for e in logs if e["event"] == "tls_refused"]
        assert "unable to get local issuer certificate" in line["error"]

    async def test_a_node_of_another_cluster_is_refused_by_the_gateway(
        self, cluster: Cluster, tmp_path: Path
    ) -> None:
        init(tmp_path / "rogue-ca")
        node_bundle(tmp_path / "rogue-ca", "laptop", tmp_path / "rogue")
        rogue = TlsFiles(
            tmp_path / "rogue" / "laptop.pem", tmp_path / "rogue" / "laptop.key",
            cluster.certs / "ca.pem", node_context,
        )  # fmt: skip
        async for running in running_agent(Local(), rogue):
            async with aiohttp.ClientSession() as session:
                probe = await _node(running.port, session, cluster.gateway_tls()).probe(2.0)
            assert probe.state == "down"
            assert "refused the node's TLS certificate" in probe.error

    async def test_a_node_whose_certificate_names_another_node_is_refused(
        self, agent: Running, cluster: Cluster
    ) -> None:
        async with aiohttp.ClientSession() as session:
            node = _node(agent.port, session, cluster.gateway_tls(), name="desktop")
            probe = await node.probe(2.0)
        assert probe.state == "down" and "desktop" in probe.error

    async def test_a_client_without_a_certificate_is_told_what_is_missing(
        self, agent: Running, cluster: Cluster
    ) -> None:
        context = ssl.create_default_context(cafile=cluster.certs / "ca.pem")
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"https://127.0.0.1:{agent.port}/info", ssl=context, server_hostname="laptop"
            ) as response,
        ):
            body = await response.json()
        assert response.status == 403
        assert body["error"]["code"] == "client_certificate_required"

    async def test_plain_http_is_answered_in_words(self, agent: Running) -> None:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{agent.port}/info") as response,
        ):
            body = await response.json()
        assert response.status == 400 and body["error"]["code"] == "https_required"
        assert f"https://127.0.0.1:{agent.port}/info" in body["error"]["message"]

    async def test_an_expired_gateway_certificate_is_refused(
        self, agent: Running, cluster: Cluster, tmp_path: Path
    ) -> None:
        ca = Authority.load(cluster.certs)
        issue(ca, "old gateway", ["localhost"], client=True, days=0).write(tmp_path, "old")
        await asyncio.sleep(1.1)
        old = TlsFiles(tmp_path / "old.pem", tmp_path / "old.key", cluster.certs / "ca.pem",
                       gateway_context)  # fmt: skip
        with capture_logs() as logs:
            async with aiohttp.ClientSession() as session:
                with pytest.raises(NodeUnreachable):
                    await _answer(_node(agent.port, session, old))
        (line,) = [e for e in logs if e["event"] == "tls_refused"]
        assert "certificate has expired" in line["error"]


async def test_a_renewed_node_certificate_is_used_without_a_restart(
    cluster: Cluster,
) -> None:
    """Rewriting the node's certificate files: new connections get the new certificate."""
    tls = cluster.node_tls()
    async for running in running_agent(Local(), tls):
        before = await _shown_certificate(running.port, cluster)
        node_bundle(cluster.certs, "laptop", cluster.node, force=True)
        assert tls.refresh()
        after = await _shown_certificate(running.port, cluster)
        assert before != after
        async with aiohttp.ClientSession() as session:
            assert await _answer(_node(running.port, session, cluster.gateway_tls()))


async def _shown_certificate(port: int, cluster: Cluster) -> bytes:
    context = cluster.gateway_tls().context
    _, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="laptop"
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    assert der is not None
    return bytes(der)


def agent_ca(tmp_path: Path) -> Path:
    return tmp_path / "certs" / "ca.pem"
