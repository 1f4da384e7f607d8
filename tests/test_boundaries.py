"""The module boundaries STYLE.md promises, checked by walking the imports."""

from __future__ import annotations

import ast
from pathlib import Path

MESH = Path(__file__).resolve().parents[1] / "mesh"


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def importers_of(prefix: str) -> set[str]:
    return {str(p.relative_to(MESH)) for p in MESH.rglob("*.py")
            if any(n == prefix or n.startswith(prefix + ".") for n in imports_of(p))}


def test_only_dht_imports_kademlia() -> None:
    assert {p.split("/")[0] for p in importers_of("kademlia")} <= {"dht"}
    assert {p.split("/")[0] for p in importers_of("rpcudp")} <= {"dht"}


def test_only_the_llama_engine_imports_llama_cpp() -> None:
    assert importers_of("llama_cpp") == {"local/llama_engine.py"}


def test_only_api_and_node_import_aiohttp_web() -> None:
    users = {p for p in importers_of("aiohttp.web") | {
        str(p.relative_to(MESH)) for p in MESH.rglob("*.py")
        if "from aiohttp import web" in p.read_text()}}
    assert all(p.startswith("api/") or p == "node.py" for p in users), users


def test_only_the_proxy_is_an_aiohttp_client_inside_a_node() -> None:
    """The client library and operator tools are clients by nature; inside a
    node only the proxy talks HTTP to peers."""
    clients = {str(p.relative_to(MESH)) for p in MESH.rglob("*.py")
               if "ClientSession(" in p.read_text() or "session.post(" in p.read_text()}
    inside_node = {c for c in clients if not c.startswith(("client/", "ops/"))}
    assert inside_node <= {"router/proxy.py", "node.py"}, clients


def test_dht_and_local_stay_inside_their_lane() -> None:
    allowed = ("mesh.settings", "mesh.errors", "mesh.wire")
    for lane in ("dht", "local"):
        for path in (MESH / lane).glob("*.py"):
            for name in imports_of(path):
                if name.startswith("mesh.") and not name.startswith(f"mesh.{lane}"):
                    assert name in allowed, f"{path.name} imports {name}"


def test_router_never_touches_kademlia_or_llama_cpp() -> None:
    for path in (MESH / "router").glob("*.py"):
        names = imports_of(path)
        assert not any(n.startswith(("kademlia", "llama_cpp", "mesh.dht.discovery",
                                     "mesh.local.llama_engine")) for n in names), path.name
