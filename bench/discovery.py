"""Issue #4, measurement 3: how fast the swarm sees a node come and go.

For swarms of 3, 10 and 30 nodes on this machine (scripted engines, default
heartbeat unless configured):

    base     N-1 stock nodes: a seed, Y (the other provider of "victim"), the
             rest serving "swarm"; all bootstrapped from the seed
    joiner   the N-th node, serving "victim", started and later `kill -9`ed,
             `trials` times per swarm size (a new joiner each time)

Join time: from the joiner's spawn (Popen) until every base node lists it as
a healthy provider in `/v1/models/network` (what its router would use).
Kill time: from SIGKILL until no base node lists it as healthy. During both
windows a paced client streams "victim" requests (8 tokens, 5 ms apart) to
the base nodes that do not serve it, so every request goes through a router
that must pick Y or the joiner; failed requests are counted by kind: before
the first byte (the target is zero) or mid-stream (streams that were on the
node when it was killed). Idle CPU and memory of the whole swarm are measured
before the trials: every node probes every other node each second.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

from bench.machine import load_average
from bench.nodes import Node, cpu_seconds, rss_mib, scripted_args, start_nodes, wait_until
from bench.sse import Connection, StreamResult, request_bytes
from bench.stats import summary

VICTIM = "victim"
SWARM = "swarm"


@dataclass(frozen=True)
class DiscoveryConfig:
    sizes: tuple[int, ...] = (3, 10, 30)
    trials: int = 3
    heartbeat_interval: float | None = None  # None: the node's default
    poll_interval_s: dict[int, float] = field(default_factory=lambda: {3: 0.05, 10: 0.1, 30: 0.25})
    window_timeout_s: float = 45.0
    load_rps: float = 20.0
    max_inflight: int = 32
    tokens: int = 8
    token_delay_ms: float = 5.0
    settle_s: float = 3.0
    idle_measure_s: float = 10.0

    def poll(self, n: int) -> float:
        return self.poll_interval_s.get(n, 0.25)


QUICK = DiscoveryConfig(sizes=(3,), trials=1, idle_measure_s=2.0, settle_s=1.0)


def _common(cfg: DiscoveryConfig) -> list[str]:
    return ["--heartbeat-interval", str(cfg.heartbeat_interval)] if cfg.heartbeat_interval else []


def _victim_args(cfg: DiscoveryConfig) -> list[str]:
    return scripted_args(VICTIM, tokens=cfg.tokens, delay_ms=cfg.token_delay_ms)


async def _healthy_sets(session: aiohttp.ClientSession, observers: list[Node],
                        node_id: str) -> list[bool | None]:
    """Per observer: does it list node_id as a healthy provider of VICTIM (None: no answer)."""
    async def one(node: Node) -> bool | None:
        try:
            async with session.get(node.url + "/v1/models/network",
                                   timeout=aiohttp.ClientTimeout(total=2)) as r:
                data = await r.json()
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
            return None
        return any(p["node_id"] == node_id and p["healthy"]
                   for m in data["data"] if m["id"] == VICTIM for p in m["providers"])
    return list(await asyncio.gather(*(one(n) for n in observers)))


async def _watch(observers: list[Node], node_id: str, *, want: bool, since: float,
                 poll_s: float, timeout_s: float) -> dict:
    """Poll until every observer's view of node_id equals `want`; per-observer first times."""
    first: dict[int, float] = {}
    async with aiohttp.ClientSession() as session:
        deadline = since + timeout_s
        while time.monotonic() < deadline:
            views = await _healthy_sets(session, observers, node_id)
            now = time.monotonic()
            for i, seen in enumerate(views):
                if seen is want and i not in first:
                    first[i] = now - since
            if len(first) == len(observers):
                break
            await asyncio.sleep(poll_s)
    done = len(first) == len(observers)
    return {"all_s": max(first.values()) if done else None,
            "first_s": min(first.values()) if first else None,
            "observers_seen": len(first), "observers": len(observers)}


