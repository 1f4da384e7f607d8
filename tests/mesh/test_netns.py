"""The mesh across real addresses: three hosts in network namespaces.

Each "host" is a network namespace with one veth interface on a private LAN,
10.213.77.0/24, switched by a bridge that lives in a fourth namespace of its
own. Nothing of this LAN touches the root namespace, so it cannot reach any
other address, and parallel runs (namespace names carry the pid) cannot see
each other even though they use the same addresses.

    ns1  10.213.77.1  HTTP 8081  "ns-one"    the seed: no bootstrap
    ns2  10.213.77.2  HTTP 8082  "ns-two"    bootstraps from 10.213.77.1:8001
    ns3  10.213.77.3  HTTP 8083  "ns-three"  bootstraps from 10.213.77.1:8001

Every node binds 0.0.0.0, so the address it advertises comes from the
advertise logic in mesh.node / mesh.dht.address, and the test checks it is
the namespace's LAN address. (Each node has its own HTTP port because the
namespaces share the machine's hardware fingerprint, and a node id is that
fingerprint plus the HTTP port.)

A client inside ns1 (the OpenAI SDK, run with `ip netns exec`) asks node 1
for all three models, whole and streamed, and reads node 1's
/v1/models/network.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mesh.settings import Settings
from tests.support.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.timeout(60)  # backstop; the test bounds itself below this

SUBNET = "10.213.77"
DHT_PORT = 8001
HOSTS = {1: "ns-one", 2: "ns-two", 3: "ns-three"}  # host number -> model it serves
TEST_BUDGET_S = 45.0  # everything from the first namespace to the last assertion


def host_ip(n: int) -> str:
    return f"{SUBNET}.{n}"


def http_port(n: int) -> int:
    return 8080 + n


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self, cap: float | None = None) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            raise AssertionError("netns test ran out of its time budget")
        return min(left, cap) if cap is not None else left


def _ip(*args: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=timeout,
                          check=False)


def _ip_ok(*args: str) -> None:
    result = _ip(*args)
    if result.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)} failed ({result.returncode}): "
                             f"{result.stderr.strip()}")


# ---------------------------------------------------------------------------
# the LAN


@dataclass
class Lan:
    """Namespaces ns{1,2,3} on one bridge; `names[n]` is host n's namespace."""

    tag: str
    names: dict[int, str] = field(default_factory=dict)
    bridge_ns: str = ""
    created: list[str] = field(default_factory=list)

    def build(self, *, default_route: bool) -> None:
        self.bridge_ns = self._add(f"{self.tag}-br")
        _ip_ok("-n", self.bridge_ns, "link", "set", "lo", "up")
        _ip_ok("-n", self.bridge_ns, "link", "add", "br0", "type", "bridge")
        _ip_ok("-n", self.bridge_ns, "link", "set", "br0", "up")
        for n in HOSTS:
            ns = self.names[n] = self._add(f"{self.tag}-h{n}")
            _ip_ok("-n", ns, "link", "set", "lo", "up")
            # The veth pair is born with one end in each namespace: no name in
            # the root namespace, nothing to collide with a parallel run.
            _ip_ok("-n", self.bridge_ns, "link", "add", f"port{n}", "type", "veth",
                   "peer", "name", "eth0", "netns", ns)
            _ip_ok("-n", self.bridge_ns, "link", "set", f"port{n}", "master", "br0")
            _ip_ok("-n", self.bridge_ns, "link", "set", f"port{n}", "up")
            _ip_ok("-n", ns, "addr", "add", f"{host_ip(n)}/24", "dev", "eth0")
            _ip_ok("-n", ns, "link", "set", "eth0", "up")
            if default_route:
                # As on an ordinary LAN host. There is no gateway and the bridge
                # has no uplink, so nothing can leave the LAN this way.
                _ip_ok("-n", ns, "route", "add", "default", "dev", "eth0")

    def _add(self, name: str) -> str:
        result = _ip("netns", "add", name)
        if result.returncode != 0:
            if not self.created:
                pytest.skip(f"network namespaces not permitted here: `ip netns add` failed: "
                            f"{result.stderr.strip()}")
            raise AssertionError(f"ip netns add {name} failed: {result.stderr.strip()}")
        self.created.append(name)
        return name

    def exec_argv(self, n: int, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.names[n], *argv]

    def teardown(self) -> None:
        for ns in reversed(self.created):
            # Only processes inside this test's own namespaces, by pid.
            pids = _ip("netns", "pids", ns).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            _ip("netns", "del", ns)  # takes its veth ends (and so their peers) with it
        self.created.clear()


