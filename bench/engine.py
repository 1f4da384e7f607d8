"""Issue #4, measurement 2: engine efficiency.

Single-stream generation tokens/s of the same GGUF at the same thread count:

    node              stock `python -m mesh --model-path GGUF --n-threads T`, streamed
                      /v1/completions through its HTTP API (raw-socket client)
    llama-cpp-python  the same library called in-process (bench/llama_inproc.py)
    llama-bench       llama.cpp's own tg128 (built by bench/build_llama_tools.sh)
    llama-server      llama.cpp's server, `--parallel 1`, streamed /v1/completions

and aggregate tokens/s over 4 concurrent streams (llama-server `--parallel 4`;
the node and llama-cpp-python serve one sequence at a time). Streamed rates
are client-side: (tokens - 1) / (last token time - first token time), i.e.
generation only, like llama-bench's tg. Engines are interleaved, the order
rotated each round; the machine's load is recorded at every measurement.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.machine import load_average, wait_for_quiet
from bench.nodes import ROOT, Node, Proc, free_port, wait_http
from bench.sse import run_load, summarize
from bench.stats import ratio, summary

TOOLS = ROOT / "bench" / "out" / "bin"
PROMPT = "Once upon a time, in a small village by the sea, there lived"
MODEL_ID = "gemma-3-270m"


@dataclass(frozen=True)
class EngineConfig:
    rounds: int = 3
    tokens: int = 128
    threads: int = 2
    single_streams: int = 2  # per engine per round; the median is kept
    aggregate_streams: int = 4
    n_ctx: int = 2048
    model_path: Path | None = None  # None: the bundled Gemma 3 270M Q4_K_M
    engines: tuple[str, ...] = ("llama-bench", "llama-server", "llama-cpp-python", "node")
    # Also measure a node running another checkout's mesh/ (a proposed patch).
    patched_root: Path | None = None


QUICK = EngineConfig(rounds=1, tokens=32, single_streams=1, aggregate_streams=2)


def bundled_model(out: Path) -> Path:
    """The node's default GGUF, assembled the way the node does it."""
    from mesh.local.catalog import default_model_path

    return default_model_path((out / "models-state").resolve())


def tool(name: str) -> Path | None:
    path = TOOLS / name
    return path if path.exists() else None


def completion_body(tokens: int, **extra: object) -> bytes:
    return json.dumps({"model": MODEL_ID, "prompt": PROMPT, "max_tokens": tokens,
                       "temperature": 0.0, "stream": True,
                       "stream_options": {"include_usage": True}, **extra}).encode()


async def _http_single(port: int, cfg: EngineConfig, body: bytes) -> dict:
    await run_load("127.0.0.1", port, path="/v1/completions", body=completion_body(8),
                   concurrency=1, streams=1, deadline_s=120)  # warm-up
    load = await run_load("127.0.0.1", port, path="/v1/completions", body=body, concurrency=1,
                          streams=cfg.single_streams, deadline_s=300, request_timeout_s=300)
    s = summarize(load)
    rates = [(len(r.content_times) - 1) / (r.content_times[-1] - r.content_times[0])
             for r in load.results if r.ok and len(r.content_times) > 1]
    return {"gen_tokens_per_s": statistics.median(rates) if rates else None,
            "tokens": s["chunks_per_stream"], "ttft_ms": s["ttft_p50_ms"],
            "failed": s["failed"], "usage_tokens": [r.completion_tokens for r in load.results]}


async def _http_aggregate(port: int, cfg: EngineConfig, body: bytes) -> dict:
    load = await run_load("127.0.0.1", port, path="/v1/completions", body=body,
                          concurrency=cfg.aggregate_streams, streams=cfg.aggregate_streams,
                          deadline_s=600, request_timeout_s=600)
    ok = [r for r in load.results if r.ok]
    tokens = sum(len(r.content_times) for r in ok)
    return {"tokens_per_s": tokens / load.wall_s if ok else None, "tokens": tokens,
            "wall_s": load.wall_s, "failed": len(load.results) - len(ok)}


