"""PeerTable: staleness, probes and the circuit breaker, with no event loop."""

from __future__ import annotations

import time

from mesh.dht.records import ModelInfo, NodeLoad, NodeRecord
from mesh.router.peers import PeerTable


def record(node_id: str, *models: str, port: int = 9000) -> NodeRecord:
    return NodeRecord(node_id=node_id, url=f"http://127.0.0.1:{port}", dht_host="127.0.0.1",
                      dht_port=port + 1, models=tuple(ModelInfo(id=m, n_ctx=512) for m in models),
                      load=NodeLoad(queue_depth=1, capacity=4, tokens_per_second=20.0),
                      uptime_s=1.0, version="t", expires_at=time.time() + 30)


def test_own_record_is_ignored_and_models_filter() -> None:
    table = PeerTable(own_node_id="me", stale_after_s=5)
    table.merge_records([record("me", "m"), record("a", "m"), record("b", "other")])
    assert [c.node_id for c in table.candidates("m")] == ["a"]
    assert table.knows_model("other") and not table.knows_model("nope")


def test_stale_peers_are_forgotten() -> None:
    table = PeerTable(own_node_id="me", stale_after_s=5)
    table.merge_records([record("a", "m"), record("b", "m")], now=100.0)
    table.merge_records([record("a", "m")], now=104.0)
    assert len(table) == 2
    table.merge_records([record("a", "m")], now=106.0)
    assert [v.record.node_id for v in table.views()] == ["a"]


def test_failed_probe_removes_candidate_until_a_probe_succeeds() -> None:
    table = PeerTable(own_node_id="me", stale_after_s=5)
    table.merge_records([record("a", "m")])
    table.probe_failed("a")
    assert table.candidates("m") == []
    assert table.views()[0].healthy is False
    table.probe_succeeded("a", latency_s=0.002, queue_depth=0, active_requests=1, capacity=4,
                          tokens_per_second=30.0)
    [candidate] = table.candidates("m")
    assert candidate.outstanding == 1 and candidate.tokens_per_second == 30.0


def test_failed_request_opens_the_breaker_and_inflight_counts() -> None:
    table = PeerTable(own_node_id="me", stale_after_s=5)
    table.merge_records([record("a", "m")])
    table.request_started("a")
    table.request_started("a")
    assert table.candidates("m")[0].outstanding == 1 + 2  # record's queue + our two
    table.request_ended("a", failed=False)
    table.request_ended("a", failed=True)
    assert table.candidates("m") == []  # breaker open
    assert table.views()[0].breaker_open is True


def test_new_url_resets_the_breaker() -> None:
    table = PeerTable(own_node_id="me", stale_after_s=5)
    table.merge_records([record("a", "m", port=9000)])
    table.probe_failed("a")
    table.merge_records([record("a", "m", port=9100)])  # restarted elsewhere
    assert [c.url for c in table.candidates("m")] == ["http://127.0.0.1:9100"]


def test_large_pools_are_sampled_for_a_decision() -> None:
    import random

    table = PeerTable(own_node_id="me", stale_after_s=5)
    table.merge_records([record(f"p{i}", "m", port=10000 + 2 * i) for i in range(100)])
    picked = table.candidates("m", sample=8, rng=random.Random(1))
    assert len(picked) == 8 and len({c.node_id for c in picked}) == 8
    assert len(table.candidates("m")) == 100
    for i in range(100):  # most of the pool is down: the sample falls back to all
        if i % 50:
            table.probe_failed(f"p{i}")
    assert sorted(c.node_id for c in table.candidates("m", sample=8)) == ["p0", "p50"]


def test_fastest_ranking_follows_probed_speed() -> None:
    table = PeerTable(own_node_id="me", stale_after_s=5)
    table.merge_records([record(n, "m", port=p) for n, p in (("a", 9000), ("b", 9002),
                                                               ("c", 9004))])
    for node_id, tps in (("a", 10.0), ("b", 50.0), ("c", 30.0)):
        table.probe_succeeded(node_id, latency_s=0.001, queue_depth=0, active_requests=0,
                              capacity=4, tokens_per_second=tps)
    table._ranked.clear()  # noqa: SLF001 - skip the ranking's short cache
    assert [c.node_id for c in table.fastest("m", limit=2)] == ["b", "c"]
    table.probe_failed("b")
    assert [c.node_id for c in table.fastest("m", limit=2)] == ["c", "a"]


def test_model_index_follows_records() -> None:
    table = PeerTable(own_node_id="me", stale_after_s=5)
    table.merge_records([record("a", "m1")], now=100.0)
    assert table.knows_model("m1") and not table.knows_model("m2")
    table.merge_records([record("a", "m2")], now=101.0)  # the node now serves another model
    assert table.knows_model("m2") and not table.knows_model("m1")
    table.merge_records([], now=110.0)  # gone from the DHT
    assert not table.knows_model("m2") and table.candidates("m2") == []


def test_a_single_learnt_record_ages_nobody_out() -> None:
    table = PeerTable(own_node_id="me", stale_after_s=5)
    table.merge_records([record("old", "m")], now=time.monotonic() - 60)
    table.add_record(record("new", "m", port=9100))
    assert table.knows_node("old") and table.knows_node("new")
    table.merge_records([record("new", "m", port=9100)])  # a full refresh without "old"
    assert not table.knows_node("old")


def test_forget_removes_a_peer_and_its_models() -> None:
    table = PeerTable(own_node_id="me", stale_after_s=5)
    table.merge_records([record("a", "m"), record("b", "m", "x", port=9100)])
    table.forget("b")
    assert not table.knows_node("b") and not table.knows_model("x")
    assert [c.node_id for c in table.candidates("m")] == ["a"]


def test_slow_probes_fail_a_peer_only_in_a_row() -> None:
    table = PeerTable(own_node_id="me", stale_after_s=60)
    table.merge_records([record("a", "m")])
    table.probe_timed_out("a")
    table.probe_timed_out("a")
    assert [c.node_id for c in table.candidates("m")] == ["a"]  # busy, still routable
    table.probe_succeeded("a", latency_s=0.5, queue_depth=0, active_requests=0, capacity=4,
                          tokens_per_second=1.0)
    table.probe_timed_out("a")
    table.probe_timed_out("a")
    assert table.candidates("m")  # the count restarted after the answer
    table.probe_timed_out("a")
    assert table.candidates("m") == []
