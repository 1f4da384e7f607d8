"""Issue #4, measurement 4: what one routing decision costs as the swarm grows.

Pure selection on the peer table, no I/O: `PeerTable.candidates()` +
`choose_route()` (what `Router.plan()` does on the request path) and
`Router.plan()` itself, with 1, 100 and 1,000 known peers, for three swarm
shapes:

    all-serve    every peer serves the requested model (the worst case)
    spread       peers spread over 10 models (each model ~N/10 providers)
    one-of-n     N peers, only one of which serves the requested model

Per call times come from `time.perf_counter_ns()` around each call (~100 ns
of timer cost included), up to `calls` calls or 0.5 s (at least 200 calls)
per round and case, repeated in several rounds; medians and p99 are
reported with min-max over rounds. "Flat" means the 1,000-peer time stays
within a small factor of the 1-peer time.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from mesh.dht.records import ModelInfo, NodeLoad, NodeRecord
from mesh.local.engine import EngineStats
from mesh.router.peers import PeerTable
from mesh.router.router import Router, RouterTiming
from mesh.router.select import choose_route

from bench.nodes import ROOT, clean_env
from bench.stats import percentile, summary

MODEL = "wanted"


@dataclass(frozen=True)
class RouterCostConfig:
    sizes: tuple[int, ...] = (1, 100, 1000)
    shapes: tuple[str, ...] = ("all-serve", "spread", "one-of-n")
    strategies: tuple[str, ...] = ("load_balanced", "fastest")
    calls: int = 3000  # per round
    rounds: int = 7
    # Also time another checkout's mesh/ (a proposed patch), in a subprocess.
    patched_root: Path | None = None


QUICK = RouterCostConfig(calls=300, rounds=2, shapes=("all-serve",), strategies=("load_balanced",))


def records(n: int, shape: str, rng: random.Random) -> list[NodeRecord]:
    out = []
    for i in range(n):
        if shape == "all-serve":
            model = MODEL
        elif shape == "spread":
            model = MODEL if i % 10 == 0 else f"other-{i % 10}"
        else:
            model = MODEL if i == 0 else f"other-{i}"
        out.append(NodeRecord(
            node_id=f"{i:040x}", url=f"http://10.0.{i // 250}.{i % 250 + 1}:8000",
            dht_host=f"10.0.{i // 250}.{i % 250 + 1}", dht_port=8001,
            models=(ModelInfo(id=model, n_ctx=2048, quantization="Q4_K_M", architecture="llama"),),
            load=NodeLoad(queue_depth=rng.randint(0, 3), active_requests=rng.randint(0, 1),
                          capacity=17, tokens_per_second=rng.uniform(20, 80)),
            uptime_s=100.0, version="bench", expires_at=time.time() + 3600))
    return out


def table_for(n: int, shape: str, rng: random.Random) -> PeerTable:
    table = PeerTable(own_node_id="self", stale_after_s=3600)
    table.merge_records(records(n, shape, rng))
    for i, node_id in enumerate(table.urls()):
        table.probe_succeeded(node_id, latency_s=0.001 + (i % 7) * 1e-4, queue_depth=i % 3,
                              active_requests=i % 2, capacity=17,
                              tokens_per_second=20.0 + i % 60)
    return table


class _Engine:
    """Just enough of the Engine protocol for Router.plan (serves another model)."""

    class model:  # noqa: N801 - mimics the property
        id = "local-model"

    def stats(self) -> EngineStats:
        return EngineStats(queue_depth=0, active_requests=0, capacity=17, tokens_per_second=50.0,
                           prompt_tokens_per_second=0.0, prompt_tokens_total=0,
                           completion_tokens_total=0, requests_total=0, requests_cancelled=0)


class _NoRecords:
    async def all_nodes(self) -> list[NodeRecord]:
        return []

    async def providers(self, model_id: str) -> list[NodeRecord]:
        return []


def make_router(table: PeerTable) -> Router:
    """A Router over `table` with no engine for the model and no DHT; only the
    keyword arguments this version of Router takes are passed (it is evolving)."""
    offered = {"node_id": "self", "own_url": "http://10.1.0.1:8000", "engine": _Engine(),
               "records": _NoRecords(), "table": table, "proxy": None,
               "timing": RouterTiming(), "rng": random.Random(1)}
    accepted = inspect.signature(Router.__init__).parameters
    return Router(**{k: v for k, v in offered.items() if k in accepted})  # type: ignore[arg-type]


def time_select(table: PeerTable, strategy: str, calls: int, rng: random.Random,
                budget_s: float = 0.5) -> list[int]:
    samples = []
    clock = time.perf_counter_ns
    stop = clock() + int(budget_s * 1e9)
    for i in range(calls):
        if i >= 200 and clock() > stop:  # bounded in time too: 1,000 peers cost ms a call
            break
        t0 = clock()
        choose_route(strategy, local=None, peers=table.candidates(MODEL), rng=rng)
        samples.append(clock() - t0)
    return samples


async def _time_plan(router: Router, strategy: str, calls: int,
                     budget_s: float = 0.5) -> list[int]:
    samples = []
    clock = time.perf_counter_ns
    stop = clock() + int(budget_s * 1e9)
    for i in range(calls):
        if i >= 200 and clock() > stop:
            break
        t0 = clock()
        await router.plan(MODEL, strategy)  # type: ignore[arg-type]
        samples.append(clock() - t0)
    return samples


def run(out: Path, *, quick: bool = False, config: RouterCostConfig | None = None,
        log=print) -> dict:
    cfg = config or (QUICK if quick else RouterCostConfig())
    result = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
              "rows": _measure(cfg, log)}
    if cfg.patched_root is not None:
        log(f"router: the same with {cfg.patched_root}/mesh (proposed patch)")
        sub = replace(cfg, patched_root=None)
        proc = subprocess.run(
            [sys.executable, "-c", "import bench.router_cost as r, mesh, sys; "
             "print(mesh.__file__, file=sys.stderr); r.main()", json.dumps(
                {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(sub).items()})],
            # cwd outside the repo: the child's sys.path[0] must not put our mesh/ first.
            env=clean_env(mesh_root=cfg.patched_root), cwd=out, capture_output=True, text=True,
            timeout=1800, check=True)
        result["patched_rows"] = json.loads(proc.stdout.strip().splitlines()[-1])
        for row in result["patched_rows"]:
            log(f"  patched {row['shape']:9s} peers={row['peers']:<5d} {row['strategy']:13s} "
                f"plan p50 {row['plan_p50_us']['median']:.1f} us")
    return result


def _measure(cfg: RouterCostConfig, log) -> list[dict]:
    rng = random.Random(4)
    rows = []
    log(f"router: {cfg.calls} calls x {cfg.rounds} rounds per case")
    for shape in cfg.shapes:
        for n in cfg.sizes:
            table = table_for(n, shape, rng)
            router = make_router(table)
            for strategy in cfg.strategies:
                per_round: dict[str, list[tuple[float, float]]] = {"select": [], "plan": []}
                for _ in range(cfg.rounds):
                    gc.collect()
                    sel = time_select(table, strategy, cfg.calls, rng)
                    plan = asyncio.run(_time_plan(router, strategy, cfg.calls))
                    for name, samples in (("select", sel), ("plan", plan)):
                        per_round[name].append((statistics.median(samples) / 1000,
                                                percentile(samples, 99) / 1000))
                row = {"shape": shape, "peers": n, "strategy": strategy,
                       "candidates": len(table.candidates(MODEL))}
                for name, values in per_round.items():
                    row[f"{name}_p50_us"] = summary([v[0] for v in values])
                    row[f"{name}_p99_us"] = summary([v[1] for v in values])
                rows.append(row)
                log(f"  {shape:9s} peers={n:<5d} {strategy:13s} select p50 "
                    f"{row['select_p50_us']['median']:.1f} us  plan p50 "
                    f"{row['plan_p50_us']['median']:.1f} us")
    for row in rows:
        base = next(r for r in rows if r["shape"] == row["shape"] and r["strategy"] == row["strategy"]
                    and r["peers"] == min(cfg.sizes))
        row["plan_vs_smallest"] = row["plan_p50_us"]["median"] / base["plan_p50_us"]["median"]
    return rows


def main() -> None:
    """`python -m bench.router_cost '<config json>'`: rows as JSON (for --mesh-patched)."""
    raw = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    conf = RouterCostConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    print(json.dumps(_measure(conf, log=lambda *a: print(*a, file=sys.stderr))))


if __name__ == "__main__":
    main()
