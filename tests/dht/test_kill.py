"""A node killed with SIGKILL (no withdraw) vanishes from every view within its entry ttl."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from mesh.dht.discovery import Discovery
from tests.dht.conftest import HEARTBEAT, TTL
from tests.dht.support import eventually

ROOT = Path(__file__).resolve().parents[2]


async def test_killed_node_vanishes_within_ttl(swarm: list[Discovery]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.dht.peer_process", "victim", str(swarm[0].port), str(HEARTBEAT), str(TTL),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=20)  # type: ignore[union-attr]
        assert line.startswith(b"port "), line

        async def everyone_sees(present: bool) -> bool:
            views = await asyncio.gather(*(node.providers("m") for node in swarm))
            return all(("victim" in {r.node_id for r in view}) is present for view in views)

        await eventually(lambda: everyone_sees(True), timeout=5)
        proc.kill()
        await proc.wait()
        killed = time.monotonic()
        await eventually(lambda: everyone_sees(False), timeout=TTL + 3, interval=0.02)
        gone_after = time.monotonic() - killed
        print(f"killed node gone from all views {gone_after:.2f} s after SIGKILL (ttl {TTL} s)")
        assert gone_after <= TTL + 1.0  # ttl from the last heartbeat, plus one lookup on a busy box
        # Lookups stay fast once the dead peer has cost its one timeout.
        started = time.monotonic()
        await eventually(lambda: everyone_sees(False), timeout=1)
        assert await swarm[1].node("victim") is None
        assert time.monotonic() - started < 2.5
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