class LoadClient:
    """Open-loop streamed requests for VICTIM, round-robin over `targets`,
    bounded in rate, in flight and time."""

    def __init__(self, targets: list[Node], cfg: DiscoveryConfig) -> None:
        self.targets, self.cfg = targets, cfg
        self.results: list[tuple[float, str, StreamResult]] = []  # (monotonic start, target, result)
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        body = json.dumps({"model": VICTIM, "stream": True, "max_tokens": self.cfg.tokens,
                           "messages": [{"role": "user", "content": "hi"}]}).encode()
        interval = 1 / self.cfg.load_rps
        inflight: set[asyncio.Task[None]] = set()
        index = 0
        hard_stop = time.monotonic() + 600  # bound, whatever happens
        next_at = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < hard_stop:
            if len(inflight) < self.cfg.max_inflight:
                node = self.targets[index % len(self.targets)]
                index += 1
                task = asyncio.create_task(self._one(node, body))
                inflight.add(task)
                task.add_done_callback(inflight.discard)
            next_at += interval
            try:
                await asyncio.wait_for(self._stop.wait(), max(next_at - time.monotonic(), 0))
            except asyncio.TimeoutError:
                pass
        if inflight:
            await asyncio.wait(inflight, timeout=15)

    async def _one(self, node: Node, body: bytes) -> None:
        host, port = node.url.removeprefix("http://").rsplit(":", 1)
        conn = Connection(host, int(port))
        started = time.monotonic()
        try:
            result = await conn.send(request_bytes(host, int(port), "/v1/chat/completions", body),
                                     timeout=10)
        finally:
            conn.close()
        self.results.append((started, node.node_id, result))

    def window(self, start: float, end: float, *, served_by: str | None = None) -> dict:
        inside = [r for t, _, r in self.results if start <= t <= end]
        before_first_byte = [r for r in inside if not r.ok and not r.started_streaming]
        mid_stream = [r for r in inside if not r.ok and r.started_streaming]
        out = {"requests": len(inside), "failed_before_first_byte": len(before_first_byte),
               "failed_mid_stream": len(mid_stream),
               "errors": sorted({(r.error or f"status {r.status}")[:80]
                                 for r in before_first_byte + mid_stream})[:5]}
        if served_by is not None:
            out["served_by_joiner"] = sum(r.headers.get("x-mesh-node") == served_by
                                          for r in inside)
        return out


async def _trial(base: list[Node], observers: list[Node], load_targets: list[Node],
                 cfg: DiscoveryConfig, out: Path, n: int, trial: int, seed_port: int) -> dict:
    poll = cfg.poll(n)
    load = LoadClient(load_targets, cfg)
    load.start()
    await asyncio.sleep(0.5)
    node_id = f"bench-join-{n}-{trial}-{random.getrandbits(24):06x}"
    joiner = Node(out / f"n{n}-join{trial}", args=[
        *_victim_args(cfg), "--bootstrap-nodes", f"127.0.0.1:{seed_port}", "--node-id", node_id,
        *_common(cfg)])
    joiner.spawn()
    t0 = joiner.spawned_at
    watch = asyncio.create_task(_watch(observers, node_id, want=True, since=t0, poll_s=poll,
                                       timeout_s=cfg.window_timeout_s))
    while not joiner.poll_ready():
        if time.monotonic() - t0 > 90:
            raise RuntimeError(f"joiner not ready: {joiner.tail()}")
        await asyncio.sleep(0.02)
    join = await watch
    join["ready_s"] = joiner.ready_at - t0
    join["ready_to_all_s"] = join["all_s"] - join["ready_s"] if join["all_s"] is not None else None
    t_join_end = t0 + (join["all_s"] if join["all_s"] is not None else cfg.window_timeout_s)
    await asyncio.sleep(cfg.settle_s)
    t_kill = time.monotonic()
    joiner.kill()
    kill = await _watch(observers, node_id, want=False, since=t_kill, poll_s=poll,
                        timeout_s=cfg.window_timeout_s)
    t_kill_end = t_kill + (kill["all_s"] if kill["all_s"] is not None else cfg.window_timeout_s)
    await asyncio.sleep(1.0)
    await load.stop()
    join["load"] = load.window(t0, t_join_end)
    kill["load"] = load.window(t_kill, t_kill_end)
    kill["load_after_1s"] = load.window(t_kill_end, t_kill_end + 1.0)
    between = load.window(t_join_end, t_kill, served_by=node_id)
    return {"size": n, "trial": trial, "join": join, "kill": kill,
            "between": between, "poll_s": poll, "load_average": load_average()}


def _swarm_ready(base: list[Node]) -> bool:
    from bench.nodes import get_json

    for node in base:
        catalog = get_json(node.url + "/v1/models/network")
        healthy = {p["node_id"] for m in catalog["data"] for p in m["providers"]
                   if p["healthy"] and not p["local"]}
        if len(healthy) < len(base) - 1:
            return False
    return True


