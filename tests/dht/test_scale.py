"""200 providers of one model: every reply datagram stays under 8 KiB, and a reader sees all 200."""

from __future__ import annotations

import asyncio
import hashlib
import statistics
import time

import umsgpack

from mesh.dht.discovery import Discovery
from mesh.dht.protocol import RPC
from mesh.dht.records import encode_record
from mesh.dht.storage import Entry
from mesh.dht.swarm import Swarm
from tests.dht.rawclient import open_peer
from tests.dht.support import make_record

WRITERS = 200
RPC_LIMIT = 8192


async def test_200_writers_to_one_key(swarm: list[Discovery]) -> None:
    key = hashlib.sha1(b"model:big").digest()
    ids = [f"provider-{i:03d}-" + "x" * 52 for i in range(WRITERS)]  # 64 chars, like a fingerprint
    entries = [
        Entry(writer=w, seq=1, ttl=60.0, value=encode_record(make_record(w, port=10000 + i, models=("big",))))
        for i, w in enumerate(ids)
    ]
    record_bytes = statistics.mean(len(e.value or b"") for e in entries)

    # One extra kademlia node writes all 200 entries: each STORE carries one writer's entry.
    writer = Swarm(node_id=hashlib.sha1(b"bulk-writer").digest(), ksize=20, alpha=3, rpc_timeout=0.5)
    await writer.listen("127.0.0.1", 0)
    try:
        assert await writer.bootstrap([("127.0.0.1", swarm[0].port)])
        for start in range(0, WRITERS, 25):
            placements = await asyncio.gather(*(writer.put(key, e) for e in entries[start : start + 25]))
            assert all(p.acks >= len(swarm) for p in placements)

        # What a reader sees, through the public API.
        latencies = []
        for node in swarm:
            started = time.perf_counter()
            records = await node.providers("big")
            latencies.append(time.perf_counter() - started)
            assert {r.node_id for r in records} == set(ids)

        # What goes over the wire: page through each holder from a raw socket.
        client, _ = await open_peer()
        sizes: list[int] = []
        pages_per_holder = []
        for node in swarm:
            seen: list[str] = []
            after, pages = "", 0
            while True:
                datagram = await client.request(
                    ("127.0.0.1", node.port), RPC.find_entries, hashlib.sha1(b"client").digest(), key, after
                )
                sizes.append(len(datagram))
                nodes, page, more = umsgpack.unpackb(datagram[21:])
                assert (nodes != []) == (after == "")  # closer nodes ride on the first page only
                pages += 1
                seen += [item[0] for item in page]
                if not more:
                    break
                after = page[-1][0]
            assert seen == sorted(ids)
            pages_per_holder.append(pages)
        assert client.transport is not None
        client.transport.close()
    finally:
        writer.close()

    assert max(sizes) < RPC_LIMIT
    print(
        f"\n{WRITERS} writers, record {record_bytes:.0f} B: {pages_per_holder[0]} pages per holder, "
        f"reply datagrams {min(sizes)}-{max(sizes)} B (limit {RPC_LIMIT}), "
        f"~{WRITERS / pages_per_holder[0]:.0f} entries per page; "
        f"providers() saw {WRITERS}/{WRITERS}, p50 {statistics.median(latencies) * 1000:.1f} ms, "
        f"max {max(latencies) * 1000:.1f} ms"
    )
