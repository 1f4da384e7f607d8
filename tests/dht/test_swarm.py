"""Swarm-level behaviour: hand-over to newcomers, isolation from stock kademlia, uvloop."""

from __future__ import annotations

import asyncio
import hashlib

import pytest
from kademlia.network import Server

from mesh.dht.discovery import Discovery
from mesh.dht.records import encode_record
from mesh.dht.storage import Entry
from mesh.dht.swarm import Swarm
from tests.dht.conftest import StartNode
from tests.dht.support import eventually, make_record

KEY = hashlib.sha1(b"model:m").digest()


def entry(writer: str) -> Entry:
    return Entry(writer=writer, seq=1, ttl=30.0, value=encode_record(make_record(writer)))


async def new_swarm(name: str) -> Swarm:
    swarm = Swarm(node_id=hashlib.sha1(name.encode()).digest(), ksize=20, alpha=3, rpc_timeout=0.3)
    await swarm.listen("127.0.0.1", 0)
    return swarm


@pytest.mark.parametrize("writers", [1, 300])
async def test_newcomer_receives_the_entries_it_should_hold(writers: int) -> None:
    """welcome_if_new hashes the key once (library bug fixed) and paces the hand-over."""
    old, new = await new_swarm("old"), await new_swarm("new")
    try:
        for i in range(writers):
            assert (await old.put(KEY, entry(f"w{i:03d}"))).acks == 1  # alone: stored locally only
        assert await new.bootstrap([("127.0.0.1", old.port)])
        await eventually(lambda: len(new.storage.live(KEY)) == writers, timeout=5)
        remaining = max(e.ttl for e in new.storage.live(KEY))
        assert remaining < 30.0  # relayed with the ttl it had left, not a fresh one
    finally:
        old.close()
        new.close()


async def test_stock_kademlia_nodes_stay_outside_the_swarm() -> None:
    ours = Discovery(node_id="ours", listen_host="127.0.0.1", port=0, rpc_timeout=0.3)
    await ours.start(lambda: make_record("ours"))
    stock = Server()  # the library as shipped, as a LlamaNet node would run it
    await stock.listen(0, interface="127.0.0.1")
    stock.protocol._wait_timeout = 0.3  # its fixed 5 s would only slow the test down
    try:
        assert await stock.bootstrap([("127.0.0.1", ours.port)]) == []
        assert await stock.set("model:m", "a single stock value") is False
        assert ours.status().routing_table_size == 0
        assert [r.node_id for r in await ours.providers("m")] == ["ours"]
    finally:
        stock.stop()
        await ours.stop()


def test_runs_under_uvloop() -> None:
    uvloop = pytest.importorskip("uvloop")

    async def two_nodes() -> set[str]:
        a = Discovery(node_id="a", listen_host="127.0.0.1", port=0, heartbeat_interval=0.5, rpc_timeout=0.3)
        await a.start(lambda: make_record("a"))
        b = Discovery(node_id="b", listen_host="127.0.0.1", port=0, bootstrap=[("127.0.0.1", a.port)],
                      heartbeat_interval=0.5, rpc_timeout=0.3)
        await b.start(lambda: make_record("b"))
        try:
            await eventually(lambda: both_seen(a), timeout=3)
            return {r.node_id for r in await b.providers("m")}
        finally:
            await asyncio.gather(b.stop(), a.stop())

    async def both_seen(node: Discovery) -> bool:
        return {r.node_id for r in await node.providers("m")} == {"a", "b"}

    assert uvloop.run(two_nodes()) == {"a", "b"}


def _has_ipv6() -> bool:
    import socket

    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 on this host")
async def test_dual_stack_node_and_ipv4_node_see_each_other(start_node: StartNode) -> None:
    v6 = await start_node("dual", listen_host="::")
    v4 = await start_node("plain", bootstrap=[("127.0.0.1", v6.port)])

    async def both() -> bool:
        views = await asyncio.gather(v6.providers("m"), v4.providers("m"))
        return all({r.node_id for r in view} == {"dual", "plain"} for view in views)

    await eventually(both, timeout=4)
    assert v6.status().peers == (f"127.0.0.1:{v4.port}",)  # stored unmapped, usable by IPv4 peers