def run_llama_bench(model: Path, cfg: EngineConfig) -> dict:
    binary = tool("llama-bench")
    if binary is None:
        raise FileNotFoundError("llama-bench not built (bash bench/build_llama_tools.sh)")
    out = subprocess.run([str(binary), "-m", str(model), "-t", str(cfg.threads), "-p", "0",
                          "-n", str(cfg.tokens), "-r", "3", "-o", "json"],
                         capture_output=True, text=True, timeout=600, check=True)
    rows = json.loads(out.stdout)
    tg = next(r for r in rows if r.get("n_gen") == cfg.tokens)
    return {"gen_tokens_per_s": tg["avg_ts"], "stddev": tg.get("stddev_ts"),
            "samples": tg.get("samples_ts")}


def run_inproc(model: Path, cfg: EngineConfig) -> dict:
    out = subprocess.run([sys.executable, "-m", "bench.llama_inproc", "--model", str(model),
                          "--threads", str(cfg.threads), "--tokens", str(cfg.tokens),
                          "--streams", str(cfg.single_streams), "--aggregate",
                          str(cfg.aggregate_streams), "--prompt", PROMPT,
                          "--n-ctx", str(cfg.n_ctx)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    rates = [r["gen_tokens_per_s"] for r in data["single"] if r["gen_tokens_per_s"]]
    return {"gen_tokens_per_s": statistics.median(rates) if rates else None,
            "tokens": data["single"][0]["tokens"],
            "unstreamed_tokens_per_s_wall": data["unstreamed"]["tokens_per_s_wall"],
            "aggregate": data["aggregate"]}


class Servers:
    """The long-lived HTTP engines: the node and llama-server (np=1 and np=4)."""

    def __init__(self, cfg: EngineConfig, model: Path, out: Path) -> None:
        self.cfg, self.model, self.out = cfg, model, out
        self.node: Node | None = None
        self.node_patched: Node | None = None
        self.server1: Proc | None = None
        self.server4: Proc | None = None
        self.ports: dict[str, int] = {}

    def start(self, engines: tuple[str, ...], unavailable: dict[str, str]) -> None:
        cfg = self.cfg
        if "node" in engines:
            self.node = Node(self.out / "node", args=[
                "--model-path", str(self.model), "--model-name", MODEL_ID,
                "--n-threads", str(cfg.threads), "--n-ctx", str(cfg.n_ctx)]).start(timeout=180)
            self.ports["node"] = int(self.node.url.rsplit(":", 1)[1])
        if "node-patched" in engines and cfg.patched_root is not None:
            self.node_patched = Node(self.out / "node-patched", mesh_root=cfg.patched_root, args=[
                "--model-path", str(self.model), "--model-name", MODEL_ID,
                "--n-threads", str(cfg.threads), "--n-ctx", str(cfg.n_ctx)]).start(timeout=180)
            self.ports["node-patched"] = int(self.node_patched.url.rsplit(":", 1)[1])
        if "llama-server" in engines:
            binary = tool("llama-server")
            if binary is None:
                unavailable["llama-server"] = "not built (bash bench/build_llama_tools.sh)"
                return
            for parallel in (1, cfg.aggregate_streams):
                port = free_port()
                proc = Proc([str(binary), "-m", str(self.model), "-t", str(cfg.threads),
                             "-c", str(cfg.n_ctx * parallel), "--parallel", str(parallel),
                             "--host", "127.0.0.1", "--port", str(port), "--alias", MODEL_ID,
                             "--no-webui"],
                            self.out / f"llama-server-np{parallel}.log").start()
                wait_http(f"http://127.0.0.1:{port}/health", timeout=120, proc=proc)
                if parallel == 1:
                    self.server1, self.ports["llama-server"] = proc, port
                else:
                    self.server4, self.ports["llama-server-np4"] = proc, port

    def stop(self) -> None:
        for proc in (self.server1, self.server4):
            if proc is not None:
                proc.stop()
        for node in (self.node, self.node_patched):
            if node is not None:
                node.stop()


def _measure(engine: str, servers: Servers, model: Path, cfg: EngineConfig) -> dict:
    body = completion_body(cfg.tokens)
    if engine == "llama-bench":
        return {"single": run_llama_bench(model, cfg), "aggregate": None}
    if engine == "llama-cpp-python":
        data = run_inproc(model, cfg)
        return {"single": data, "aggregate": data.pop("aggregate")}
    if engine in ("node", "node-patched"):
        port = servers.ports[engine]
        return {"single": asyncio.run(_http_single(port, cfg, body)),
                "aggregate": asyncio.run(_http_aggregate(port, cfg, body))}
    if engine == "llama-server":
        single = asyncio.run(_http_single(servers.ports["llama-server"], cfg, body))
        aggregate = asyncio.run(_http_aggregate(servers.ports["llama-server-np4"], cfg, body))
        return {"single": single, "aggregate": aggregate}
    raise ValueError(engine)


def run(out: Path, *, quick: bool = False, config: EngineConfig | None = None,
        log=print) -> dict:
    cfg = config or (QUICK if quick else EngineConfig())
    out = (out / "engine").resolve()
    out.mkdir(parents=True, exist_ok=True)
    model = cfg.model_path or bundled_model(out.parent)
    unavailable: dict[str, str] = {}
    engines = list(cfg.engines)
    if cfg.patched_root is not None and "node-patched" not in engines:
        engines.append("node-patched")
    if "llama-bench" in engines and tool("llama-bench") is None:
        unavailable["llama-bench"] = "not built (bash bench/build_llama_tools.sh)"
        engines.remove("llama-bench")
    servers = Servers(cfg, model, out)
    runs: list[dict] = []
    log(f"engine: {model.name}, {cfg.threads} threads, {cfg.tokens} tokens, "
        f"engines {', '.join(engines)}")
    try:
        servers.start(tuple(engines), unavailable)
        engines = [e for e in engines if e not in unavailable]
        for rnd in range(cfg.rounds):
            order = engines[rnd % len(engines):] + engines[:rnd % len(engines)]
            for engine in order:
                # llama.cpp on all cores is the most noise-sensitive thing here: wait
                # (bounded) for other people's work to pass, and record the wait.
                quiet = wait_for_quiet()
                load_before = load_average()
                try:
                    data = _measure(engine, servers, model, cfg)
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired,
                        RuntimeError, OSError) as exc:
                    log(f"  {engine}: failed: {exc!r}"[:400])
                    data = {"single": {"error": repr(exc)[:400]}, "aggregate": None}
                data.update(engine=engine, round=rnd, load_before=load_before,
                            load_after=load_average(), quiet=quiet)
                runs.append(data)
                single, agg = data["single"], data["aggregate"] or {}
                log(f"  round {rnd + 1}/{cfg.rounds} {engine:17s} single "
                    f"{_f(single.get('gen_tokens_per_s'))} tok/s (tokens {single.get('tokens')}) "
                    f"aggregate x{cfg.aggregate_streams} {_f(agg.get('tokens_per_s'))} tok/s "
                    f"load {load_before[0]}, busy {quiet['busy_share']:.0%} after "
                    f"{quiet['waited_s']:.0f}s wait")
    finally:
        servers.stop()
    (out / "runs.json").write_text(json.dumps(runs, indent=1))
    return {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
            "model": str(model), "unavailable": unavailable, "rows": aggregate(runs)}


def aggregate(runs: list[dict]) -> list[dict]:
    engines = sorted({r["engine"] for r in runs})
    by_round = {(r["engine"], r["round"]): r for r in runs}
    rows = []
    for engine in engines:
        mine = [r for r in runs if r["engine"] == engine]
        singles = [r["single"].get("gen_tokens_per_s") for r in mine]
        aggs = [(r["aggregate"] or {}).get("tokens_per_s") for r in mine]
        vs_bench, vs_inproc, vs_server = [], [], []
        for r in mine:
            for ref, bucket in (("llama-bench", vs_bench), ("llama-cpp-python", vs_inproc),
                                ("llama-server", vs_server)):
                other = by_round.get((ref, r["round"]))
                if other is not None:
                    bucket.append(ratio(r["single"].get("gen_tokens_per_s"),
                                        other["single"].get("gen_tokens_per_s")))
        rows.append({
            "engine": engine, "rounds": len(mine),
            "single_tokens_per_s": summary(singles),
            "aggregate_tokens_per_s": summary(aggs),
            "single_vs_llama_bench": summary(vs_bench),
            "single_vs_llama_cpp_python": summary(vs_inproc),
            "single_vs_llama_server": summary(vs_server),
            "tokens": [r["single"].get("tokens") for r in mine],
            "load_1m": summary([r["load_before"][0] for r in mine]),
        })
    return rows


def _f(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
