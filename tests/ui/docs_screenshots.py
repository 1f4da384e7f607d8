"""Regenerate the README's screenshots, docs/ui-chat.png and docs/ui-mesh.png.

    python -m tests.ui.docs_screenshots

A real three-node mesh on this machine: two nodes on the bundled Gemma 3
270M (what `llamamesh` serves) and one on a tiny random-weight llama GGUF,
seen from the first Gemma node's UI in Debian's chromium. The chat shows
whatever the model really answers (a small base model: expect it to
wander); the mesh view is taken while the peers are generating, so load and
activity show. Not a test: pytest does not collect it.
"""

from __future__ import annotations

import json
import tempfile
import threading
import urllib.request
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

from tests.support.nodes import ROOT, NodeProcess, eventually
from tests.support.tiny_gguf import write_tiny_gguf
from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS, sees

DOCS = ROOT / "docs"
# A base model continues text far better than it follows instructions.
PROMPT = "Once upon a time, in a small village high in the Andes, there lived a llama named"


def _generate(url: str, model: str, tokens: int) -> None:
    body = json.dumps({"model": model, "max_tokens": tokens, "strategy": "local",
                       "messages": [{"role": "user", "content": "Tell me about meshes."}]})
    request = urllib.request.Request(url + "/v1/chat/completions", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        tiny = root / "tiny-llama.gguf"
        write_tiny_gguf(tiny, name="tiny-llama", with_chat_template=True, n_ctx=512)
        first = NodeProcess(state_dir=root / "gemma-a", args=("--heartbeat-interval", "2"))
        nodes = [first.start(timeout=180)]
        seed = ("--bootstrap-nodes", f"127.0.0.1:{first.dht_port}", "--heartbeat-interval", "2")
        try:
            nodes.append(NodeProcess(state_dir=root / "gemma-b", args=seed).start(timeout=180))
            nodes.append(NodeProcess(state_dir=root / "tiny",
                                     args=("--model-path", str(tiny), *seed)).start())
            for node in nodes[1:]:
                eventually(lambda n=node: sees(first, n.node_id), timeout=30,
                           message="the first node sees its peers")
            shoot(first, nodes)
        finally:
            for node in nodes:
                node.stop(timeout=10)


def shoot(first: NodeProcess, nodes: list[NodeProcess]) -> None:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 760}, color_scheme="light")
        page.goto(first.url + "/")
        expect(page.locator("#live")).to_have_attribute("data-state", "live", timeout=15_000)
        page.select_option("#model", "gemma-3-270m")
        page.fill("#max-tokens", "120")
        page.dispatch_event("#max-tokens", "change")
        page.fill("#prompt", PROMPT)
        page.press("#prompt", "Enter")
        expect(page.locator(".msg-assistant").last).to_have_attribute(
            "data-status", "done", timeout=60_000)
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=DOCS / "ui-chat.png")

        # Each peer's tokens/s is its recent rate: give both a finished answer first.
        _generate(nodes[1].url, "gemma-3-270m", 24)
        _generate(nodes[2].url, "tiny-llama", 200)
        page = browser.new_page(viewport={"width": 1280, "height": 850}, color_scheme="dark")
        page.goto(first.url + "/#mesh")
        expect(page.locator("#nodes tbody tr")).to_have_count(3, timeout=15_000)
        load = [threading.Thread(target=_generate, args=(nodes[1].url, "gemma-3-270m", 160)),
                threading.Thread(target=_generate, args=(nodes[2].url, "tiny-llama", 4000))]
        for thread in load:
            thread.start()
        expect(page.locator("#stat-active")).to_have_text("2", timeout=15_000)
        page.wait_for_timeout(1500)  # let the rings and rates settle on screen
        page.screenshot(path=DOCS / "ui-mesh.png")
        for thread in load:
            thread.join()
        browser.close()
    print(f"wrote {DOCS / 'ui-chat.png'} and {DOCS / 'ui-mesh.png'}")


if __name__ == "__main__":
    main()
