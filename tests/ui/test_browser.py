"""The web UI in a real browser against a real mesh: chat, strategy, stop,
sanitising, errors, and the live mesh view as nodes come and go.

Sync Playwright in plain `def` tests: pytest-asyncio's auto mode leaves them
alone, so no event loop is running when Playwright starts its own.
"""

from __future__ import annotations

import http.client
import json
import re
from collections.abc import Callable

import pytest
from playwright.sync_api import Page, Route, expect

from tests.support.nodes import NodeProcess, eventually, get_json_sync
from tests.ui.conftest import CHROMIUM, MODEL, Mesh, artifact, scripted, sees

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="browser tests need Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")

LAST_ANSWER = ".msg-assistant >> nth=-1"


def set_max_tokens(page: Page, value: int) -> None:
    page.fill("#max-tokens", str(value))
    page.dispatch_event("#max-tokens", "change")


def ask(page: Page, text: str) -> None:
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")


def watch_answer_text(page: Page) -> None:
    """Record every distinct text the next answer shows while it streams in."""
    page.evaluate("""() => {
        window.__states = [];
        const box = document.getElementById('conversation');
        new MutationObserver(() => {
            const answers = box.querySelectorAll('.msg-assistant .answer');
            const text = answers.length ? answers[answers.length - 1].textContent : '';
            if (text && window.__states[window.__states.length - 1] !== text) window.__states.push(text);
        }).observe(box, {childList: true, subtree: true, characterData: true});
    }""")


def test_prompt_streams_in_token_by_token(page: Page, ui_mesh: Mesh) -> None:
    set_max_tokens(page, 100)
    expect(page.locator("#model")).to_have_value(MODEL)
    watch_answer_text(page)
    page.fill("#prompt", "Say hello to the mesh")
    page.press("#prompt", "Shift+Enter")  # a new line, not a send
    page.type("#prompt", "in **two** lines")
    expect(page.locator(".msg-user")).to_have_count(0)
    page.press("#prompt", "Enter")

    expect(page.locator(".msg-user .bubble")).to_have_text("Say hello to the mesh\nin **two** lines")
    answer = page.locator(LAST_ANSWER)
    expect(answer).to_have_attribute("data-status", "done")
    expect(answer.locator(".answer")).to_contain_text("tok0 tok1 tok2")
    expect(answer.locator(".answer")).to_contain_text("tok99")
    states = page.evaluate("window.__states")
    assert len(states) >= 5, f"the answer arrived in {len(states)} steps, not token by token"
    assert all(b.strip().startswith(a.strip()) for a, b in zip(states, states[1:])), states

    served_by = answer.locator(".chip-node").get_attribute("data-node")
    assert served_by in {ui_mesh.seed.node_id, ui_mesh.peer.node_id}
    expect(answer.locator(".chip-ttft")).to_contain_text("first token")
    expect(answer.locator(".chip-tps")).to_contain_text("tok/s")
    expect(answer.locator(".chip-tokens")).to_have_text("100 tokens")
    expect(page.locator("#send")).to_be_visible()
    page.screenshot(path=artifact("ui-chat.png"))


def test_local_strategy_and_whole_answers(page: Page, ui_mesh: Mesh) -> None:
    bodies: list[dict[str, object]] = []
    page.on("request", lambda r: bodies.append(json.loads(r.post_data or "{}"))
            if r.url.endswith("/v1/chat/completions") else None)
    page.select_option("#strategy", "local")
    page.uncheck("#stream", force=True)
    set_max_tokens(page, 5)
    ask(page, "who answers?")

    answer = page.locator(LAST_ANSWER)
    expect(answer).to_have_attribute("data-status", "done")
    expect(answer.locator(".answer")).to_have_text("tok0 tok1 tok2 tok3 tok4")
    expect(answer.locator(".chip-route")).to_have_attribute("data-route", "local")
    expect(answer.locator(".chip-node")).to_have_attribute("data-node", ui_mesh.seed.node_id)
    assert bodies[-1]["strategy"] == "local"
    assert bodies[-1]["stream"] is False
    assert bodies[-1]["max_tokens"] == 5

    # The settings survive a reload, and the conversation goes on with its history.
    page.reload()
    expect(page.locator("#model")).to_have_value(MODEL)
    expect(page.locator("#strategy")).to_have_value("local")
    expect(page.locator("#stream")).not_to_be_checked()
    page.select_option("#strategy", "fastest")
    page.check("#stream", force=True)
    ask(page, "again")
    expect(page.locator(LAST_ANSWER)).to_have_attribute("data-status", "done")
    assert bodies[-1]["strategy"] == "fastest" and bodies[-1]["stream"] is True


