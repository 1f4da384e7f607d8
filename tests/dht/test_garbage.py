"""Peers that speak garbage: lookups keep working, nothing raises, nothing floods the log."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import time

import pytest
import umsgpack

from mesh.dht.discovery import Discovery
from mesh.dht.protocol import RPC
from tests.dht.rawclient import open_peer
from tests.dht.support import eventually

IDS = {f"node-{i}" for i in range(5)}
GARBAGE_ID = hashlib.sha1(b"garbage").digest()
DEAD = ("127.0.0.1", 9)  # discard port: nothing answers


def garbage_replies() -> list[bytes]:
    pack = umsgpack.packb
    return [
        b"",
        b"\xc1",
        os.urandom(64),
        pack("nonsense"),
        pack({"value": "stock find_value answer"}),
        pack([[b"short", "127.0.0.1", 1]]),
        pack([[GARBAGE_ID, "not-an-ip", 5]]),
        pack([[GARBAGE_ID, "127.0.0.1", 70000], "x", None, [1, 2, 3]]),
        pack([[b"\x01" * 20, DEAD[0], DEAD[1]]]),  # well-formed, but a dead node
        pack([[b"\x02" * 20, "127.0.0.1", 1]] * 500),  # oversized node list
        pack([[], [["w", 1, 1.0, "not bytes"], ["w", 1, 1e9, b"x"]], True]),
        pack([None, [], False]),
        pack([[], [["evil", 1, 30.0, b"{not a record"]], False]),
        pack([[], [["node-1", 2**62, 30.0, b'{"n":"node-1","u":"http://evil.example:80"}']], False]),
        pack(True),
        pack(GARBAGE_ID),
    ]


def garbage_requests(key: bytes) -> list[bytes]:
    pack = umsgpack.packb
    head = b"\x00" + os.urandom(20)
    return [
        os.urandom(10),
        os.urandom(300),
        b"\x02" + os.urandom(40),
        head + b"\xc1\xc1",
        head + pack("ping"),
        head + pack([RPC.ping, "not a list"]),
        head + pack([RPC.ping, [b"x"]]),  # one-byte node id
        head + pack([RPC.find_node, [GARBAGE_ID]]),  # wrong arity
        head + pack([RPC.find_node, [GARBAGE_ID, 5]]),
        head + pack(["store", [GARBAGE_ID, key, "stock value"]]),
        head + pack(["ping", [GARBAGE_ID]]),  # stock kademlia
        head + pack(["find_value", [GARBAGE_ID, key]]),
        head + pack([RPC.store_entry, [GARBAGE_ID, key, ["w", 1, 1e9, b"x"]]]),
        head + pack([RPC.store_entry, [GARBAGE_ID, key, "nope"]]),
        head + pack([RPC.find_entries, [GARBAGE_ID, key, 7]]),
        head + pack(["__init__", []]),
        b"\x01" + os.urandom(20) + pack("unsolicited reply"),
    ]


@pytest.mark.parametrize("rounds", [3])
async def test_garbage_peer_does_not_break_lookups(
    swarm: list[Discovery], caplog: pytest.LogCaptureFixture, rounds: int
) -> None:
    caplog.set_level(logging.DEBUG)
    replies = itertools.cycle(garbage_replies())
    peer, _ = await open_peer(lambda name, args: next(replies))
    key = hashlib.sha1(b"model:m").digest()
    try:
        await eventually(lambda: _all_see(swarm), timeout=5)
        for _ in range(rounds):
            # Re-enter every routing table (a garbage answer gets us evicted), spray junk.
            for node in swarm:
                addr = ("127.0.0.1", node.port)
                peer.send_raw(b"\x00" + os.urandom(20) + umsgpack.packb([RPC.ping, [GARBAGE_ID]]), addr)
                for junk in garbage_requests(key):
                    peer.send_raw(junk, addr)
            await asyncio.sleep(0.05)
            started = time.monotonic()
            assert await _all_see(swarm)
            assert time.monotonic() - started < 5 * 1.0
        assert peer.requests_seen > 0, "the garbage peer was never asked anything"
    finally:
        assert peer.transport is not None
        peer.transport.close()
    for node in swarm:
        assert node.status().lookup_errors == 0
        assert "evil" not in {r.node_id for r in await node.all_nodes()}
    node_1 = await swarm[0].node("node-1")
    assert node_1 is not None and node_1.url.startswith("http://127.0.0.1")
    noisy = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert noisy == [], [r.getMessage() for r in noisy]


async def _all_see(swarm: list[Discovery]) -> bool:
    views = await asyncio.gather(*(node.providers("m") for node in swarm))
    return all({r.node_id for r in view} == IDS for view in views)
