"""A Discovery node in its own process, for kill -9 tests.

usage: python -m tests.dht.peer_process NODE_ID BOOTSTRAP_PORT HEARTBEAT TTL
Prints "port <n>" once started, then runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

from mesh.dht.discovery import Discovery
from tests.dht.support import make_record


async def main(node_id: str, bootstrap_port: int, heartbeat: float, ttl: float) -> None:
    node = Discovery(
        node_id=node_id,
        listen_host="127.0.0.1",
        port=0,
        bootstrap=[("127.0.0.1", bootstrap_port)],
        heartbeat_interval=heartbeat,
        entry_ttl=ttl,
        rpc_timeout=0.3,
    )
    await node.start(lambda: make_record(node_id, port=9999))
    print(f"port {node.port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])))