def test_mesh_view_shows_both_nodes_live(page: Page, ui_mesh: Mesh) -> None:
    page.click("#tab-mesh")
    rows = page.locator("#nodes tbody tr")
    expect(rows).to_have_count(2)
    seed_row = page.locator(f'#nodes tr[data-node-id="{ui_mesh.seed.node_id}"]')
    peer_row = page.locator(f'#nodes tr[data-node-id="{ui_mesh.peer.node_id}"]')
    expect(seed_row).to_have_class("local")
    expect(seed_row).to_contain_text("you")
    expect(seed_row).to_contain_text(ui_mesh.seed.url)
    expect(peer_row).to_have_attribute("data-healthy", "true")
    expect(peer_row).to_contain_text(ui_mesh.peer.url)
    expect(peer_row).to_contain_text(MODEL)
    expect(page.locator("#graph g.node")).to_have_count(2)
    expect(page.locator("#graph g.node.local")).to_have_attribute(
        "data-node-id", ui_mesh.seed.node_id)
    expect(page.locator("#stat-nodes")).to_have_text("2")
    expect(page.locator("#dht-state")).to_have_text(re.compile("bootstrapped|seed node"))
    expect(page.locator("#dht")).to_contain_text(f"127.0.0.1:{ui_mesh.peer.dht_port}")
    expect(page.locator("#tab-mesh-count")).to_have_text("2")

    # Live: a generation on the peer shows up as activity without a reload.
    page.click("#tab-chat")
    set_max_tokens(page, 400)
    ask(page, "keep the peer busy")
    page.click("#tab-mesh")
    expect(page.locator("#stat-active")).not_to_have_text("0")
    page.screenshot(path=artifact("ui-mesh.png"))
    page.keyboard.press("Escape")
    expect(page.locator(LAST_ANSWER)).to_have_attribute("data-status", "stopped")
    expect(page.locator("#stat-active")).to_have_text("0")


def test_stop_aborts_and_frees_the_engine(page: Page, ui_mesh: Mesh) -> None:
    before = get_json_sync(ui_mesh.seed.url + "/status")["requests_cancelled"]
    page.select_option("#strategy", "local")
    set_max_tokens(page, 2048)  # 20 s of tokens unless stopped
    ask(page, "go on for a while")
    answer = page.locator(LAST_ANSWER)
    expect(answer.locator(".answer")).to_contain_text("tok10")
    expect(page.locator("#send")).to_be_hidden()
    page.click("#stop")

    expect(answer).to_have_attribute("data-status", "stopped")
    expect(answer.locator(".chip-stopped")).to_be_visible()
    expect(answer.locator(".chip-tps")).to_be_visible()  # what did arrive is still measured
    expect(page.locator("#send")).to_be_visible()
    shown = answer.locator(".answer").text_content() or ""
    assert "tok2047" not in shown

    def freed() -> bool:
        status = get_json_sync(ui_mesh.seed.url + "/status")
        return status["active_requests"] == 0 and status["requests_cancelled"] > before
    eventually(freed, timeout=5, message="the stopped generation leaves the engine")


CRAFTED = [
    "Here is **bold**, then <script>window.__pwned = 'script'</script> and ",
    '<img src="x" onerror="window.__pwned = \'img\'"> and ',
    "[a link](javascript:window.__pwned='link') and\n\n",
    '<div onclick="window.__pwned = \'div\'">block html</div>\n\n',
    "```python\nprint('<b>not bold</b>')\n```\n",
]


