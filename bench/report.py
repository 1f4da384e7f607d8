"""Turn results.json into markdown tables and matplotlib PNGs.

    python -m bench.report [RESULTS_JSON] [--png-dir DIR]   re-render without re-measuring

Numbers are medians over rounds with [min-max] in brackets; ratios are taken
within a round (same run) before the median.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGET_ORDER = ["direct", "mesh", "mesh-patched", "nginx", "bare", "splice", "litellm"]
TARGET_COLORS = {"direct": "#7f7f7f", "mesh": "#1f77b4", "mesh-patched": "#17becf",
                 "nginx": "#2ca02c", "bare": "#d62728", "splice": "#9467bd", "litellm": "#e377c2"}
TARGET_NAMES = {"direct": "client→B (direct)", "mesh": "client→A→B (LlamaMesh)",
                "mesh-patched": "client→A'→B (proposed patch)",
                "nginx": "nginx", "bare": "bare aiohttp", "splice": "asyncio splice (bench)",
                "litellm": "LiteLLM proxy"}


def _s(stat: dict | None, digits: int = 2, scale: float = 1.0) -> str:
    if not stat or stat.get("median") is None:
        return "–"
    med, lo, hi = (stat[k] * scale for k in ("median", "min", "max"))
    if stat.get("n", 1) <= 1 or lo == hi:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{lo:.{digits}f}–{hi:.{digits}f}]"


def machine_lines(machine: dict) -> list[str]:
    m = machine
    start, end = m.get("start", {}), m.get("end", {})
    return [
        f"- Machine: {start.get('cores_logical')} logical cores "
        f"({start.get('cpu_model')}), {start.get('memory_gib')} GiB; {start.get('platform')}",
        f"- Load average (1/5/15 min): {start.get('load_average_1_5_15')} at start, "
        f"{end.get('load_average_1_5_15')} at end (the machine is shared with other "
        "engineers' test suites; the 30-node discovery swarm itself loads it too)",
        f"- Python {start.get('python')}, commit {start.get('commit')}, "
        f"versions {start.get('versions')}",
        f"- Run: `{m.get('command')}` from {start.get('when')} to {end.get('when')} "
        f"({m.get('duration_s', 0) / 60:.1f} min)",
    ]


def proxy_tables(proxy: dict) -> list[str]:
    out: list[str] = []
    rows = proxy["rows"]
    labels = [lab for lab in ("unpaced", "paced", "real") if any(r["label"] == lab for r in rows)]
    captions = {"unpaced": "B unpaced (scripted, 64 tokens back to back)",
                "paced": "B paced (scripted, 64 tokens 5 ms apart)",
                "real": "B = real engine (Gemma 3 270M Q4_K_M, 64 tokens max)"}
    for label in labels:
        out += [f"#### {captions[label]}", "",
                "| C | path | TTFT p50 ms | added TTFT p50 ms | added TTFT p99 ms | chunks/s "
                "(× direct) | gaps < 1 ms | proxy CPU ms/stream | × nginx CPU | failed |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for c in sorted({r["concurrency"] for r in rows if r["label"] == label}):
            for target in TARGET_ORDER:
                row = next((r for r in rows if r["label"] == label and r["concurrency"] == c
                            and r["target"] == target), None)
                if row is None:
                    continue
                cps = _s(row["chunks_per_s"], 0)
                if row.get("chunks_per_s_vs_direct"):
                    cps += f" (×{row['chunks_per_s_vs_direct']['median']:.2f})"
                out.append(
                    f"| {c} | {TARGET_NAMES[target]} | {_s(row['ttft_p50_ms'])} | "
                    f"{_s(row['added_ttft_p50_ms'])} | {_s(row['added_ttft_p99_ms'])} | {cps} | "
                    f"{_s(row['gaps_under_1ms'], 3)} | {_s(row['cpu_ms_per_stream'])} | "
                    f"{_s(row['cpu_vs_nginx'])} | {row['failed']} |")
        out.append("")
    if proxy.get("unavailable"):
        out += ["Not measured: " + "; ".join(f"{k}: {v}" for k, v in
                                            proxy["unavailable"].items()), ""]
    return out


def engine_table(engine: dict) -> list[str]:
    cfg = engine["config"]
    out = [f"{cfg['tokens']} tokens, {cfg['threads']} threads, greedy, "
           f"model `{Path(engine['model']).name}`; aggregate = {cfg['aggregate_streams']} "
           "concurrent streams.", "",
           "| engine | single-stream gen tok/s | × llama-bench | × llama-cpp-python | "
           f"aggregate tok/s (×{cfg['aggregate_streams']}) | tokens/stream | load 1 min |",
           "|---|---|---|---|---|---|---|"]
    order = ["llama-bench", "llama-server", "llama-cpp-python", "node", "node-patched"]
    for name in order:
        row = next((r for r in engine["rows"] if r["engine"] == name), None)
        if row is None:
            continue
        out.append(f"| {name} | {_s(row['single_tokens_per_s'], 1)} | "
                   f"{_s(row['single_vs_llama_bench'])} | {_s(row['single_vs_llama_cpp_python'])} | "
                   f"{_s(row['aggregate_tokens_per_s'], 1)} | "
                   f"{sorted({t for t in row['tokens'] if t is not None})} | "
                   f"{_s(row['load_1m'], 1)} |")
    if engine.get("unavailable"):
        out += ["", "Not measured: " + "; ".join(f"{k}: {v}" for k, v in
                                                engine["unavailable"].items())]
    return out + [""]


def discovery_table(discovery: dict) -> list[str]:
    out = ["| nodes | join: visible on all (s) | of which start→ready (s) | kill -9: routed "
           "around by all (s) | failed before 1st byte (join/kill) | failed mid-stream (kill) | "
           "window requests | idle swarm CPU (cores) | RSS/node MiB |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in discovery["rows"]:
        out.append(f"| {r['size']} | {_s(r['join_all_s'])} | {_s(r['join_ready_s'])} | "
                   f"{_s(r['kill_all_s'])} | {r['join_failed_before_first_byte']} / "
                   f"{r['kill_failed_before_first_byte']} | {r['kill_failed_mid_stream']} | "
                   f"{r['window_requests']} | {r['idle_swarm_cores']:.2f} | "
                   f"{r['rss_mib_per_node']:.0f} |")
    return out + [""]


def router_table(router: dict) -> list[str]:
    patched = {(r["shape"], r["peers"], r["strategy"]): r for r in router.get("patched_rows", [])}
    head = ("| swarm shape | known peers | strategy | candidates | unsampled candidates()+choose_route p50 µs "
            "| Router.plan p50 µs | plan p99 µs | plan × 1 peer |")
    rule = "|---|---|---|---|---|---|---|---|"
    if patched:
        head += " patched: Router.plan p50 µs | patched × 1 peer |"
        rule += "---|---|"
    out = [head, rule]
    for r in router["rows"]:
        line = (f"| {r['shape']} | {r['peers']} | {r['strategy']} | {r['candidates']} | "
                f"{_s(r['select_p50_us'], 1)} | {_s(r['plan_p50_us'], 1)} | "
                f"{_s(r['plan_p99_us'], 1)} | {r['plan_vs_smallest']:.0f}× |")
        p = patched.get((r["shape"], r["peers"], r["strategy"]))
        if patched:
            line += (f" {_s(p['plan_p50_us'], 1)} | {p['plan_vs_smallest']:.1f}× |" if p
                     else " – | – |")
        out.append(line)
    return out + [""]


def _measured(section: dict) -> str:
    at = section.get("measured_at", {})
    return (f"Measured until {at.get('when', '?')} ({section.get('duration_s', 0) / 60:.1f} min), "
            f"commit {at.get('commit', '?')}, load average then {at.get('load_average_1_5_15')}.")


def tables(results: dict) -> str:
    lines: list[str] = []
    if "machine" in results:
        lines += machine_lines(results["machine"]) + [""]
    for key, title, render in (("proxy", "1. Proxy overhead", proxy_tables),
                               ("engine", "2. Engine efficiency", engine_table),
                               ("discovery", "3. Discovery", discovery_table),
                               ("router", "4. Router cost", router_table)):
        if key in results:
            lines += [f"### {title}", "", _measured(results[key]), ""] + render(results[key])
    return "\n".join(lines)


# -- plots ------------------------------------------------------------------


def plots(results: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    written: list[Path] = []
    if "proxy" in results:
        written += _proxy_plots(results["proxy"], out_dir)
    if "engine" in results:
        written.append(_engine_plot(results["engine"], out_dir))
    if "discovery" in results:
        written.append(_discovery_plot(results["discovery"], out_dir))
    if "router" in results:
        written.append(_router_plot(results["router"], out_dir))
    return written


def _bars(ax, rows, label, metric, targets, title, ylabel, scale=1.0):
    import numpy as np

    cs = sorted({r["concurrency"] for r in rows if r["label"] == label})
    width = 0.8 / max(len(targets), 1)
    for i, target in enumerate(targets):
        meds, los, his = [], [], []
        for c in cs:
            row = next((r for r in rows if r["label"] == label and r["concurrency"] == c
                        and r["target"] == target), None)
            stat = row.get(metric) if row else None
            if not stat or stat.get("median") is None:
                meds.append(np.nan), los.append(0), his.append(0)
                continue
            meds.append(stat["median"] * scale)
            los.append((stat["median"] - stat["min"]) * scale)
            his.append((stat["max"] - stat["median"]) * scale)
        x = np.arange(len(cs)) + i * width
        ax.bar(x, meds, width, yerr=[los, his], capsize=2, label=TARGET_NAMES[target],
               color=TARGET_COLORS.get(target))
    ax.set_xticks(np.arange(len(cs)) + width * (len(targets) - 1) / 2)
    ax.set_xticklabels([f"C={c}" for c in cs])
    ax.set_title(title, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _proxy_plots(proxy: dict, out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    rows = proxy["rows"]
    present = [t for t in TARGET_ORDER if any(r["target"] == t for r in rows)]
    # LiteLLM is 10-1000x off this scale: it gets its own log-scale figure.
    hops = [t for t in present if t not in ("direct", "litellm")]
    labels = [lab for lab in ("unpaced", "paced") if any(r["label"] == lab for r in rows)]
    written = []
    fig, axes = plt.subplots(2, len(labels), figsize=(5.5 * len(labels), 7), squeeze=False)
    for j, label in enumerate(labels):
        _bars(axes[0][j], rows, label, "added_ttft_p50_ms", hops,
              f"added TTFT p50 vs direct, B {label}", "ms")
        axes[0][j].axhline(0.5, color="red", lw=0.8, ls="--", label="target +0.5 ms (C=1)")
        _bars(axes[1][j], rows, label, "added_ttft_p99_ms", hops,
              f"added TTFT p99 vs direct, B {label}", "ms")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Proxy hop: time to first token added (median, min-max over rounds)")
    fig.tight_layout()
    path = out_dir / "proxy_ttft.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    fig, axes = plt.subplots(2, len(labels), figsize=(5.5 * len(labels), 7), squeeze=False)
    for j, label in enumerate(labels):
        _bars(axes[0][j], rows, label, "cpu_ms_per_stream", hops,
              f"proxy CPU per 64-chunk stream, B {label}", "CPU ms / stream")
        _bars(axes[1][j], rows, label, "gaps_under_1ms", present,  # LiteLLM included
              f"client-side gaps < 1 ms (pacing lost), B {label}", "share of gaps")
    axes[0][0].legend(fontsize=7)
    axes[1][0].legend(fontsize=7)
    fig.suptitle("Proxy CPU (node A idle-corrected) and chunk pacing")
    fig.tight_layout()
    path = out_dir / "proxy_cpu_pacing.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    if any(r["target"] == "litellm" for r in rows):
        with_litellm = [*hops, "litellm"]
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
        _bars(axes[0], rows, "paced", "cpu_ms_per_stream", with_litellm,
              "proxy CPU per stream incl. LiteLLM, B paced (log)", "CPU ms / stream")
        _bars(axes[1], rows, "paced", "ttft_p50_ms", ["direct", *with_litellm],
              "TTFT p50 incl. LiteLLM, B paced (log)", "ms")
        for ax in axes:
            ax.set_yscale("log")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        path = out_dir / "proxy_cpu_litellm.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def _engine_plot(engine: dict, out_dir: Path) -> Path:
    import matplotlib.pyplot as plt
    import numpy as np

    order = [e for e in ["llama-bench", "llama-server", "llama-cpp-python", "node", "node-patched"]
             if any(r["engine"] == e for r in engine["rows"])]
    fig, ax = plt.subplots(figsize=(7, 3.8))
    x = np.arange(len(order))
    for offset, key, name in ((-0.2, "single_tokens_per_s", "single stream"),
                              (0.2, "aggregate_tokens_per_s", "4 concurrent (aggregate)")):
        med, lo, hi = [], [], []
        for e in order:
            stat = next(r for r in engine["rows"] if r["engine"] == e)[key]
            if stat["median"] is None:
                med.append(np.nan), lo.append(0), hi.append(0)
            else:
                med.append(stat["median"]), lo.append(stat["median"] - stat["min"])
                hi.append(stat["max"] - stat["median"])
        ax.bar(x + offset, med, 0.4, yerr=[lo, hi], capsize=3, label=name)
    bench = next((r for r in engine["rows"] if r["engine"] == "llama-bench"), None)
    if bench and bench["single_tokens_per_s"]["median"]:
        ax.axhline(0.95 * bench["single_tokens_per_s"]["median"], color="red", ls="--", lw=0.8,
                   label="target: 95% of llama-bench")
    ax.set_xticks(x)
    ax.set_xticklabels(order)
    ax.set_ylabel("generation tokens/s")
    ax.set_title("Engine efficiency, same GGUF and threads (median, min-max)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out_dir / "engine.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _discovery_plot(discovery: dict, out_dir: Path) -> Path:
    import matplotlib.pyplot as plt

    rows = discovery["rows"]
    sizes = [r["size"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for key, name in (("join_all_s", "join: routable from every node"),
                      ("join_ready_s", "join: process start → serving"),
                      ("kill_all_s", "kill -9: routed around by every node")):
        med = [r[key]["median"] for r in rows]
        err = [[r[key]["median"] - r[key]["min"] for r in rows],
               [r[key]["max"] - r[key]["median"] for r in rows]]
        ax.errorbar(sizes, med, yerr=err, marker="o", capsize=3, label=name)
    ax.axhline(2.0, color="red", ls="--", lw=0.8, label="target 2 s")
    ax.set_xscale("log")
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlabel("nodes in the swarm (one machine)")
    ax.set_ylabel("seconds")
    ax.set_title("Discovery: join and failure visibility (median, min-max)", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out_dir / "discovery.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _router_plot(router: dict, out_dir: Path) -> Path:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for shape in sorted({r["shape"] for r in router["rows"]}):
        for strategy in sorted({r["strategy"] for r in router["rows"]}):
            rows = [r for r in router["rows"] if r["shape"] == shape and r["strategy"] == strategy]
            if not rows:
                continue
            line, = ax.plot([r["peers"] for r in rows],
                            [r["plan_p50_us"]["median"] for r in rows],
                            marker="o", label=f"{shape}, {strategy}")
            prow = [r for r in router.get("patched_rows", [])
                    if r["shape"] == shape and r["strategy"] == strategy]
            if prow:
                ax.plot([r["peers"] for r in prow], [r["plan_p50_us"]["median"] for r in prow],
                        marker="x", ls="--", color=line.get_color(),
                        label=f"{shape}, {strategy} (patch 01)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("known peers")
    ax.set_ylabel("Router.plan p50 (µs)")
    ax.set_title("Routing decision cost vs swarm size", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    path = out_dir / "router_cost.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# -- RESULTS.md ---------------------------------------------------------------

START = "<!-- bench:tables:start (generated by python -m bench; edit outside these markers) -->"
END = "<!-- bench:tables:end -->"


def update_results_md(path: Path, results: dict) -> None:
    """Replace the generated block of RESULTS.md, keeping the hand-written text around it."""
    block = f"{START}\n{tables(results)}\n{END}"
    text = path.read_text() if path.exists() else f"# Benchmark results\n\n{START}\n{END}\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        _, tail = rest.split(END, 1)
        text = head + block + tail
    else:
        text += "\n" + block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=HERE / "results.json")
    parser.add_argument("--png-dir", type=Path, default=None)
    parser.add_argument("--md", type=Path, default=None, help="RESULTS.md to update")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    print(tables(results))
    png_dir = args.png_dir or args.results.parent
    for path in plots(results, png_dir):
        print("wrote", path)
    if args.md:
        update_results_md(args.md, results)
        print("updated", args.md)


if __name__ == "__main__":
    main()