def _require_root() -> None:
    if sys.platform != "linux":
        pytest.skip("network namespaces are Linux-only")
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (`ip netns add`)")
    if shutil.which("ip") is None:
        pytest.skip("network namespaces need iproute2's `ip`, which is not installed")


@pytest.fixture
def make_lan() -> Iterator[Callable[..., Lan]]:
    _require_root()
    lans: list[Lan] = []

    def make(*, default_route: bool) -> Lan:
        lan = Lan(tag=f"lm{os.getpid()}x{len(lans)}")
        lans.append(lan)
        lan.build(default_route=default_route)
        return lan

    yield make
    for lan in lans:
        lan.teardown()


# ---------------------------------------------------------------------------
# nodes


_SETTINGS_ENV = {name.upper() for name in Settings.model_fields}


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in _SETTINGS_ENV}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class NsNode:
    n: int
    state_dir: Path
    proc: subprocess.Popen[bytes]
    info: dict[str, object] = field(default_factory=dict)

    @property
    def ready_file(self) -> Path:
        return self.state_dir / "ready.json"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "node.log"

    @property
    def node_id(self) -> str:
        return str(self.info["node_id"])

    @property
    def url(self) -> str:
        return str(self.info["url"])

    def tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return ""

    def wait_ready(self, deadline: Deadline, cap: float = 20.0) -> NsNode:
        until = time.monotonic() + deadline.left(cap)
        while not self.ready_file.exists():
            if self.proc.poll() is not None:
                raise AssertionError(f"node {self.n} exited with {self.proc.returncode}:\n"
                                     f"{self.tail()}")
            if time.monotonic() > until:
                raise AssertionError(f"node {self.n} not ready in time:\n{self.tail()}")
            time.sleep(0.05)
        self.info = json.loads(self.ready_file.read_text())
        return self

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def reap(self) -> None:
        """Wait for the SIGTERM shutdown; SIGKILL if it takes over 3 s."""
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def start_ns_node(make_lan: Callable[..., Lan],
                  tmp_path: Path) -> Iterator[Callable[..., NsNode]]:
    """Start `python -m mesh` inside a namespace; every one is stopped at teardown,
    before the LAN fixture (set up first, so torn down last) deletes the namespaces."""
    started: list[NsNode] = []
    models = tmp_path / "models"
    models.mkdir()

    def start(lan: Lan, n: int, *, bootstrap: str | None = None,
              extra: Sequence[str] = ()) -> NsNode:
        model = write_tiny_gguf(models / f"{HOSTS[n]}.gguf", name=HOSTS[n], n_ctx=512)
        state_dir = tmp_path / f"node{n}"
        state_dir.mkdir()
        argv = [sys.executable, "-m", "mesh", "--host", "0.0.0.0",
                "--port", str(http_port(n)), "--dht-port", str(DHT_PORT),
                "--model-path", str(model), "--n-ctx", "512",
                "--state-dir", str(state_dir), "--ready-file", str(state_dir / "ready.json"),
                "--heartbeat-interval", "2"]
        if bootstrap:
            argv += ["--bootstrap-nodes", bootstrap]
        argv += list(extra)
        with (state_dir / "node.log").open("ab") as log:
            # `ip netns exec` execs the command, so proc.pid is the node itself.
            proc = subprocess.Popen(lan.exec_argv(n, *argv), cwd=state_dir, env=_clean_env(),
                                    stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
        node = NsNode(n=n, state_dir=state_dir, proc=proc)
        started.append(node)
        return node

    yield start
    for node in started:
        node.terminate()
    for node in started:
        node.reap()


# ---------------------------------------------------------------------------
# the client, run inside ns1

CLIENT = r'''
import json, sys, time, urllib.request

import openai

args = json.loads(sys.argv[1])
expected = {m: node_id for m, node_id in args["providers"].items()}
deadline = time.monotonic() + args["converge_s"]


def catalog(url):
    with urllib.request.urlopen(url + "/v1/models/network", timeout=2) as response:
        return json.loads(response.read())


def converged(cat):
    by_model = {m["id"]: m for m in cat["data"]}
    return all(any(p["node_id"] == node_id and p["healthy"]
                   for p in by_model.get(model, {}).get("providers", []))
               for model, node_id in expected.items())


# Wait until every node routes every model to its healthy provider.
catalogs, last_error = {}, None
while True:
    try:
        catalogs = {url: catalog(url) for url in args["nodes"]}
        if all(converged(c) for c in catalogs.values()):
            break
    except Exception as exc:  # a node may not answer yet
        last_error = repr(exc)
    if time.monotonic() > deadline:
        print(json.dumps({"error": "mesh did not converge", "catalogs": catalogs,
                          "last_error": last_error}))
        sys.exit(3)
    time.sleep(0.1)

client = openai.OpenAI(base_url=args["entry"] + "/v1", api_key="unused", max_retries=0,
                       timeout=10)
messages = [{"role": "user", "content": "hello mesh"}]
answers = []
for model in expected:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=messages, max_tokens=8, temperature=0)
    completion = raw.parse()
    answers.append({
        "model": model, "stream": False, "status": raw.status_code,
        "node": raw.headers.get("x-mesh-node"), "route": raw.headers.get("x-mesh-route"),
        "answer_model": completion.model,
        "content": completion.choices[0].message.content,
        "finish_reason": completion.choices[0].finish_reason,
    })
    with client.chat.completions.with_streaming_response.create(
            model=model, messages=messages, max_tokens=8, temperature=0,
            stream=True) as streamed:
        pieces, finish, chunks = [], None, 0
        for chunk in streamed.parse():
            chunks += 1
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
        answers.append({
            "model": model, "stream": True, "status": streamed.status_code,
            "node": streamed.headers.get("x-mesh-node"),
            "route": streamed.headers.get("x-mesh-route"),
            "content": "".join(pieces), "finish_reason": finish, "chunks": chunks,
        })

print(json.dumps({"catalogs": catalogs, "answers": answers,
                  "final_catalog": catalog(args["entry"])}))
'''


def run_client(lan: Lan, tmp_path: Path, deadline: Deadline, args: dict[str, object]) -> dict:
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    timeout = deadline.left()
    args = {**args, "converge_s": max(1.0, timeout - 15.0)}  # leave time for the requests
    try:
        result = subprocess.run(lan.exec_argv(1, sys.executable, str(script), json.dumps(args)),
                                capture_output=True, text=True, timeout=timeout,
                                cwd=tmp_path, env=_clean_env())
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"client in ns1 timed out after {timeout:.0f}s; "
                             f"stderr: {exc.stderr!r}") from None
    assert result.returncode == 0, (
        f"client in ns1 failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}")
    return json.loads(result.stdout)


