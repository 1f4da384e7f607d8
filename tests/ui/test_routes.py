"""The UI's HTTP side without a browser: the page, its static files, and the
mesh event stream, against the real two-node mesh.

Plain `def` tests with blocking clients, like the browser tests beside them:
no event loop of pytest-asyncio's meets Playwright's.
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.resources import files
from urllib.parse import urlsplit

from tests.ui.conftest import Mesh

UI = files("mesh_ui")


@contextmanager
def connect(url: str, timeout: float = 10) -> Iterator[http.client.HTTPConnection]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        yield connection
    finally:
        connection.close()


def get(url: str, path: str, headers: dict[str, str] | None = None
        ) -> tuple[int, http.client.HTTPMessage, bytes]:
    with connect(url) as connection:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.headers, response.read()


def test_page_is_served_with_a_strict_policy(ui_mesh: Mesh) -> None:
    status, headers, body = get(ui_mesh.seed.url, "/")
    assert status == 200
    assert headers.get_content_type() == "text/html"
    policy = headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "unsafe-inline" not in policy
    assert b'<script src="/static/app.js" type="module">' in body


def test_every_file_the_page_needs_is_served_from_here(ui_mesh: Mesh) -> None:
    """No CDN: every script, style and icon is a /static/ path this node serves,
    and so is every module the scripts import."""
    html = (UI / "index.html").read_text()
    assert not re.search(r"""(src|href)=["']https?:""", html)
    wanted = set(re.findall(r"""(?:src|href)=["'](/static/[^"']+)["']""", html))
    for script in UI.iterdir():
        if script.name.endswith(".js"):
            text = script.read_text()
            # The SVG namespace is a name, not a fetch.
            urls = set(re.findall(r"https?://[^\s\"'`]+", text)) - {"http://www.w3.org/2000/svg"}
            assert not urls, (script.name, urls)
            wanted |= {f"/static/{name}" for name in re.findall(r'from "\./([\w.-]+)"', text)}
    assert {"/static/app.js", "/static/chat.js", "/static/mesh.js", "/static/render.js",
            "/static/vendor/marked.umd.js", "/static/vendor/purify.min.js"} <= wanted
    types = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for path in sorted(wanted):
        status, headers, _ = get(ui_mesh.seed.url, path)
        assert status == 200, path
        assert headers.get_content_type() == types[path[path.rfind("."):]], path
        status, _, _ = get(ui_mesh.seed.url, path, {"If-None-Match": headers["ETag"]})
        assert status == 304, path


def test_only_ui_files_are_reachable(ui_mesh: Mesh) -> None:
    for path in ("/static/__init__.py", "/static/__pycache__/__init__.cpython-311.pyc", "/static/%2e%2e/pyproject.toml",
                 "/static/..%2fpyproject.toml", "/static/vendor/../__init__.py",
                 "/static/../pyproject.toml", "/static/nope.js", "/static/.hidden",
                 "/static/vendor"):
        status, _, body = get(ui_mesh.seed.url, path)
        assert status == 404, path
        assert json.loads(body)["error"]["message"], path


def read_events(url: str, count: int, *, timeout: float) -> tuple[bytes, list[dict]]:
    """The raw bytes and parsed data of the first `count` events of /mesh/events."""
    raw = b""
    events: list[dict] = []
    with connect(url, timeout=timeout) as connection:
        connection.request("GET", "/mesh/events")
        response = connection.getresponse()
        assert response.status == 200
        assert response.headers.get_content_type() == "text/event-stream"
        while len(events) < count:
            line = response.readline()
            raw += line
            if line.startswith(b"data: "):
                events.append(json.loads(line[6:]))
    return raw, events


def test_event_stream_pushes_snapshots(ui_mesh: Mesh) -> None:
    started = time.monotonic()
    raw, (first, second) = read_events(ui_mesh.seed.url, 2, timeout=10)
    assert time.monotonic() - started < 4, "a snapshot at least every ~2 s"
    assert b"\r" not in raw  # sep="\n"
    assert raw.startswith(b"event: snapshot\ndata: {")
    assert b"\nretry: " in raw
    assert first["node_id"] == ui_mesh.seed.node_id
    assert first["models"] == ["shared"]
    nodes = {n["node_id"]: n for n in second["nodes"]}
    assert set(nodes) == {ui_mesh.seed.node_id, ui_mesh.peer.node_id}
    here, peer = nodes[ui_mesh.seed.node_id], nodes[ui_mesh.peer.node_id]
    assert here["local"] and not peer["local"]
    assert peer["url"] == ui_mesh.peer.url and peer["healthy"]
    for field in ("queue_depth", "active_requests", "tokens_per_second", "uptime_s",
                  "last_seen_s", "capacity", "models"):
        assert field in peer
    assert second["dht"]["routing_table_size"] >= 1
    assert second["dht"]["dht_port"] == ui_mesh.seed.dht_port
    _, _, body = get(ui_mesh.seed.url, "/mesh/snapshot")
    assert json.loads(body)["node_id"] == ui_mesh.seed.node_id


def test_a_change_is_pushed_at_once(ui_mesh: Mesh) -> None:
    """A generation starting shows up well before the next heartbeat snapshot."""
    with connect(ui_mesh.seed.url) as events, connect(ui_mesh.seed.url) as chat:
        events.request("GET", "/mesh/events")
        stream = events.getresponse()

        def next_snapshot() -> dict:
            while not (line := stream.readline()).startswith(b"data: "):
                pass
            return json.loads(line[6:])

        next_snapshot()  # the opening one
        chat.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json"},
                     body=json.dumps({"model": "shared", "max_tokens": 300, "stream": True,
                                      "strategy": "local",
                                      "messages": [{"role": "user", "content": "hi"}]}))
        assert chat.getresponse().status == 200  # headers come with the first token
        sent = time.monotonic()
        while not any(n["local"] and n["active_requests"] == 1
                      for n in next_snapshot()["nodes"]):
            assert time.monotonic() - sent < 5
        assert time.monotonic() - sent < 1.5
