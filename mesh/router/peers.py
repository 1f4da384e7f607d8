"""The in-memory peer table the request path reads.

Background loops (mesh/router/router.py) feed it DHT records and `/health`
probes; the proxy tells it about each request's outcome. The request path
only takes `candidates()`: no DHT round trip and no probe per request.

A peer is routable while its DHT entry is fresh, its last probe succeeded
and its circuit breaker is closed. The breaker opens on a failed request or
probe and stays open for an exponentially growing while (capped), so a dead
peer costs at most one failed connect attempt per window, and the request
that hit it has already moved on to the next candidate.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mesh.dht.records import NodeRecord

BREAKER_BASE_S = 1.0
BREAKER_MAX_S = 30.0
LATENCY_ALPHA = 0.3
# How stale the "fastest" ranking may get: its inputs (probed tokens/s and
# latency) change about once a second, so re-sorting on every request is waste.
RANK_TTL_S = 0.25
# A peer whose /health is merely slow (time-outs, no refusal) stays routable
# until this many probes in a row time out: a busy node answers late, a dead
# process refuses at once (and a dead host stops answering for good).
SLOW_PROBES_TO_FAIL = 3


@dataclass(frozen=True, slots=True)
class Candidate:
    """What selection needs to know about one place a request could run."""

    node_id: str
    url: str | None  # None: this node's own engine
    outstanding: int  # queued + generating (+ what we sent since the last probe)
    capacity: int
    tokens_per_second: float
    latency_s: float

    @property
    def is_local(self) -> bool:
        return self.url is None

    @property
    def load(self) -> float:
        return self.outstanding / max(self.capacity, 1)


@dataclass(frozen=True, slots=True)
class PeerView:
    """One peer as the catalog and the UI show it."""

    record: NodeRecord
    healthy: bool
    breaker_open: bool
    last_seen_age_s: float
    latency_s: float | None
    outstanding: int
    tokens_per_second: float


@dataclass(slots=True)
class _Peer:
    record: NodeRecord
    record_seen_at: float
    probed_ok: bool = True  # innocent until a probe says otherwise
    last_ok_at: float | None = None
    queue_depth: int = 0
    active_requests: int = 0
    capacity: int = 1
    tokens_per_second: float = 0.0
    latency_s: float | None = None
    inflight: int = 0
    failures: int = 0
    open_until: float = 0.0
    slow_probes: int = 0

    def routable(self, now: float) -> bool:
        return self.probed_ok and now >= self.open_until


class PeerTable:
    def __init__(self, *, own_node_id: str, stale_after_s: float) -> None:
        self._own = own_node_id
        self._stale_after = stale_after_s
        self._peers: dict[str, _Peer] = {}
        # model id -> ids of the peers whose record lists it, rebuilt when a
        # record's models change: the request path never scans the whole table.
        self._by_model: dict[str, list[str]] = {}
        self._ranked: dict[str, tuple[float, list[str]]] = {}  # model -> (when, fastest first)

    # -- feeding ---------------------------------------------------------

    def merge_records(self, records: Iterable[NodeRecord], *, now: float | None = None,
                      keep_unlisted: bool = False) -> None:
        """Take fresh DHT records; forget peers the DHT has not shown for a while
        (unless `keep_unlisted`: a partial update says nothing about the others)."""
        now = time.monotonic() if now is None else now
        changed = False
        for record in records:
            if record.node_id == self._own:
                continue
            peer = self._peers.get(record.node_id)
            if peer is None or peer.record.models != record.models:
                changed = True
            if peer is None:
                self._peers[record.node_id] = _Peer(
                    record=record, record_seen_at=now,
                    queue_depth=record.load.queue_depth,
                    active_requests=record.load.active_requests,
                    capacity=record.load.capacity,
                    tokens_per_second=record.load.tokens_per_second)
            else:
                if record.url != peer.record.url:
                    peer.failures, peer.open_until, peer.probed_ok = 0, 0.0, True
                peer.record = record
                peer.record_seen_at = now
        stale = [] if keep_unlisted else [
            n for n, p in self._peers.items() if now - p.record_seen_at > self._stale_after]
        for node_id in stale:
            del self._peers[node_id]
            changed = True
        if changed:
            by_model: dict[str, list[str]] = {}
            for node_id, p in self._peers.items():
                for model in p.record.models:
                    by_model.setdefault(model.id, []).append(node_id)
            self._by_model = by_model
            self._ranked = {}

    def add_record(self, record: NodeRecord) -> None:
        """One record learnt outside a full refresh; nobody else is aged out."""
        self.merge_records([record], keep_unlisted=True)

    def forget(self, node_id: str) -> None:
        if self._peers.pop(node_id, None) is not None:
            self._by_model = {model: [n for n in ids if n != node_id]
                              for model, ids in self._by_model.items()}
            self._by_model = {model: ids for model, ids in self._by_model.items() if ids}
            self._ranked = {}

    def knows_node(self, node_id: str) -> bool:
        return node_id in self._peers

    def probe_succeeded(self, node_id: str, *, latency_s: float, queue_depth: int,
                        active_requests: int, capacity: int, tokens_per_second: float) -> None:
        peer = self._peers.get(node_id)
        if peer is None:
            return
        peer.probed_ok = True
        peer.last_ok_at = time.monotonic()
        peer.slow_probes = 0
        peer.failures = 0
        peer.open_until = 0.0
        peer.queue_depth, peer.active_requests = queue_depth, active_requests
        peer.capacity, peer.tokens_per_second = capacity, tokens_per_second
        peer.latency_s = latency_s if peer.latency_s is None else (
            peer.latency_s + LATENCY_ALPHA * (latency_s - peer.latency_s))

    def probe_failed(self, node_id: str) -> None:
        peer = self._peers.get(node_id)
        if peer is not None:
            peer.probed_ok = False
            self._trip(peer)

    def probe_timed_out(self, node_id: str) -> None:
        """No answer in time: only SLOW_PROBES_TO_FAIL in a row count as a failure."""
        peer = self._peers.get(node_id)
        if peer is None:
            return
        peer.slow_probes += 1
        if peer.slow_probes >= SLOW_PROBES_TO_FAIL:
            self.probe_failed(node_id)

    def request_started(self, node_id: str) -> None:
        peer = self._peers.get(node_id)
        if peer is not None:
            peer.inflight += 1

    def request_ended(self, node_id: str, *, failed: bool) -> None:
        peer = self._peers.get(node_id)
        if peer is None:
            return
        peer.inflight = max(peer.inflight - 1, 0)
        if failed:
            self._trip(peer)
        else:
            peer.failures = 0
            peer.last_ok_at = time.monotonic()

    def _trip(self, peer: _Peer) -> None:
        peer.failures += 1
        hold = min(BREAKER_BASE_S * 2 ** (peer.failures - 1), BREAKER_MAX_S)
        peer.open_until = time.monotonic() + hold

    # -- reading ---------------------------------------------------------

    def candidates(self, model_id: str, *, sample: int | None = None,
                   rng: random.Random | None = None) -> list[Candidate]:
        """Routable providers of model_id. With `sample`, a large pool is read as
        `sample` random providers (enough for power-of-two choices and the
        fallbacks after it), so a request costs the same with 10 or 10,000
        providers; if fewer than two of those are routable, all are read."""
        ids = self._by_model.get(model_id, ())
        now = time.monotonic()
        if sample is not None and len(ids) > sample:
            found = self._routable((rng or random).sample(ids, sample), now)
            if len(found) >= 2:
                return found
        return self._routable(ids, now)

    def fastest(self, model_id: str, *, limit: int) -> list[Candidate]:
        """The `limit` fastest routable providers of model_id (highest probed
        tokens/s, then lowest latency), from a ranking at most RANK_TTL_S old."""
        now = time.monotonic()
        cached = self._ranked.get(model_id)
        if cached is None or now - cached[0] > RANK_TTL_S:
            peers = self._peers
            ranked = sorted(self._by_model.get(model_id, ()), key=lambda n: (
                -round(peers[n].tokens_per_second, 1), round(peers[n].latency_s or 0.0, 3)))
            cached = self._ranked[model_id] = (now, ranked)
        picked: list[str] = []
        for node_id in cached[1]:
            if self._peers[node_id].routable(now):
                picked.append(node_id)
                if len(picked) == limit:
                    break
        return self._routable(picked, now)

    def _routable(self, ids: Sequence[str], now: float) -> list[Candidate]:
        out = []
        for node_id in ids:
            p = self._peers[node_id]
            if p.routable(now):
                out.append(Candidate(
                    node_id=node_id, url=p.record.url,
                    outstanding=p.queue_depth + p.active_requests + p.inflight,
                    capacity=p.capacity, tokens_per_second=p.tokens_per_second,
                    latency_s=p.latency_s or 0.0))
        return out

    def knows_model(self, model_id: str) -> bool:
        return model_id in self._by_model

    def urls(self) -> dict[str, str]:
        return {node_id: p.record.url for node_id, p in self._peers.items()}

    def views(self) -> list[PeerView]:
        now = time.monotonic()
        return [
            PeerView(
                record=p.record, healthy=p.routable(now), breaker_open=now < p.open_until,
                last_seen_age_s=now - max(p.record_seen_at, p.last_ok_at or 0.0),
                latency_s=p.latency_s, outstanding=p.queue_depth + p.active_requests + p.inflight,
                tokens_per_second=p.tokens_per_second,
            )
            for p in sorted(self._peers.values(), key=lambda p: p.record.node_id)
        ]

    def __len__(self) -> int:
        return len(self._peers)
