"""`python -m bench`: run the suite, print the tables, write JSON and PNGs.

    python -m bench                      everything; updates bench/results.json,
                                         bench/*.png and the tables in bench/RESULTS.md
    python -m bench --quick              a quick subset at small sizes; writes to
                                         bench/out/quick/ only
    python -m bench --only proxy,router  some measurements (merged into results.json)
    python -m bench.report               re-render tables/plots from results.json

References that are not installed are skipped with the reason in the output
(nginx: apt-get install -y nginx-light; llama-bench/llama-server:
bash bench/build_llama_tools.sh; LiteLLM: a venv in bench/out/litellm-venv).
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import sys
import time
from pathlib import Path

from bench import report
from bench.machine import machine_info

HERE = Path(__file__).resolve().parent
MEASUREMENTS = ("router", "proxy", "engine", "discovery")


def _module(name: str):
    if name == "router":
        from bench import router_cost as module
    elif name == "proxy":
        from bench import proxy as module
    elif name == "engine":
        from bench import engine as module
    elif name == "discovery":
        from bench import discovery as module
    else:
        raise ValueError(name)
    return module


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM too: the finally blocks stop every process we started


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quick subset at small sizes")
    parser.add_argument("--only", default=",".join(MEASUREMENTS),
                        help=f"comma-separated subset of {', '.join(MEASUREMENTS)}")
    parser.add_argument("--out", type=Path, default=None,
                        help="where results.json and PNGs go (default: bench/ for a full run, "
                             "bench/out/quick/ for --quick)")
    parser.add_argument("--mesh-patched", type=Path, default=None, metavar="CHECKOUT",
                        help="also measure this checkout's mesh/ (a proposed patch) in the same "
                             "rounds: node A' (proxy), node-patched (engine), Router (router)")
    parser.add_argument("--raw", type=Path, default=HERE / "out",
                        help="where raw runs, logs and node state go (git-ignored)")
    args = parser.parse_args(argv)
    chosen = [m.strip() for m in args.only.split(",") if m.strip()]
    unknown = set(chosen) - set(MEASUREMENTS)
    if unknown:
        parser.error(f"unknown measurement(s): {', '.join(sorted(unknown))}")
    out = args.out or (HERE / "out" / "quick" if args.quick else HERE)
    out.mkdir(parents=True, exist_ok=True)
    raw = (args.raw / ("quick" if args.quick else time.strftime("run-%Y%m%d-%H%M%S"))).resolve()
    raw.mkdir(parents=True, exist_ok=True)

    results_path = out / "results.json"
    results: dict = {}
    if results_path.exists() and not args.quick:
        results = json.loads(results_path.read_text())  # --only merges into the last full run
    started = time.monotonic()
    machine = {"start": machine_info(), "command": "python -m " + shlex.join(
        ["bench", *(sys.argv[1:] if argv is None else argv)]), "quick": args.quick}
    print(f"bench: {machine['start']['cores_logical']} cores, load "
          f"{machine['start']['load_average_1_5_15']}, raw runs in {raw}", flush=True)
    for name in chosen:
        t0 = time.monotonic()
        module = _module(name)
        config = None
        if name in ("proxy", "router", "engine") and args.mesh_patched is not None:
            from dataclasses import replace

            base = module.QUICK if args.quick else getattr(module, {
                "proxy": "ProxyConfig", "router": "RouterCostConfig",
                "engine": "EngineConfig"}[name])()
            config = replace(base, patched_root=args.mesh_patched.resolve())
        results[name] = module.run(raw, quick=args.quick, config=config,
                                   log=lambda *a: print(*a, flush=True))
        results[name]["duration_s"] = time.monotonic() - t0
        results[name]["measured_at"] = machine_info()
        results_path.write_text(json.dumps(results, indent=1))  # keep what is done so far
    machine["end"] = machine_info()
    machine["duration_s"] = time.monotonic() - started
    machine["measurements"] = chosen
    results["machine"] = machine
    results_path.write_text(json.dumps(results, indent=1))
    print()
    print(report.tables({k: v for k, v in results.items() if k in (*chosen, "machine")}))
    for path in report.plots(results, out):
        print("wrote", path)
    if not args.quick:
        report.update_results_md(HERE / "RESULTS.md", results)
        print("updated", HERE / "RESULTS.md")
    print("wrote", results_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