def test_html_in_model_output_is_shown_as_text(page: Page) -> None:
    """The network answer is crafted (a scripted engine cannot say <script>);
    everything after it, stream parsing and rendering, is the chat's own."""
    def crafted_stream(route: Route) -> None:
        chunks = [{"choices": [{"index": 0, "delta": {"content": piece}}]} for piece in CRAFTED]
        body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
        route.fulfill(status=200, body=body, headers={
            "Content-Type": "text/event-stream", "X-Mesh-Node": "crafted", "X-Mesh-Route": "local"})

    page.route("**/v1/chat/completions", crafted_stream)
    ask(page, "say something nasty")
    answer = page.locator(LAST_ANSWER)
    expect(answer).to_have_attribute("data-status", "done")
    rendered = answer.locator(".answer")
    expect(rendered.locator("strong")).to_have_text("bold")  # Markdown still renders
    expect(rendered).to_contain_text("<script>window.__pwned = 'script'</script>")
    expect(rendered).to_contain_text('<img src="x" onerror=')
    expect(rendered).to_contain_text('<div onclick="window.__pwned = \'div\'">block html</div>')
    expect(rendered.locator(".codeblock")).to_contain_text("print('<b>not bold</b>')")
    expect(rendered.locator(".codeblock .hljs-built_in, .codeblock .hljs-string")).not_to_have_count(0)
    assert rendered.locator("script, img, iframe, div[onclick]").count() == 0
    assert rendered.locator("a").get_attribute("href") in (None, "")

    # The same renderer, handed the sharpest inputs directly.
    leftovers = page.evaluate("""() => {
        const target = document.createElement('div');
        document.body.append(target);
        window.llamamesh.renderMarkdown(target, [
            '<svg onload="window.__pwned=\\'svg\\'"></svg>',
            '<iframe srcdoc="<script>parent.__pwned=1</script>"></iframe>',
            '<a href="javascript:window.__pwned=1">x</a> <b onmouseover=alert(1)>hi</b>',
            '![img](x" onerror="window.__pwned=1)',
            '<scr<script>ipt>window.__pwned=1</script>',
        ].join('\\n\\n'));
        const bad = [...target.querySelectorAll('*')].filter((el) =>
            ['SCRIPT', 'IFRAME', 'SVG', 'IMG', 'svg'].includes(el.tagName) ||
            [...el.attributes].some((a) => a.name.startsWith('on') ||
                                          /^\\s*javascript:/i.test(a.value)));
        target.remove();
        return bad.map((el) => el.outerHTML);
    }""")
    assert leftovers == []
    assert page.evaluate("window.__pwned") is None


def test_errors_read_as_messages(page: Page) -> None:
    # Pick a model no node serves and send, in one task: a model-list refresh
    # from a snapshot cannot slip in between and put a real model back.
    page.evaluate("""() => {
        const select = document.getElementById('model');
        select.append(new Option('no-such-model', 'no-such-model'));
        select.value = 'no-such-model';
        document.getElementById('prompt').value = 'anyone?';
        document.getElementById('composer').requestSubmit();
    }""")
    card = page.locator(LAST_ANSWER).locator(".error-card")
    expect(card.locator(".error-title")).to_have_text("Model not available")
    expect(card.locator(".error-text")).to_contain_text("no-such-model")
    expect(card.locator(".error-code")).to_have_text("model_not_found")


def test_full_queue_reads_as_busy(page: Page, ui_mesh: Mesh,
                                  extra_node: Callable[..., NodeProcess]) -> None:
    narrow = extra_node(*scripted("narrow"), "--max-queue", "0", name="ui-narrow")
    eventually(lambda: sees(ui_mesh.seed, narrow.node_id), timeout=15,
               message="the seed routes to the one-slot node")
    # Someone else holds the node's only slot.
    holder = http.client.HTTPConnection("127.0.0.1", int(narrow.info["http_port"]), timeout=10)
    holder.request("POST", "/v1/chat/completions", headers={"Content-Type": "application/json"},
                   body=json.dumps({"model": "narrow", "max_tokens": 2048, "stream": True,
                                    "messages": [{"role": "user", "content": "mine"}]}))
    try:
        assert holder.getresponse().status == 200
        expect(page.locator("#model option[value=narrow]")).to_have_count(1)
        page.select_option("#model", "narrow")
        ask(page, "room for me?")
        card = page.locator(LAST_ANSWER).locator(".error-card")
        expect(card.locator(".error-title")).to_have_text("The mesh is busy")
        expect(card.locator(".error-text")).to_contain_text("busy")
        expect(card.locator(".error-text")).to_contain_text("Try again in 1 s")
    finally:
        holder.close()


