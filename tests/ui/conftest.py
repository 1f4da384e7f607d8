"""A real two-node mesh and a real headless Chromium for the web UI tests.

The browser is Debian's `chromium` (apt-get install chromium), driven by
Playwright for Python through `executable_path`: Playwright never downloads
a browser here. Without /usr/bin/chromium the browser tests are skipped.

    seed     scripted "shared", 10 ms/token   the node the browser opens
    peer     scripted "shared", 10 ms/token   bootstraps from seed

Both serve one model, so the strategy decides who answers (`local`: seed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.nodes import ROOT, NodeProcess, eventually, get_json_sync

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
MODEL = "shared"
TOKEN_DELAY_MS = 10
TOKENS = 5000  # a generation runs until max_tokens, or stopped


def scripted(model: str, *, delay_ms: float = TOKEN_DELAY_MS, tokens: int = TOKENS
             ) -> tuple[str, ...]:
    return ("--engine", "scripted", "--model-name", model, "--scripted-tokens", str(tokens),
            "--scripted-delay-ms", str(delay_ms), "--heartbeat-interval", "2")


def sees(viewer: NodeProcess, node_id: str) -> bool:
    """Does `viewer`'s mesh snapshot list `node_id` as healthy?"""
    snapshot = get_json_sync(viewer.url + "/mesh/snapshot")
    return any(n["node_id"] == node_id and n["healthy"] for n in snapshot["nodes"])


@dataclass
class Mesh:
    seed: NodeProcess
    peer: NodeProcess

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.seed.dht_port}"


@pytest.fixture(scope="session")
def ui_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    started: list[NodeProcess] = []
    try:
        seed = NodeProcess(state_dir=tmp_path_factory.mktemp("ui-seed"), args=scripted(MODEL))
        started.append(seed)
        seed.start()
        peer = NodeProcess(state_dir=tmp_path_factory.mktemp("ui-peer"), args=(
            *scripted(MODEL), "--bootstrap-nodes", f"127.0.0.1:{seed.dht_port}"))
        started.append(peer)
        peer.start()
        eventually(lambda: sees(seed, peer.node_id) and sees(peer, seed.node_id), timeout=20,
                   message="the two nodes see each other")
        yield Mesh(seed=seed, peer=peer)
    finally:
        for node in started:
            node.stop(timeout=5)


@pytest.fixture
def extra_node(ui_mesh: Mesh, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Callable[..., NodeProcess]]:
    """Start more nodes joined to the mesh; stopped (or already killed) when the test ends."""
    extra: list[NodeProcess] = []

    def start(*args: str, name: str = "ui-extra") -> NodeProcess:
        node = NodeProcess(state_dir=tmp_path_factory.mktemp(name),
                           args=(*args, "--bootstrap-nodes", ui_mesh.bootstrap))
        extra.append(node)
        return node.start()

    yield start
    for node in extra:
        node.stop(timeout=5)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """One headless Chromium per module. Not per session: sync Playwright keeps
    its event loop marked running while it is open, which would break any
    asyncio test that pytest runs after it."""
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium "
                    "(apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: object, ui_mesh: Mesh) -> Iterator[object]:
    """A fresh browser context on the seed's UI; fails the test on any uncaught JS error."""
    from playwright.sync_api import Browser, expect

    assert isinstance(browser, Browser)
    expect.set_options(timeout=10_000)
    context = browser.new_context(viewport={"width": 1280, "height": 820}, color_scheme="light")
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(ui_mesh.seed.url + "/")
    expect(opened.locator("#live")).to_have_attribute("data-state", "live")
    expect(opened.locator("#model")).to_have_value(MODEL)  # the model list has loaded
    yield opened
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
