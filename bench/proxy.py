"""Issue #4, measurement 1: what the proxy hop costs.

client -> node A -> node B versus client -> node B, and the same B behind
nginx (`proxy_buffering off`), a bare aiohttp pass-through and (when
installed) LiteLLM's proxy, all in the same rounds, targets interleaved
(rotated each round), streamed chat completions of 64 chunks at concurrency
1, 16 and 64, B's tokens unpaced and 5 ms apart.

Topology (all on 127.0.0.1, OS-chosen ports):

    B0  bench.concurrent_node, scripted "bench-unpaced", 64 tokens, 0 ms apart
    B5  bench.concurrent_node, scripted "bench-paced",   64 tokens, 5 ms apart
    A   stock `python -m mesh`, scripted "a-local" (so it never serves the
        bench models itself): the router finds B0/B5 through the DHT and
        proxies to them
    R   the real engine (bundled Gemma 3 270M) for one extra case, C=1

Per run: TTFT (request written -> first content event), aggregate chunks/s,
share of client-side gaps between consecutive content events under 1 ms
(pacing survival: B sends them 5 ms apart; a coalescing hop makes 0 ms gaps),
and CPU ms per stream of the proxy's processes (node A; nginx master+worker;
the bare proxy; LiteLLM). Node A runs background loops (1 s health probes and
DHT refresh), so its CPU is also given idle-corrected: minus A's CPU rate
measured while the client talked to B directly, in the same round.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from bench.machine import load_average
from bench.nodes import Node, cpu_seconds, routes_to, scripted_args, wait_until
from bench.references import (
    Reference, Unavailable, start_bare, start_litellm, start_nginx, start_splice,
)
from bench.sse import run_load, summarize
from bench.stats import ratio, summary

PATH = "/v1/chat/completions"
MODELS = {"unpaced": "bench-unpaced", "paced": "bench-paced", "real": "gemma-3-270m"}


@dataclass(frozen=True)
class ProxyConfig:
    rounds: int = 5
    concurrencies: tuple[int, ...] = (1, 16, 64)
    delays_ms: tuple[float, ...] = (0.0, 5.0)
    tokens: int = 64
    # Streams per run, by (concurrency, paced): enough for a stable CPU figure,
    # bounded so a round stays near half a minute per target.
    streams_unpaced: dict[int, int] = field(default_factory=lambda: {1: 200, 16: 320, 64: 640})
    streams_paced: dict[int, int] = field(default_factory=lambda: {1: 30, 16: 96, 64: 256})
    deadline_s: float = 30.0  # per run
    references: tuple[str, ...] = ("nginx", "bare", "splice", "litellm")
    litellm_scale: float = 0.25  # LiteLLM costs ~100x more CPU per stream: fewer streams
    real_engine: bool = True
    real_rounds: int = 3
    real_streams: int = 8
    real_threads: int = 2
    model_path: Path | None = None  # None: the bundled Gemma 3 270M
    profile_s: float = 8.0  # py-spy on node A under load; 0 = no profile
    # A second node A running another checkout's mesh/ (a proposed patch),
    # measured as target "mesh-patched" in the same rounds.
    patched_root: Path | None = None

    def streams(self, concurrency: int, paced: bool) -> int:
        table = self.streams_paced if paced else self.streams_unpaced
        return table.get(concurrency, concurrency * 4)


QUICK = ProxyConfig(rounds=1, concurrencies=(1, 16), streams_unpaced={1: 40, 16: 64},
                    streams_paced={1: 6, 16: 32}, references=("nginx", "bare"),
                    real_engine=False, profile_s=0.0, deadline_s=15.0)


def chat_body(model: str, tokens: int) -> bytes:
    return json.dumps({
        "model": model, "stream": True, "max_tokens": tokens,
        "messages": [{"role": "user", "content": "Write a long story about the sea."}],
    }).encode()


def completion_body(model: str, tokens: int) -> bytes:
    return json.dumps({
        "model": model, "stream": True, "max_tokens": tokens, "temperature": 0.0,
        "prompt": "Once upon a time, in a small village by the sea, there lived",
    }).encode()


@dataclass
class Target:
    name: str
    ports: dict[str, int]  # label -> port the client talks to
    pids: list[int]  # whose CPU counts as "the proxy"
    headers: dict[str, str] = field(default_factory=dict)


class Topology:
    """B0, B5 (and R), A, and the references, started once for all rounds."""

    def __init__(self, cfg: ProxyConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self.nodes: list[Node] = []
        self.refs: list[Reference] = []
        self.unavailable: dict[str, str] = {}
        self.targets: dict[str, Target] = {}

    def start(self) -> None:
        cfg, out = self.cfg, self.out
        b0 = self._node("b0", "bench.concurrent_node",
                        scripted_args(MODELS["unpaced"], tokens=cfg.tokens) + ["--max-queue", "1024"])
        seed = ["--bootstrap-nodes", f"127.0.0.1:{b0.dht_port}"]
        b5 = self._node("b5", "bench.concurrent_node", scripted_args(
            MODELS["paced"], tokens=cfg.tokens, delay_ms=5.0) + ["--max-queue", "1024"] + seed)
        upstream = {"unpaced": b0, "paced": b5}
        if cfg.real_engine:
            real_args = ["--n-threads", str(cfg.real_threads), "--model-name", MODELS["real"]]
            if cfg.model_path is not None:
                real_args += ["--model-path", str(cfg.model_path)]
            upstream["real"] = self._node("real", "mesh", real_args + seed, timeout=180)
        a = self._node("a", "mesh", scripted_args("a-local") + seed)
        self.a, self.upstream = a, upstream
        if cfg.patched_root is not None:
            ap = Node(self.out / "a-patched", args=scripted_args("a-patched") + seed,
                      mesh_root=cfg.patched_root)
            self.nodes.append(ap)
            ap.start()
            for label, node in upstream.items():
                wait_until(lambda n=node, m=MODELS[label]: routes_to(ap, m, n.node_id),
                           timeout=30, message=f"A' routes to {label}")
        for label, node in upstream.items():
            wait_until(lambda n=node, m=MODELS[label]: routes_to(a, m, n.node_id), timeout=30,
                       message=f"A routes to {label}")
        urls = {label: node.url for label, node in upstream.items()}
        self.targets["direct"] = Target("direct", {k: _port(u) for k, u in urls.items()}, [])
        self.targets["mesh"] = Target("mesh", {k: _port(a.url) for k in urls}, [a.pid])
        if cfg.patched_root is not None:
            self.targets["mesh-patched"] = Target("mesh-patched", {k: _port(ap.url) for k in urls},
                                                  [ap.pid])
        starters = {
            "nginx": lambda: start_nginx(urls, out / "nginx"),
            "bare": lambda: start_bare(urls, out / "bare"),
            "splice": lambda: start_splice(urls, out / "splice"),
            "litellm": lambda: start_litellm(
                {k: (MODELS[k], u) for k, u in urls.items()}, out / "litellm"),
        }
        for name in cfg.references:
            try:
                ref = starters[name]()
            except Unavailable as exc:
                self.unavailable[name] = str(exc)
                continue
            except RuntimeError as exc:
                self.unavailable[name] = f"failed to start: {str(exc)[:300]}"
                continue
            self.refs.append(ref)
            self.targets[name] = Target(name, ref.ports, ref.pids(), ref.headers)

    def _node(self, name: str, module: str, args: list[str], timeout: float = 60) -> Node:
        node = Node(self.out / name, args=args, module=module)
        self.nodes.append(node)
        return node.start(timeout=timeout)

    def stop(self) -> None:
        for ref in self.refs:
            ref.stop()
        for node in reversed(self.nodes):
            node.stop()


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


async def measure(topo: Topology, target: Target, label: str, *, concurrency: int,
                  streams: int, body: bytes, deadline_s: float, path: str = PATH) -> dict:
    port = target.ports[label]
    # Warm-up: open the pools (client->proxy, proxy->B) at this concurrency.
    await run_load("127.0.0.1", port, path=path, body=body, concurrency=concurrency,
                   streams=concurrency, deadline_s=deadline_s, headers=target.headers)
    upstream = topo.upstream[label]
    nodes_a = {name: t.pids for name, t in topo.targets.items() if name.startswith("mesh")}
    idle_before = {name: cpu_seconds(pids) for name, pids in nodes_a.items()}
    before = (cpu_seconds(target.pids), cpu_seconds([upstream.pid]), cpu_seconds([topo.a.pid]),
              _self_cpu())
    load = await run_load("127.0.0.1", port, path=path, body=body, concurrency=concurrency,
                          streams=streams, deadline_s=deadline_s, headers=target.headers)
    after = (cpu_seconds(target.pids), cpu_seconds([upstream.pid]), cpu_seconds([topo.a.pid]),
             _self_cpu())
    idle_after = {name: cpu_seconds(pids) for name, pids in nodes_a.items()}
    result = summarize(load)
    n = max(result["ok"], 1)  # type: ignore[arg-type]
    result.update({
        "target": target.name, "label": label, "concurrency": concurrency,
        "proxy_cpu_ms_per_stream": (after[0] - before[0]) * 1000 / n if target.pids else None,
        "upstream_cpu_ms_per_stream": (after[1] - before[1]) * 1000 / n,
        "a_cpu_s": after[2] - before[2],
        # Nodes A's CPU during this run (the idle baseline when target is direct).
        "idle_cpu_s": {name: idle_after[name] - idle_before[name] for name in nodes_a},
        "client_cpu_ms_per_stream": (after[3] - before[3]) * 1000 / n,
        "routes": sorted({r.headers.get("x-mesh-route", "")[:4] for r in load.results}),
        "load_average": load_average(),
    })
    return result


def _wait_quiet(pids: list[int], *, below: float = 0.05, timeout_s: float = 15.0) -> None:
    """Until these processes use less than `below` of a core (LiteLLM goes on
    working for seconds after a load, which would land on the next target)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        c0 = cpu_seconds(pids)
        time.sleep(0.5)
        if (cpu_seconds(pids) - c0) / 0.5 < below:
            return


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _rounds(topo: Topology, cfg: ProxyConfig, log) -> list[dict]:
    runs: list[dict] = []
    names = list(topo.targets)
    cases = [(delay, c) for delay in cfg.delays_ms for c in cfg.concurrencies]
    for rnd in range(cfg.rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        if "direct" in order:  # direct first: it is the idle baseline for A's CPU
            order.remove("direct")
            order.insert(0, "direct")
        if "litellm" in order:  # last, then a pause: it keeps working after its load ends
            order.remove("litellm")
            order.append("litellm")
        for delay, c in cases:
            label = "paced" if delay else "unpaced"
            body = chat_body(MODELS[label], cfg.tokens)
            for name in order:
                streams = cfg.streams(c, bool(delay))
                if name == "litellm":
                    streams = max(c, int(streams * cfg.litellm_scale))
                    _signal(topo.targets[name].pids, signal.SIGCONT)
                run = await measure(topo, topo.targets[name], label, concurrency=c,
                                    streams=streams, body=body, deadline_s=cfg.deadline_s)
                run["round"] = rnd
                runs.append(run)
                if name == "litellm":
                    # LiteLLM keeps working (and polling) between loads: let it finish,
                    # then freeze it so it takes no CPU from the others' runs.
                    _wait_quiet(topo.targets[name].pids, timeout_s=5.0)
                    _signal(topo.targets[name].pids, signal.SIGSTOP)
                log(f"  round {rnd + 1}/{cfg.rounds} {label:7s} C={c:<3d} {name:8s} "
                    f"ok={run['ok']:<4d} ttft p50={_f(run['ttft_p50_ms'])} ms "
                    f"chunks/s={_f(run['chunks_per_s'], 0)} gaps<1ms={_f(run['gaps_under_1ms'], 3)} "
                    f"cpu/stream={_f(run['proxy_cpu_ms_per_stream'])} ms")
    if cfg.real_engine and "real" in topo.upstream:
        for rnd in range(cfg.real_rounds):
            for name in [n for n in names if n != "litellm"]:
                run = await measure(topo, topo.targets[name], "real", concurrency=1,
                                    streams=cfg.real_streams,
                                    body=chat_body(MODELS["real"], cfg.tokens),
                                    deadline_s=max(cfg.deadline_s, 60))
                run["round"] = rnd
                runs.append(run)
                log(f"  real-engine round {rnd + 1}/{cfg.real_rounds} {name:8s} ok={run['ok']} "
                    f"ttft p50={_f(run['ttft_p50_ms'])} ms chunks/stream={run['chunks_per_stream']} "
                    f"cpu/stream={_f(run['proxy_cpu_ms_per_stream'])} ms")
    return runs


def _f(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def aggregate(runs: list[dict]) -> list[dict]:
    """Per (label, concurrency, target): medians and min-max over rounds, deltas and
    ratios against direct and nginx taken within each round."""
    by_key: dict[tuple, dict[int, dict]] = {}
    for run in runs:
        by_key.setdefault((run["label"], run["concurrency"], run["target"]), {})[run["round"]] = run
    rows = []
    for (label, c, target), per_round in sorted(by_key.items()):
        direct = by_key.get((label, c, "direct"), {})
        nginx = by_key.get((label, c, "nginx"), {})
        added_p50, added_p99, cpu_corr, vs_nginx, chunk_ratio = [], [], [], [], []
        for rnd, run in per_round.items():
            d = direct.get(rnd)
            if d is not None:
                if run["ttft_p50_ms"] is not None and d["ttft_p50_ms"] is not None:
                    added_p50.append(run["ttft_p50_ms"] - d["ttft_p50_ms"])
                if run["ttft_p99_ms"] is not None and d["ttft_p99_ms"] is not None:
                    added_p99.append(run["ttft_p99_ms"] - d["ttft_p99_ms"])
                chunk_ratio.append(ratio(run["chunks_per_s"], d["chunks_per_s"]))
            corrected = run["proxy_cpu_ms_per_stream"]
            if target.startswith("mesh") and d is not None and corrected is not None \
                    and d["wall_s"] and d.get("idle_cpu_s", {}).get(target) is not None:
                # A node's background loops (probes, DHT refresh) run whether or not
                # it relays: subtract its own CPU rate while the client used B directly.
                idle_rate = d["idle_cpu_s"][target] / d["wall_s"]
                proxy_s = run["proxy_cpu_ms_per_stream"] * max(run["ok"], 1) / 1000
                corrected = (proxy_s - idle_rate * run["wall_s"]) * 1000 / max(run["ok"], 1)
            cpu_corr.append(corrected)
            n = nginx.get(rnd)
            if n is not None:
                vs_nginx.append(ratio(corrected, n["proxy_cpu_ms_per_stream"]))
        rows.append({
            "label": label, "concurrency": c, "target": target, "rounds": len(per_round),
            "streams_per_run": summary([r["streams"] for r in per_round.values()])["median"],
            "failed": sum(r["failed"] for r in per_round.values()),
            "ttft_p50_ms": summary([r["ttft_p50_ms"] for r in per_round.values()]),
            "ttft_p99_ms": summary([r["ttft_p99_ms"] for r in per_round.values()]),
            "added_ttft_p50_ms": summary(added_p50) if target != "direct" else None,
            "added_ttft_p99_ms": summary(added_p99) if target != "direct" else None,
            "chunks_per_s": summary([r["chunks_per_s"] for r in per_round.values()]),
            "chunks_per_s_vs_direct": summary(chunk_ratio) if target != "direct" else None,
            "chunks_per_stream": summary([r["chunks_per_stream"] for r in per_round.values()]),
            "gaps_under_1ms": summary([r["gaps_under_1ms"] for r in per_round.values()]),
            "cpu_ms_per_stream_raw": summary([r["proxy_cpu_ms_per_stream"]
                                              for r in per_round.values()]),
            "cpu_ms_per_stream": summary(cpu_corr),
            "cpu_vs_nginx": summary(vs_nginx) if target not in ("direct", "nginx") else None,
            "upstream_cpu_ms_per_stream": summary([r["upstream_cpu_ms_per_stream"]
                                                   for r in per_round.values()]),
        })
    return rows


def profile_node_a(topo: Topology, cfg: ProxyConfig, out: Path, log) -> dict | None:
    """py-spy on node A while it relays C=16 paced streams; top frames to a text file."""
    pyspy = shutil.which("py-spy")
    if pyspy is None or cfg.profile_s <= 0:
        return None
    raw = out / "a-profile.txt"
    spy = subprocess.Popen([pyspy, "record", "-p", str(topo.a.pid), "-d", str(int(cfg.profile_s)),
                            "-r", "250", "-f", "raw", "-o", str(raw), "--nonblocking"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    body = chat_body(MODELS["paced"], cfg.tokens)
    port = topo.targets["mesh"].ports["paced"]
    asyncio.run(run_load("127.0.0.1", port, path=PATH, body=body, concurrency=16,
                         streams=100_000, deadline_s=cfg.profile_s + 1))
    try:
        _, err = spy.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        return {"error": "py-spy did not finish"}
    if spy.returncode != 0 or not raw.exists():
        return {"error": f"py-spy failed: {err.decode(errors='replace')[-300:]}"}
    log(f"  profile of node A: {raw}")
    return {"raw": str(raw), **summarize_profile(raw)}


def summarize_profile(raw: Path, top: int = 25) -> dict:
    """Inclusive and self sample shares by function from py-spy's collapsed stacks."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_frame(f) for f in stack.split(";")]
        total += count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
        own[frames[-1]] = own.get(frames[-1], 0) + count

    def ranked(table: dict[str, int]) -> list[tuple[str, float]]:
        return [(name, round(n / total, 4)) for name, n in
                sorted(table.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "inclusive": ranked(inclusive), "self": ranked(own)}


def _frame(frame: str) -> str:
    # py-spy raw frames look like "function (path/to/file.py:123)": keep function + file.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def run(out: Path, *, quick: bool = False, config: ProxyConfig | None = None,
        log=print) -> dict:
    cfg = config or (QUICK if quick else ProxyConfig())
    out = (out / "proxy").resolve()
    out.mkdir(parents=True, exist_ok=True)
    topo = Topology(cfg, out)
    log(f"proxy: starting B0, B5{', R' if cfg.real_engine else ''}, A and references "
        f"{', '.join(cfg.references)}")
    try:
        topo.start()
        for name, why in topo.unavailable.items():
            log(f"  {name}: skipped: {why}")
        runs = asyncio.run(_rounds(topo, cfg, log))
        profile = profile_node_a(topo, cfg, out, log)
    finally:
        for target in topo.targets.values():
            _signal(target.pids, signal.SIGCONT)  # nothing stays frozen
        topo.stop()
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "targets": {name: t.pids and len(t.pids) for name, t in topo.targets.items()},
        "unavailable": topo.unavailable,
        "rows": aggregate(runs),
        "profile": profile,
    }
    (out / "runs.json").write_text(json.dumps(runs, indent=1))
    return result


def with_overrides(cfg: ProxyConfig, **changes) -> ProxyConfig:
    return replace(cfg, **changes)
