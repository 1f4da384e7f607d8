"""Route selection: pure, no I/O, the same input always gives the same order
for the same random source.

`choose_route` returns every usable candidate in the order to try them; the
proxy walks that list when a peer fails before its first byte.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from mesh.router.peers import Candidate
from mesh.wire import Strategy

DEFAULT_STRATEGY: Strategy = "load_balanced"


def choose_route(strategy: Strategy, *, local: Candidate | None,
                 peers: Sequence[Candidate], rng: random.Random) -> list[Candidate]:
    if strategy == "local":
        return [local] if local is not None else []
    pool = ([local] if local is not None else []) + list(peers)
    if len(pool) <= 1:
        return pool
    rng.shuffle(pool)  # ties break at random: no herding onto one peer
    if strategy == "fastest":
        return sorted(pool, key=_speed_rank)
    return _power_of_two(pool, rng)


def _speed_rank(c: Candidate) -> tuple[float, float, float]:
    # Highest recent tokens/s first; then the nearest; then the least loaded.
    return (-round(c.tokens_per_second, 1), round(c.latency_s, 3), c.load)


def _load_rank(c: Candidate) -> tuple[float, bool]:
    # Equal load: keep it local and save the hop.
    return (c.load, not c.is_local)


def _power_of_two(pool: list[Candidate], rng: random.Random) -> list[Candidate]:
    """Least loaded of two random candidates (Mitzenmacher): each router's view
    of peer load is a little stale, and always picking the global minimum
    sends every gateway to the same peer at once."""
    idle_local = next((c for c in pool if c.is_local and c.outstanding == 0), None)
    if idle_local is not None:
        first = idle_local
    else:
        first = min(rng.sample(pool, 2), key=_load_rank)
    rest = sorted((c for c in pool if c is not first), key=_load_rank)
    return [first, *rest]
