"""choose_route: pure selection, table-tested with no event loop."""

from __future__ import annotations

import collections
import random

import pytest

from mesh.router.peers import Candidate
from mesh.router.select import choose_route


def cand(name: str, *, outstanding: int = 0, tps: float = 0.0, latency: float = 0.0,
         local: bool = False, capacity: int = 4) -> Candidate:
    return Candidate(node_id=name, url=None if local else f"http://127.0.0.1/{name}",
                     outstanding=outstanding, capacity=capacity, tokens_per_second=tps,
                     latency_s=latency)


def ids(route: list[Candidate]) -> list[str]:
    return [c.node_id for c in route]


def test_local_strategy_is_local_or_nothing() -> None:
    rng = random.Random(0)
    me = cand("me", local=True, outstanding=9)
    assert ids(choose_route("local", local=me, peers=[cand("p")], rng=rng)) == ["me"]
    assert choose_route("local", local=None, peers=[cand("p")], rng=rng) == []


@pytest.mark.parametrize("strategy", ["load_balanced", "fastest"])
def test_every_candidate_is_in_the_route_once(strategy: str) -> None:
    peers = [cand(f"p{i}", outstanding=i % 3, tps=i) for i in range(10)]
    route = choose_route(strategy, local=cand("me", local=True, outstanding=1), peers=peers,
                         rng=random.Random(1))  # type: ignore[arg-type]
    assert sorted(ids(route)) == sorted(["me", *(p.node_id for p in peers)])


def test_idle_local_is_preferred() -> None:
    route = choose_route("load_balanced", local=cand("me", local=True),
                         peers=[cand("p1"), cand("p2")], rng=random.Random(2))
    assert route[0].node_id == "me"


def test_fallbacks_are_ordered_by_load() -> None:
    peers = [cand("busy", outstanding=3), cand("idle"), cand("some", outstanding=1)]
    for seed in range(20):
        route = choose_route("load_balanced", local=None, peers=peers, rng=random.Random(seed))
        rest = route[1:]
        assert [c.load for c in rest] == sorted(c.load for c in rest)
        assert route[0].node_id != "busy"  # the busiest never wins a pair


def test_power_of_two_spreads_equal_peers() -> None:
    peers = [cand(f"p{i}") for i in range(4)]
    rng = random.Random(3)
    firsts = collections.Counter(
        choose_route("load_balanced", local=None, peers=peers, rng=rng)[0].node_id
        for _ in range(400))
    assert set(firsts) == {"p0", "p1", "p2", "p3"}
    assert min(firsts.values()) > 60


def test_load_is_relative_to_capacity() -> None:
    big = cand("big", outstanding=4, capacity=16)  # 0.25
    small = cand("small", outstanding=2, capacity=2)  # 1.0
    route = choose_route("load_balanced", local=None, peers=[big, small], rng=random.Random(4))
    assert ids(route) == ["big", "small"]


def test_fastest_prefers_tokens_per_second_then_latency() -> None:
    peers = [cand("slow", tps=10), cand("quick-far", tps=50, latency=0.2),
             cand("quick-near", tps=50, latency=0.001)]
    route = choose_route("fastest", local=cand("me", local=True, tps=20), peers=peers,
                         rng=random.Random(5))
    assert ids(route) == ["quick-near", "quick-far", "me", "slow"]


def test_single_candidate_and_empty_pool() -> None:
    rng = random.Random(6)
    assert ids(choose_route("load_balanced", local=None, peers=[cand("only")], rng=rng)) == [
        "only"]
    assert choose_route("fastest", local=None, peers=[], rng=rng) == []
