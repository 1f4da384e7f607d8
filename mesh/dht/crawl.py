"""The iterative Kademlia lookup, written once for both node and entry searches.

The library has two crawlers: one raises on a garbage find_node reply, the
other stops at the first round that saw any value and keeps the most common
one. Ours visits the k closest nodes that answer, always: a multi-writer key
is spread over all of them, and each may hold entries the others missed.

Rounds follow the paper and the library: ask the alpha closest not yet asked;
when a round brings nothing closer, ask every remaining one of the k closest.
A node that does not answer (within the RPC timeout) or answers garbage is
dropped from the candidate set and never re-admitted by later replies, so a
dead node cannot hold one of the k slots. The whole crawl stops starting new
rounds at `deadline` and returns what it has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from kademlia.node import Node, NodeHeap

from mesh.dht.protocol import FindReply


@dataclass(frozen=True, slots=True)
class CrawlResult:
    closest: list[Node]  # the k closest nodes that answered, nearest first
    replies: dict[bytes, FindReply]  # node id -> its (first) reply
    asked: int


async def crawl(
    *,
    target: Node,
    seeds: Sequence[Node],
    self_id: bytes,
    ksize: int,
    alpha: int,
    ask: Callable[[Node], Awaitable[FindReply | None]],
    deadline: float,
) -> CrawlResult:
    loop = asyncio.get_running_loop()
    nearest = NodeHeap(target, ksize)
    failed: set[bytes] = {self_id}  # we never ask ourselves over the network
    nearest.push([node for node in seeds if node.id not in failed])
    replies: dict[bytes, FindReply] = {}
    previous: list[bytes] | None = None
    asked = 0
    while loop.time() < deadline:
        todo = nearest.get_uncontacted()
        if not todo:
            break
        ids = nearest.get_ids()
        batch = todo if ids == previous else todo[:alpha]
        previous = ids
        for node in batch:
            nearest.mark_contacted(node)
        asked += len(batch)
        answers = await asyncio.gather(*(ask(node) for node in batch))
        for node, answer in zip(batch, answers, strict=True):
            if answer is None:
                failed.add(node.id)
            else:
                replies[node.id] = answer
                nearest.push([n for n in answer.nodes if n.id not in failed])
        nearest.remove(failed)
    closest = [node for node in nearest if node.id in replies]
    return CrawlResult(closest, replies, asked)
