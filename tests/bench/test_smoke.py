"""CI smoke for the benchmark suite: every measurement runs at its smallest size.

Nothing here asserts anything about speed (CI machines are noisy and shared);
only that each bench still starts what it needs, measures, and writes rows a
report can render. References whose tools are absent are skipped with the
reason: nginx (apt-get install -y nginx-light), llama-bench/llama-server
(bash bench/build_llama_tools.sh), LiteLLM (its own venv under bench/out/).
The whole suite: `python -m bench` (see bench/RESULTS.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench import discovery, engine, proxy, report, router_cost
from bench.references import litellm_binary, nginx_binary

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(180)


def _proxy_config(references: tuple[str, ...]) -> proxy.ProxyConfig:
    return proxy.ProxyConfig(
        rounds=1, concurrencies=(2,), delays_ms=(0.0,), tokens=8,
        streams_unpaced={2: 4}, streams_paced={2: 2}, references=references,
        real_engine=False, profile_s=0.0, deadline_s=10.0, litellm_scale=1.0)


def _check_proxy(result: dict, targets: set[str]) -> None:
    assert not result["unavailable"], result["unavailable"]
    seen = {row["target"] for row in result["rows"]}
    assert seen == targets
    for row in result["rows"]:
        assert row["failed"] == 0, row
        assert row["chunks_per_stream"]["median"] == 8, row  # 8 scripted tokens, all relayed
        if row["target"] != "direct":
            assert row["cpu_ms_per_stream"]["median"] is not None


def test_router_cost_runs(tmp_path: Path) -> None:
    cfg = router_cost.RouterCostConfig(sizes=(1, 10), calls=20, rounds=1,
                                       shapes=("all-serve", "one-of-n"),
                                       strategies=("load_balanced",))
    result = router_cost.run(tmp_path, config=cfg, log=lambda *a: None)
    assert [(r["shape"], r["peers"]) for r in result["rows"]] == [
        ("all-serve", 1), ("all-serve", 10), ("one-of-n", 1), ("one-of-n", 10)]
    assert all(r["plan_p50_us"]["median"] > 0 for r in result["rows"])
    assert report.router_table(result)


def test_proxy_mesh_bare_aiohttp_and_splice_run(tmp_path: Path) -> None:
    result = proxy.run(tmp_path, config=_proxy_config(("bare", "splice")), log=lambda *a: None)
    _check_proxy(result, {"direct", "mesh", "bare", "splice"})
    mesh_row = next(r for r in result["rows"] if r["target"] == "mesh")
    assert mesh_row["added_ttft_p50_ms"]["median"] is not None
    assert report.proxy_tables(result)


@pytest.mark.skipif(nginx_binary() is None,
                    reason="nginx not installed (apt-get install -y nginx-light)")
def test_proxy_nginx_reference_runs(tmp_path: Path) -> None:
    result = proxy.run(tmp_path, config=_proxy_config(("nginx",)), log=lambda *a: None)
    _check_proxy(result, {"direct", "mesh", "nginx"})


@pytest.mark.skipif(litellm_binary() is None,
                    reason="LiteLLM not installed in bench/out/litellm-venv "
                           "(python -m venv bench/out/litellm-venv && "
                           "bench/out/litellm-venv/bin/pip install 'litellm[proxy]')")
def test_proxy_litellm_reference_runs(tmp_path: Path) -> None:
    result = proxy.run(tmp_path, config=_proxy_config(("litellm",)), log=lambda *a: None)
    _check_proxy(result, {"direct", "mesh", "litellm"})


@pytest.fixture(scope="module")
def gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled Gemma 3 270M, assembled as a node does it."""
    return engine.bundled_model(tmp_path_factory.mktemp("bench-model"))


def _engine_config(gguf: Path, engines: tuple[str, ...]) -> engine.EngineConfig:
    return engine.EngineConfig(rounds=1, tokens=4, single_streams=1, aggregate_streams=2,
                               n_ctx=512, model_path=gguf, engines=engines)


def test_engine_node_and_llama_cpp_python_run(tmp_path: Path, gguf: Path) -> None:
    result = engine.run(tmp_path, config=_engine_config(gguf, ("llama-cpp-python", "node")),
                        log=lambda *a: None)
    rows = {r["engine"]: r for r in result["rows"]}
    assert set(rows) == {"llama-cpp-python", "node"}
    for row in rows.values():
        assert row["single_tokens_per_s"]["median"] > 0
        assert row["aggregate_tokens_per_s"]["median"] > 0
    assert report.engine_table(result)


@pytest.mark.skipif(engine.tool("llama-bench") is None or engine.tool("llama-server") is None,
                    reason="llama-bench/llama-server not built (bash bench/build_llama_tools.sh, "
                           "~8 min on 2 cores)")
def test_engine_llama_cpp_references_run(tmp_path: Path, gguf: Path) -> None:
    result = engine.run(tmp_path, config=_engine_config(gguf, ("llama-bench", "llama-server")),
                        log=lambda *a: None)
    assert not result["unavailable"], result["unavailable"]
    rows = {r["engine"]: r for r in result["rows"]}
    assert rows["llama-bench"]["single_tokens_per_s"]["median"] > 0
    assert rows["llama-server"]["aggregate_tokens_per_s"]["median"] > 0


def test_discovery_runs(tmp_path: Path) -> None:
    cfg = discovery.DiscoveryConfig(sizes=(3,), trials=1, idle_measure_s=0.5, settle_s=0.5,
                                    window_timeout_s=20.0, load_rps=10.0)
    result = discovery.run(tmp_path, config=cfg, log=lambda *a: None)
    (row,) = result["rows"]
    assert row["size"] == 3 and row["trials"] == 1
    assert row["join_all_s"]["median"] is not None, "the joiner never became routable"
    assert row["kill_all_s"]["median"] is not None, "the killed node was never routed around"
    assert report.discovery_table(result)


def test_report_renders_tables_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="plots need the bench extra: pip install -e '.[bench]'")
    cfg = router_cost.RouterCostConfig(sizes=(1, 10), calls=10, rounds=1, shapes=("all-serve",),
                                       strategies=("load_balanced",))
    results = {"router": router_cost.run(tmp_path, config=cfg, log=lambda *a: None)}
    (tmp_path / "results.json").write_text(json.dumps(results))
    md = tmp_path / "RESULTS.md"
    md.write_text(f"# x\n\nkept\n\n{report.START}\nold\n{report.END}\n\nalso kept\n")
    report.update_results_md(md, results)
    text = md.read_text()
    assert "kept" in text and "also kept" in text and "old" not in text and "Router cost" in text
    assert [p.name for p in report.plots(results, tmp_path)] == ["router_cost.png"]


def test_cli_help() -> None:
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True)
    assert "--quick" in out.stdout
