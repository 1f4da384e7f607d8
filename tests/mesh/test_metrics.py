"""/metrics parses as Prometheus text and its counters move with traffic."""

from __future__ import annotations

import urllib.request

import openai
from prometheus_client.parser import text_string_to_metric_families

from tests.mesh.conftest import Swarm


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return samples.get(key, 0.0)


def test_counters_move_with_local_and_peer_traffic(swarm: Swarm) -> None:
    before = scrape(swarm.alpha.url)
    client = openai.OpenAI(base_url=swarm.alpha.url + "/v1", api_key="x", max_retries=0)
    client.chat.completions.create(model="alpha", messages=[{"role": "user", "content": "a"}],
                                   max_tokens=3)
    for _ in range(2):
        client.completions.create(model="charlie", prompt="b", max_tokens=2, stream=True)
    try:
        client.completions.create(model="absent", prompt="c", max_tokens=2)
    except openai.NotFoundError:
        pass
    after = scrape(swarm.alpha.url)
    local = dict(route="local", strategy="load_balanced", model="alpha", status="200")
    peer = dict(route="peer", strategy="load_balanced", model="charlie", status="200")
    assert value(after, "llamamesh_requests_total", **local) == value(
        before, "llamamesh_requests_total", **local) + 1
    assert value(after, "llamamesh_requests_total", **peer) == value(
        before, "llamamesh_requests_total", **peer) + 2
    assert value(after, "llamamesh_requests_total", route="none", strategy="load_balanced",
                 model="absent", status="404") >= 1
    assert value(after, "llamamesh_time_to_first_token_seconds_count", route="peer",
                 model="charlie") >= value(before, "llamamesh_time_to_first_token_seconds_count",
                                           route="peer", model="charlie") + 2
    assert value(after, "llamamesh_tokens_total", model="alpha", kind="generated") >= value(
        before, "llamamesh_tokens_total", model="alpha", kind="generated") + 3
    assert value(after, "llamamesh_peers_known") >= 3
    assert value(after, "llamamesh_peers_healthy") >= 3
    assert value(after, "llamamesh_dht_lookups_total") > value(before, "llamamesh_dht_lookups_total")
    assert value(after, "llamamesh_queue_depth", model="alpha") == 0