# ---------------------------------------------------------------------------
# tests


def test_three_namespaces_route_through_advertised_lan_urls(
        make_lan: Callable[..., Lan], start_ns_node: Callable[..., NsNode],
        tmp_path: Path) -> None:
    deadline = Deadline(TEST_BUDGET_S)
    lan = make_lan(default_route=True)

    seed = start_ns_node(lan, 1).wait_ready(deadline)
    bootstrap = f"{host_ip(1)}:{DHT_PORT}"
    joiners = [start_ns_node(lan, n, bootstrap=bootstrap) for n in (2, 3)]
    nodes = {1: seed} | {node.n: node.wait_ready(deadline) for node in joiners}

    # Each node bound 0.0.0.0 and advertises the LAN address of its namespace.
    for n, node in nodes.items():
        assert node.url == f"http://{host_ip(n)}:{http_port(n)}", (n, node.info)
        assert node.info["model"] == HOSTS[n]
        assert node.info["dht_port"] == DHT_PORT
    ids = {n: node.node_id for n, node in nodes.items()}
    assert len(set(ids.values())) == 3, f"node ids collide: {ids}"

    out = run_client(lan, tmp_path, deadline, {
        "entry": seed.url,
        "nodes": [node.url for node in nodes.values()],
        "providers": {HOSTS[n]: ids[n] for n in HOSTS},
    })

    # Every node's catalog names every provider by its LAN URL; never loopback.
    for url, cat in out["catalogs"].items():
        text = json.dumps(cat)
        assert "127.0.0.1" not in text and "0.0.0.0" not in text, (url, cat)
        for m in cat["data"]:
            for p in m["providers"]:
                n = next(k for k, v in ids.items() if v == p["node_id"])
                assert m["id"] == HOSTS[n], (url, m)
                assert p["url"] == f"http://{host_ip(n)}:{http_port(n)}", (url, p)

    # Node 1's /v1/models/network: all three models, one healthy provider each.
    final = out["final_catalog"]
    assert final["node_id"] == ids[1]
    assert final["nodes"] == 3 and final["healthy_nodes"] == 3, final
    assert sorted(m["id"] for m in final["data"]) == sorted(HOSTS.values()), final
    for m in final["data"]:
        n = next(k for k, v in HOSTS.items() if v == m["id"])
        assert [(p["node_id"], p["url"], p["healthy"], p["local"]) for p in m["providers"]] == [
            (ids[n], f"http://{host_ip(n)}:{http_port(n)}", True, n == 1)], m

    # Every answer came from the node in the namespace that serves the model:
    # node 1 itself for ns-one, its peers over the LAN for the others.
    assert len(out["answers"]) == 6
    for answer in out["answers"]:
        n = next(k for k, v in HOSTS.items() if v == answer["model"])
        assert answer["status"] == 200, answer
        assert answer["node"] == ids[n], answer
        if n == 1:
            assert answer["route"] == "local", answer
        else:
            assert answer["route"] == f"peer; attempts=1; via={ids[1]}", answer
        assert answer["content"], answer
        assert answer["finish_reason"] == "length", answer  # tiny models never stop early
        if not answer["stream"]:
            assert answer["answer_model"] == answer["model"], answer
        else:
            assert answer["chunks"] >= 2, answer

    for node in nodes.values():
        assert node.proc.poll() is None, f"node {node.n} died:\n{node.tail()}"


