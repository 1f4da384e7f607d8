"""Swarms of real Discovery nodes in one process, on 127.0.0.1 UDP."""

from __future__ import annotations

import socket
import time

import pytest

from mesh.dht.discovery import Discovery
from tests.dht.conftest import TTL, StartNode
from tests.dht.support import consistently, eventually, make_record

IDS = {f"node-{i}" for i in range(5)}


async def provider_ids(node: Discovery, model: str = "m") -> set[str]:
    return {record.node_id for record in await node.providers(model)}


async def test_every_provider_is_visible_from_every_node(swarm: list[Discovery]) -> None:
    async def all_see_all() -> bool:
        return all([await provider_ids(node) == IDS for node in swarm])

    await eventually(all_see_all, timeout=5)
    records = await swarm[3].providers("m")
    assert [r.url for r in records] == [f"http://127.0.0.1:{9000 + i}" for i in range(5)]
    assert all(r.expires_at > time.time() for r in records)


async def test_all_nodes_lists_every_node(swarm: list[Discovery]) -> None:
    async def listed() -> bool:
        return all([{r.node_id for r in await node.all_nodes()} == IDS for node in swarm])

    await eventually(listed, timeout=5)


async def test_node_lookup(swarm: list[Discovery]) -> None:
    async def found() -> bool:
        record = await swarm[0].node("node-3")
        return record is not None and record.url == "http://127.0.0.1:9003"

    await eventually(found, timeout=5)
    assert await swarm[0].node("nobody") is None


async def test_unknown_model_has_no_providers(swarm: list[Discovery]) -> None:
    assert await swarm[2].providers("nope") == []


async def test_clean_stop_withdraws_at_once(swarm: list[Discovery]) -> None:
    await eventually(lambda: all_see(swarm, IDS), timeout=5)
    started = time.monotonic()
    await swarm[4].stop()
    assert time.monotonic() - started < 1.5
    for node in swarm[:4]:  # no waiting: the tombstones are already there
        assert await provider_ids(node) == IDS - {"node-4"}
        assert "node-4" not in {r.node_id for r in await node.all_nodes()}
        assert await node.node("node-4") is None


async def all_see(nodes: list[Discovery], expected: set[str]) -> bool:
    return all([await provider_ids(node) == expected for node in nodes])


async def test_late_joiner_is_visible_to_all_within_seconds(swarm: list[Discovery], start_node: StartNode) -> None:
    late = await start_node("late", bootstrap=[("127.0.0.1", swarm[2].port)])
    took = await eventually(lambda: all_see([*swarm, late], IDS | {"late"}), timeout=3)
    print(f"late joiner visible everywhere after {took:.2f} s")


async def test_models_changed_are_published_soon(swarm: list[Discovery], start_node: StartNode) -> None:
    models = ["m", "old"]
    node = await start_node("changer", bootstrap=[("127.0.0.1", swarm[0].port)],
                            source=lambda: make_record("changer", models=tuple(models)),
                            heartbeat_interval=30.0, entry_ttl=60.0)  # only publish_soon() can be fast
    await eventually(lambda: _has(swarm[1], "old", "changer"), timeout=3)
    models[1] = "new"
    node.publish_soon()
    await eventually(lambda: _has(swarm[1], "new", "changer"), timeout=2)
    await eventually(lambda: _lacks(swarm[1], "old", "changer"), timeout=2)  # tombstoned, not left to expire
    assert "model:new" in node.status().keys_published and "model:old" not in node.status().keys_published


async def _has(node: Discovery, model: str, node_id: str) -> bool:
    return node_id in await provider_ids(node, model)


async def _lacks(node: Discovery, model: str, node_id: str) -> bool:
    return node_id not in await provider_ids(node, model)


async def test_node_joins_once_its_bootstrap_peer_comes_up(start_node: StartNode) -> None:
    port = _free_udp_port()
    started = time.monotonic()
    late_joiner = await start_node("waiting", bootstrap=[("127.0.0.1", port)])
    assert time.monotonic() - started < 2, "an absent bootstrap peer must not block start()"
    assert not late_joiner.status().bootstrapped
    assert await provider_ids(late_joiner) == {"waiting"}  # alone, it still sees itself
    seed = await start_node("seed", port=port)
    took = await eventually(lambda: all_see([seed, late_joiner], {"seed", "waiting"}), timeout=4)
    assert late_joiner.status().bootstrapped
    print(f"joined {took:.2f} s after the bootstrap peer came up")


async def test_node_that_lost_all_peers_rejoins_a_restarted_seed(start_node: StartNode) -> None:
    seed = await start_node("seed")
    port = seed.port
    member = await start_node("member", bootstrap=[("127.0.0.1", port)])
    await eventually(lambda: all_see([seed, member], {"seed", "member"}), timeout=3)
    await seed.stop()
    await eventually(lambda: member.status().routing_table_size == 0, timeout=3)
    reborn = await start_node("seed", port=port)
    await eventually(lambda: all_see([reborn, member], {"seed", "member"}), timeout=4)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_taken_port_raises_oserror(start_node: StartNode) -> None:
    first = await start_node("first")
    taken = Discovery(node_id="second", listen_host="127.0.0.1", port=first.port)
    with pytest.raises(OSError):
        await taken.start(lambda: make_record("second"))
    await taken.stop()  # harmless after a failed start


async def test_status_reports_the_swarm(swarm: list[Discovery]) -> None:
    await eventually(lambda: all_see(swarm, IDS), timeout=5)
    status = swarm[1].status()
    assert status.node_id == "node-1" and status.dht_port == swarm[1].port
    assert status.routing_table_size == 4 and len(status.peers) == 4
    assert f"127.0.0.1:{swarm[0].port}" in status.peers
    assert status.bootstrap_nodes == (f"127.0.0.1:{swarm[0].port}",) and status.bootstrapped
    assert set(status.keys_published) >= {"node:node-1", "model:m"}
    assert any(key.startswith("all_nodes:") for key in status.keys_published)
    assert status.publishes >= 1 and status.publish_errors == 0
    assert status.lookups >= 1 and status.lookup_errors == 0
    assert status.last_publish_at is not None and status.last_publish_at <= time.time()


async def test_a_record_source_that_fails_is_counted_not_fatal(start_node: StartNode) -> None:
    def broken() -> object:
        raise RuntimeError("engine gone")

    node = await start_node("broken", source=broken)  # type: ignore[arg-type]
    assert node.status().publish_errors == 1 and node.status().keys_published == ()


async def test_heartbeat_keeps_entries_alive_past_their_ttl(swarm: list[Discovery]) -> None:
    await eventually(lambda: all_see(swarm, IDS), timeout=5)
    await consistently(lambda: all_see(swarm, IDS), duration=TTL * 2)



async def test_silent_member_reads_and_publishes_nothing(swarm: list[Discovery]) -> None:
    """A client or operator tool joins with no record source: it sees every
    node, and no node ever sees it."""
    member = Discovery(node_id="silent", listen_host="127.0.0.1", port=0,
                       bootstrap=[("127.0.0.1", swarm[0].port)], heartbeat_interval=0.5,
                       entry_ttl=1.6, rpc_timeout=0.3)
    await member.start(None)
    try:
        async def sees_all() -> bool:
            return {r.node_id for r in await member.all_nodes()} == IDS

        await eventually(sees_all, timeout=5)
        assert member.status().keys_published == ()
        assert member.status().publishes == 0
        assert await swarm[1].node("silent") is None
        assert "silent" not in {r.node_id for r in await swarm[2].all_nodes()}
    finally:
        await member.stop()
