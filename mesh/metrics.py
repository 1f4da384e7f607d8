"""Prometheus metrics for one node, in a registry of its own.

Request counters and latency histograms are recorded as requests pass;
figures the node already keeps (engine queue and token totals, the peer
table, DHT counters) are read at scrape time by a collector, so nothing is
counted twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from mesh.local.engine import EngineStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Snapshot:
    """What the collector reads at scrape time; callables so it is always current."""

    def __init__(self, *, model_id: Callable[[], str], engine: Callable[[], EngineStats],
                 peers: Callable[[], tuple[int, int]],
                 dht: Callable[[], tuple[int, int, int, int]]) -> None:
        self.model_id = model_id
        self.engine = engine
        self.peers = peers  # (known, healthy)
        self.dht = dht  # (publishes, publish errors, lookups, lookup errors)


class _LiveCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        model = self._snapshot.model_id()
        stats = self._snapshot.engine()
        gauges = (
            ("llamamesh_queue_depth", "Requests waiting for this node's engine.",
             stats.queue_depth),
            ("llamamesh_active_requests", "Requests generating on this node's engine.",
             stats.active_requests),
            ("llamamesh_generation_tokens_per_second", "Recent generation speed.",
             stats.tokens_per_second),
        )
        for name, text, value in gauges:
            family = GaugeMetricFamily(name, text, labels=["model"])
            family.add_metric([model], value)
            yield family
        tokens = CounterMetricFamily("llamamesh_tokens", "Tokens processed by this node's engine.",
                                     labels=["model", "kind"])
        tokens.add_metric([model, "prompt"], stats.prompt_tokens_total)
        tokens.add_metric([model, "generated"], stats.completion_tokens_total)
        yield tokens
        known, healthy = self._snapshot.peers()
        yield GaugeMetricFamily("llamamesh_peers_known", "Peers in the routing table.", known)
        yield GaugeMetricFamily("llamamesh_peers_healthy", "Peers routable now.", healthy)
        publishes, publish_errors, lookups, lookup_errors = self._snapshot.dht()
        for name, text, value in (
                ("llamamesh_dht_publishes", "DHT publishes of this node's record.", publishes),
                ("llamamesh_dht_publish_errors", "DHT publishes that failed.", publish_errors),
                ("llamamesh_dht_lookups", "DHT lookups.", lookups),
                ("llamamesh_dht_lookup_errors", "DHT lookups with no answer.", lookup_errors)):
            yield CounterMetricFamily(name, text, value=value)


class Metrics:
    def __init__(self, snapshot: Snapshot) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "llamamesh_requests", "Completion requests by route, strategy, model and status.",
            ["route", "strategy", "model", "status"], registry=self.registry)
        self.first_byte = Histogram(
            "llamamesh_time_to_first_token_seconds",
            "From request to the first byte of the answer (headers go out with the first token).",
            ["route", "model"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.duration = Histogram(
            "llamamesh_request_duration_seconds", "From request to the last byte of the answer.",
            ["route", "model"], buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.retries = Counter(
            "llamamesh_proxy_retries", "Peer attempts that failed before the first byte.",
            registry=self.registry)
        self.failovers = Counter(
            "llamamesh_failovers", "Requests served by a later candidate after a failure.",
            registry=self.registry)
        self.registry.register(_LiveCollector(snapshot))

    def render(self) -> bytes:
        return generate_latest(self.registry)
