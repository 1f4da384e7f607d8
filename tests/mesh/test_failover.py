"""Nodes come and go: joins become routable fast, deaths are routed around
without client-visible errors, and a death mid-answer is reported, not hidden."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import openai

from tests.mesh.conftest import Swarm, routable, scripted
from tests.support.nodes import NodeProcess, eventually, get_json_sync

HELLO = [{"role": "user", "content": "hello"}]


def _chat(url: str, model: str) -> tuple[int, str]:
    request = urllib.request.Request(
        url + "/v1/chat/completions", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"model": model, "messages": HELLO, "max_tokens": 3}).encode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return response.status, response.headers["X-Mesh-Node"]
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_late_joiner_is_routable_from_every_node(swarm: Swarm, join: Callable[..., NodeProcess],
                                                 tiny_model: Callable[..., Path]) -> None:
    started = time.monotonic()
    juliet = join("--model-path", str(tiny_model("juliet")), name="juliet")
    ready_at = time.monotonic()
    for node in swarm.nodes:
        eventually(lambda n=node: routable(n, "juliet", juliet.node_id), timeout=8,
                   message=f"{node.node_id[:8]} routes to the new node")
    visible_after = time.monotonic() - ready_at
    print(f"\njoin: process start to ready {ready_at - started:.2f}s, "
          f"ready to routable from all {len(swarm.nodes)} nodes {visible_after:.2f}s")
    answer = openai.OpenAI(base_url=swarm.slow.url + "/v1", api_key="x", max_retries=0
                           ).chat.completions.with_raw_response.create(
        model="juliet", messages=HELLO, max_tokens=2)
    assert answer.headers["x-mesh-node"] == juliet.node_id
    juliet.stop()
    # A clean stop withdraws at once: gone from every catalog well before its entry TTL.
    for node in swarm.nodes:
        eventually(lambda n=node: not routable(n, "juliet", juliet.node_id), timeout=5,
                   message="a stopped node leaves the catalog")


def test_killed_provider_is_routed_around_without_errors(
        swarm: Swarm, join: Callable[..., NodeProcess]) -> None:
    keeper = join(*scripted("kill-me", 1, tokens=3), name="keeper")
    victim = join(*scripted("kill-me", 1, tokens=3), name="victim")
    gateways = [swarm.alpha, swarm.charlie]
    for gateway in gateways:
        for provider in (keeper, victim):
            eventually(lambda g=gateway, p=provider: routable(g, "kill-me", p.node_id),
                       timeout=10, message="both providers routable")
    victim.kill()
    killed_at = time.monotonic()
    failures: list[tuple[int, str]] = []
    served_by_victim_after_kill = 0
    routed_around_at: float | None = None
    deadline = killed_at + 4.0
    sent = 0
    while time.monotonic() < deadline and sent < 400:
        for gateway in gateways:
            status, node = _chat(gateway.url, "kill-me")
            sent += 1
            if status != 200:
                failures.append((status, node))
            elif node == victim.node_id:
                served_by_victim_after_kill += 1
        if routed_around_at is None and not any(
                routable(g, "kill-me", victim.node_id) for g in gateways):
            routed_around_at = time.monotonic()
    assert failures == [], failures
    assert served_by_victim_after_kill == 0
    assert routed_around_at is not None, "the killed provider is still listed as healthy"
    print(f"\nkill -9: {sent} requests through 2 gateways, 0 failed; "
          f"marked unhealthy everywhere {routed_around_at - killed_at:.2f}s after the kill")


def test_provider_dying_mid_stream_gives_an_error_event(
        swarm: Swarm, join: Callable[..., NodeProcess]) -> None:
    doomed = join(*scripted("doomed", 50, tokens=400), name="doomed")
    eventually(lambda: routable(swarm.alpha, "doomed", doomed.node_id), timeout=10,
               message="doomed routable")
    request = urllib.request.Request(
        swarm.alpha.url + "/v1/chat/completions", method="POST",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"model": "doomed", "messages": HELLO, "stream": True}).encode())
    events: list[str] = []
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["X-Mesh-Node"] == doomed.node_id
        buffer = b""
        killed = False
        while True:
            data = response.read1(65536)
            if not data:
                break
            buffer += data
            *complete, buffer = buffer.split(b"\n\n")
            events.extend(e.decode() for e in complete)
            if not killed and len(events) >= 3:
                doomed.kill()
                killed = True
    assert killed
    assert "data: [DONE]" not in events
    last = json.loads(events[-1].removeprefix("data: "))
    assert last["error"]["code"] == "upstream_failed"
    assert "incomplete" in last["error"]["message"]
    # The gateway itself is fine.
    assert _chat(swarm.alpha.url, "charlie")[0] == 200


def test_client_leaving_a_proxied_stream_stops_the_provider(
        swarm: Swarm, join: Callable[..., NodeProcess]) -> None:
    slowpoke = join(*scripted("slowpoke", 40, tokens=500), name="slowpoke")
    eventually(lambda: routable(swarm.charlie, "slowpoke", slowpoke.node_id), timeout=10,
               message="slowpoke routable")
    request = urllib.request.Request(
        swarm.charlie.url + "/v1/completions", method="POST",
        headers={"Content-Type": "application/json"},
        data=json.dumps({"model": "slowpoke", "prompt": "x", "stream": True}).encode())
    response = urllib.request.urlopen(request, timeout=30)
    assert response.headers["X-Mesh-Node"] == slowpoke.node_id
    response.read1(1024)
    assert get_json_sync(slowpoke.url + "/health")["active_requests"] == 1
    response.close()  # the client goes away mid-stream
    eventually(lambda: get_json_sync(slowpoke.url + "/health")["active_requests"] == 0,
               timeout=5, message="provider stopped generating for the departed client")
    status = get_json_sync(slowpoke.url + "/status")
    assert status["requests_cancelled"] == 1
    assert status["completion_tokens_total"] < 200  # 500 tokens would take 20 s