def test_third_node_joins_dies_mid_answer_and_leaves(
        page: Page, ui_mesh: Mesh, extra_node: Callable[..., NodeProcess]) -> None:
    doomed = extra_node(*scripted("doomed"), name="ui-doomed")
    eventually(lambda: sees(ui_mesh.seed, doomed.node_id), timeout=15,
               message="the seed routes to the new node")
    page.click("#tab-mesh")
    expect(page.locator("#nodes tbody tr[data-healthy=true]")).to_have_count(3)
    expect(page.locator("#graph g.node")).to_have_count(3)
    expect(page.locator("#stat-nodes")).to_have_text("3")
    page.screenshot(path=artifact("ui-mesh-three.png"))

    # An answer the new node streams through the seed; then it dies mid-answer.
    page.click("#tab-chat")
    expect(page.locator("#model option[value=doomed]")).to_have_count(1)
    page.select_option("#model", "doomed")
    page.select_option("#strategy", "load_balanced")
    set_max_tokens(page, 2048)
    ask(page, "tell me a long story")
    answer = page.locator(LAST_ANSWER)
    expect(answer.locator(".answer")).to_contain_text("tok5")
    doomed.kill()
    expect(answer).to_have_attribute("data-status", "error")
    expect(answer.locator(".error-title")).to_have_text("Answer interrupted")
    expect(answer.locator(".error-code")).to_have_text("upstream_failed")
    expect(answer.locator(".chip-node")).to_have_attribute("data-node", doomed.node_id)
    expect(answer.locator(".answer")).to_contain_text("tok5")  # what came is kept

    # The mesh view: unhealthy first, then gone.
    page.click("#tab-mesh")
    row = page.locator(f'#nodes tr[data-node-id="{doomed.node_id}"]')
    expect(row).to_have_attribute("data-healthy", "false")
    expect(row.locator(".pill")).to_have_text("unhealthy")
    expect(row).to_have_count(0, timeout=30_000)
    expect(page.locator("#nodes tbody tr")).to_have_count(2)


def test_phone_width(browser: object, ui_mesh: Mesh) -> None:
    from playwright.sync_api import Browser

    assert isinstance(browser, Browser)
    context = browser.new_context(viewport={"width": 390, "height": 844}, color_scheme="dark",
                                  is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        page.goto(ui_mesh.seed.url + "/")
        expect(page.locator("#live")).to_have_attribute("data-state", "live")
        expect(page.locator("#model")).to_have_value(MODEL)
        overflow = "document.documentElement.scrollWidth - window.innerWidth"
        assert page.evaluate(overflow) <= 0
        expect(page.locator("#settings")).not_to_be_in_viewport()
        page.click("#settings-toggle")
        expect(page.locator("#settings")).to_be_in_viewport()
        page.select_option("#strategy", "local")
        set_max_tokens(page, 8)
        page.click("#settings-close")
        expect(page.locator("#settings")).not_to_be_in_viewport()
        page.click("#settings-toggle")
        expect(page.locator("#settings")).to_be_in_viewport()
        page.click("#live")  # a tap outside (here the header) closes the sheet too
        expect(page.locator("#settings")).not_to_be_in_viewport()
        page.click(".suggestion >> nth=0")
        expect(page.locator(LAST_ANSWER)).to_have_attribute("data-status", "done")
        page.screenshot(path=artifact("ui-phone-chat.png"))
        page.click("#tab-mesh")
        expect(page.locator("#nodes tbody tr")).to_have_count(2)
        assert page.evaluate(overflow) <= 0
        page.screenshot(path=artifact("ui-phone-mesh.png"))
    finally:
        context.close()