def run_size(n: int, cfg: DiscoveryConfig, out: Path, log) -> dict:
    seed = Node(out / f"n{n}-seed", args=[*scripted_args(SWARM, tokens=cfg.tokens), *_common(cfg)])
    seed.start()
    boot = ["--bootstrap-nodes", f"127.0.0.1:{seed.dht_port}", *_common(cfg)]
    y = Node(out / f"n{n}-y", args=[*_victim_args(cfg), *boot])
    rest = [Node(out / f"n{n}-b{i}", args=[*scripted_args(SWARM, tokens=cfg.tokens), *boot])
            for i in range(n - 3)]
    base = [seed, y, *rest]
    try:
        t_start = time.monotonic()
        start_nodes([y, *rest], timeout=180)
        started_s = time.monotonic() - t_start
        wait_until(lambda: _swarm_ready(base), timeout=120, interval=0.5,
                   message=f"{n - 1}-node swarm converged")
        converged_s = time.monotonic() - t_start
        log(f"  n={n}: {n - 1} base nodes up in {started_s:.1f}s, converged at {converged_s:.1f}s")
        pids = [node.pid for node in base]
        time.sleep(1.0)
        c0, w0 = cpu_seconds(pids), time.monotonic()
        time.sleep(cfg.idle_measure_s)
        idle_cores = (cpu_seconds(pids) - c0) / (time.monotonic() - w0)
        memory = rss_mib(pids)
        log(f"  n={n}: idle swarm uses {idle_cores:.2f} cores, {memory:.0f} MiB RSS "
            f"({memory / len(base):.0f} MiB/node)")
        observers = base
        load_targets = [node for node in base if node is not y]
        trials = []
        for trial in range(cfg.trials):
            result = asyncio.run(_trial(base, observers, load_targets, cfg, out, n, trial,
                                        seed.dht_port))
            trials.append(result)
            j, k = result["join"], result["kill"]
            log(f"  n={n} trial {trial + 1}: join visible everywhere {_f(j['all_s'])}s "
                f"(ready {_f(j['ready_s'])}s), kill routed around {_f(k['all_s'])}s; failed "
                f"before first byte: join {j['load']['failed_before_first_byte']}, "
                f"kill {k['load']['failed_before_first_byte']}; mid-stream "
                f"{k['load']['failed_mid_stream']}")
            time.sleep(cfg.settle_s)
    finally:
        for node in base:
            if node.alive() and node.proc is not None:
                node.proc.terminate()
        for node in base:
            node.stop(timeout=10)
    return {"size": n, "started_s": started_s, "converged_s": converged_s,
            "idle_swarm_cores": idle_cores, "rss_mib_total": memory,
            "rss_mib_per_node": memory / len(base), "trials": trials}


def aggregate(sizes: list[dict]) -> list[dict]:
    rows = []
    for s in sizes:
        t = s["trials"]
        rows.append({
            "size": s["size"], "trials": len(t),
            "join_all_s": summary([x["join"]["all_s"] for x in t]),
            "join_ready_s": summary([x["join"]["ready_s"] for x in t]),
            "join_ready_to_all_s": summary([x["join"]["ready_to_all_s"] for x in t]),
            "kill_all_s": summary([x["kill"]["all_s"] for x in t]),
            "kill_first_s": summary([x["kill"]["first_s"] for x in t]),
            "join_failed_before_first_byte": sum(x["join"]["load"]["failed_before_first_byte"]
                                                 for x in t),
            "kill_failed_before_first_byte": sum(x["kill"]["load"]["failed_before_first_byte"]
                                                 for x in t),
            "kill_failed_mid_stream": sum(x["kill"]["load"]["failed_mid_stream"] for x in t),
            "window_requests": sum(x["join"]["load"]["requests"] + x["kill"]["load"]["requests"]
                                   for x in t),
            "served_by_joiner": sum(x["between"].get("served_by_joiner", 0) for x in t),
            "idle_swarm_cores": s["idle_swarm_cores"],
            "rss_mib_per_node": s["rss_mib_per_node"],
            "converged_s": s["converged_s"],
        })
    return rows


def run(out: Path, *, quick: bool = False, config: DiscoveryConfig | None = None,
        log=print) -> dict:
    cfg = config or (QUICK if quick else DiscoveryConfig())
    out = (out / "discovery").resolve()
    out.mkdir(parents=True, exist_ok=True)
    log(f"discovery: swarms of {', '.join(map(str, cfg.sizes))}; {cfg.trials} join/kill trials each")
    sizes = [run_size(n, cfg, out, log) for n in cfg.sizes]
    (out / "runs.json").write_text(json.dumps(sizes, indent=1))
    return {"config": asdict(cfg), "rows": aggregate(sizes)}


def _f(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