def test_seed_on_lan_without_default_route_advertises_its_lan_address(
        make_lan: Callable[..., Lan], start_ns_node: Callable[..., NsNode]) -> None:
    deadline = Deadline(25.0)
    lan = make_lan(default_route=False)  # an isolated LAN: only the /24 route
    seed = start_ns_node(lan, 1).wait_ready(deadline)
    assert seed.url == f"http://{host_ip(1)}:{http_port(1)}", seed.info


def test_lan_beacon_forms_one_swarm_with_no_bootstrap_list(
        make_lan: Callable[..., Lan], start_ns_node: Callable[..., NsNode],
        tmp_path: Path) -> None:
    """Zero-config: three hosts on one isolated LAN, no --bootstrap-nodes anywhere."""
    deadline = Deadline(TEST_BUDGET_S)
    lan = make_lan(default_route=False)
    started = [start_ns_node(lan, n, extra=("--lan-interfaces", "eth0")) for n in (1, 2, 3)]
    nodes = {node.n: node.wait_ready(deadline) for node in started}
    ids = {n: node.node_id for n, node in nodes.items()}
    out = run_client(lan, tmp_path, deadline, {
        "entry": nodes[1].url,
        "nodes": [node.url for node in nodes.values()],
        "providers": {HOSTS[n]: ids[n] for n in HOSTS},
    })
    final = out["final_catalog"]
    assert final["nodes"] == 3 and final["healthy_nodes"] == 3, final
    for answer in out["answers"]:
        n = next(k for k, v in HOSTS.items() if v == answer["model"])
        assert answer["status"] == 200 and answer["node"] == ids[n], answer


def test_lan_discovery_off_keeps_hosts_apart(
        make_lan: Callable[..., Lan], start_ns_node: Callable[..., NsNode]) -> None:
    deadline = Deadline(25.0)
    lan = make_lan(default_route=False)
    started = [start_ns_node(lan, n, extra=("--lan-discovery", "false")) for n in (1, 2)]
    nodes = [node.wait_ready(deadline) for node in started]
    time.sleep(6)  # more than a beacon round (5 s): proving an absence needs a wait
    probe = ("import json, sys, urllib.request; "
             "print(json.loads(urllib.request.urlopen(sys.argv[1] + '/v1/models/network', "
             "timeout=3).read())['nodes'])")
    for node in nodes:
        result = subprocess.run(lan.exec_argv(node.n, sys.executable, "-c", probe, node.url),
                                capture_output=True, text=True, timeout=15, env=_clean_env())
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "1", f"node {node.n} found a peer with discovery off"
