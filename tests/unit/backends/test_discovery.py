"""backends.discovery without multicast: announcements handed to `Discovery.consider` as the
mDNS browser would, checked against a real node agent over mutual TLS, joining a real pool.
(Announcing and browsing over mDNS between machines is tested in tests/netns_test.)"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from structlog.testing import capture_logs

from backends.announce import Announced
from backends.build import node_factory
from backends.config import Cluster, Member, Policies
from backends.discovery import Discovery
from backends.mtls import fingerprint
from backends.pool import Pool
from tests.agent_kit import MEMBER, Local, Running, make_cluster, running_agent

pytestmark = pytest.mark.anyio


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Discovery, Running, Announced]]:
    cluster = make_cluster(tmp_path)
    async for agent in running_agent(Local(), cluster.node_tls()):
        async with aiohttp.ClientSession() as session:
            members = [Member(name=MEMBER, n_ctx=2048), Member(name="other")]
            policies = Policies()
            tls = cluster.gateway_tls()
            pool = Pool([], policies, rng=random.Random(0), members=members)
            pool.spawn = node_factory(members, session, policies, tls=tls)
            discovery = Discovery(pool, Cluster(forget_after=10), tls, session, clock=Clock())
            announced = Announced(
                "laptop", ("127.0.0.1",), agent.port, ((MEMBER, 1, 2048),),
                fingerprint(cluster.node / "laptop.pem"),
            )  # fmt: skip
            yield discovery, agent, announced
            await pool.aclose()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_a_checked_agent_joins_with_its_members(
    world: tuple[Discovery, Running, Announced],
) -> None:
    discovery, agent, announced = world
    with capture_logs() as logs:
        await discovery.consider(announced)
    (node,) = discovery.pool.nodes
    assert node.name == "laptop/tiny" and node.spec.tls_name == "laptop"
    assert node.spec.url == f"https://127.0.0.1:{agent.port}/m/{MEMBER}"
    assert (node.health.readiness, node.kind, node.admission.capacity) == (
        "ready", "llama_cpp_server", 1,
    )  # fmt: skip
    assert [e["event"] for e in logs] == ["node_joined"]


async def test_an_agent_showing_another_certificate_is_refused(
    world: tuple[Discovery, Running, Announced],
) -> None:
    """The certificate must be the one announced, not only one the CA signed."""
    discovery, _, announced = world
    forged = Announced(announced.name, announced.addresses, announced.port, announced.members,
                       "0" * 64)  # fmt: skip
    with capture_logs() as logs:
        await discovery.consider(forged)
        await discovery.consider(forged)
    assert discovery.pool.nodes == []
    refused = [e for e in logs if e["event"] == "node_refused"]
    assert len(refused) == 1 and "fingerprint differs" in refused[0]["reason"]


async def test_only_allowed_agents_join(world: tuple[Discovery, Running, Announced]) -> None:
    discovery, _, announced = world
    discovery.cluster = Cluster(allow=("desktop",))
    with capture_logs() as logs:
        await discovery.consider(announced)
    assert discovery.pool.nodes == []
    assert "cluster.allow" in logs[0]["reason"]


async def test_an_agent_serving_no_declared_member_is_refused(
    world: tuple[Discovery, Running, Announced], tmp_path: Path
) -> None:
    discovery, _, announced = world
    discovery.pool.members.pop(MEMBER)
    with capture_logs() as logs:
        await discovery.consider(announced)
    assert discovery.pool.nodes == []
    assert "serves no member the config declares (it serves: tiny)" in logs[0]["reason"]


async def test_goodbye_takes_the_nodes_out(world: tuple[Discovery, Running, Announced]) -> None:
    discovery, _, announced = world
    await discovery.consider(announced)
    await discovery.leave("laptop", "said goodbye")
    assert discovery.pool.nodes == [] and discovery.joined == {}


async def test_an_agent_down_for_forget_after_leaves(
    world: tuple[Discovery, Running, Announced],
) -> None:
    """A machine switched off says nothing: its nodes leave once down for ``forget_after``."""
    discovery, _, announced = world
    await discovery.consider(announced)
    clock = discovery.clock
    assert isinstance(clock, Clock)
    discovery.pool.nodes[0].health.probed("down", "no answer")
    await discovery.expire_once()
    clock.now += 9
    await discovery.expire_once()
    assert len(discovery.pool.nodes) == 1
    clock.now += 1
    await discovery.expire_once()
    assert discovery.pool.nodes == []


async def test_the_same_announcement_again_changes_nothing(
    world: tuple[Discovery, Running, Announced],
) -> None:
    discovery, _, announced = world
    await discovery.consider(announced)
    first = discovery.pool.nodes[0]
    await discovery.consider(announced)
    assert discovery.pool.nodes == [first]


async def test_an_agent_forgotten_for_being_down_rejoins_when_it_answers(
    world: tuple[Discovery, Running, Announced],
) -> None:
    """Its unchanged announcement brings no news, so the gateway asks it again itself."""
    discovery, _, announced = world
    await discovery.consider(announced)
    clock = discovery.clock
    assert isinstance(clock, Clock)
    discovery.pool.nodes[0].health.probed("down", "no answer")
    await discovery.expire_once()
    clock.now += 10
    await discovery.expire_once()
    assert discovery.pool.nodes == [] and "laptop" in discovery.dormant
    await discovery.expire_once()
    assert [n.name for n in discovery.pool.nodes] == ["laptop/tiny"]
    assert discovery.dormant == {}
