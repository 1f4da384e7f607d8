"""Node ids: stable across restarts, distinct per port, overridable."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from mesh.identity import resolve_identity, validate
from tests.support.nodes import NodeProcess


def test_same_port_same_id_and_stored(tmp_path: Path) -> None:
    first = resolve_identity(state_dir=tmp_path, port=8000, override=None)
    again = resolve_identity(state_dir=tmp_path, port=8000, override=None)
    assert first.node_id == again.node_id
    assert first.source == "hardware"
    assert len(first.node_id) == 40
    stored = json.loads((tmp_path / "identity" / "node-8000.json").read_text())
    assert stored["node_id"] == first.node_id
    assert validate(first)["consistent"] is True


def test_ports_give_different_ids(tmp_path: Path) -> None:
    ids = {resolve_identity(state_dir=tmp_path, port=p, override=None).node_id
           for p in (8000, 8002, 8004)}
    assert len(ids) == 3


def test_override_wins(tmp_path: Path) -> None:
    identity = resolve_identity(state_dir=tmp_path, port=8000, override="my-node")
    assert identity.node_id == "my-node" and identity.source == "override"


def test_changed_hardware_gives_new_id(tmp_path: Path) -> None:
    first = resolve_identity(state_dir=tmp_path, port=8000, override=None)
    path = tmp_path / "identity" / "node-8000.json"
    stored = json.loads(path.read_text())
    stored["node_id"] = "0" * 40  # as if written on other hardware
    path.write_text(json.dumps(stored))
    again = resolve_identity(state_dir=tmp_path, port=8000, override=None)
    assert again.node_id == first.node_id
    assert json.loads(path.read_text())["node_id"] == first.node_id


def test_node_keeps_its_id_across_restarts(tmp_path: Path,
                                          tiny_model: Callable[..., Path]) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    args = ("--model-path", str(tiny_model("ident")))
    state = tmp_path / "state"

    def boot() -> str:
        node = NodeProcess(state_dir=state, args=(*args, "--port", str(port)))
        try:
            return node.start().node_id
        finally:
            node.stop()

    assert boot() == boot()
    override = NodeProcess(state_dir=state, args=(*args, "--node-id", "custom-1"))
    try:
        assert override.start().node_id == "custom-1"
    finally:
        override.stop()
