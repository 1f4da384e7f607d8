"""Bootstrap resolution and the advertised address."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from mesh.dht.address import (
    BootstrapResolveError,
    advertise_host,
    connected_networks,
    http_url,
    resolve_bootstrap,
)


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([], []),
        ([("127.0.0.1", 8001)], [("127.0.0.1", 8001)]),
        ([("localhost", 8001), ("10.1.2.3", 9)], [("127.0.0.1", 8001), ("10.1.2.3", 9)]),
        ([("::1", 8001)], [("::1", 8001)]),
    ],
)
async def test_resolve_bootstrap(pairs: list[tuple[str, int]], expected: list[tuple[str, int]]) -> None:
    assert await resolve_bootstrap(pairs) == expected


@pytest.mark.parametrize(
    ("pairs", "fragment"),
    [
        ([("no-such-host.invalid", 8001)], "no-such-host.invalid"),
        ([("127.0.0.1", 0)], "port out of range"),
        ([("127.0.0.1", 70000)], "port out of range"),
    ],
)
async def test_resolve_bootstrap_fails_with_one_clear_line(pairs: list[tuple[str, int]], fragment: str) -> None:
    with pytest.raises(BootstrapResolveError) as info:
        await resolve_bootstrap(pairs)
    assert isinstance(info.value, ValueError)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_explicit_address_wins() -> None:
    assert advertise_host("10.9.8.7", [("127.0.0.1", 1)]) == "10.9.8.7"


@pytest.mark.parametrize("bad", ["0.0.0.0", "::", "node.example"])
def test_explicit_address_must_be_a_usable_literal(bad: str) -> None:
    with pytest.raises(ValueError):
        advertise_host(bad, [])


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.0.0.5"])
def test_loopback_bootstrap_advertises_loopback(peer: str) -> None:
    assert advertise_host(None, [(peer, 8001)]) == "127.0.0.1"


def test_routed_bootstrap_advertises_a_real_local_address() -> None:
    host = advertise_host(None, [("192.0.2.10", 8001)])
    assert not ipaddress.ip_address(host).is_unspecified


def test_no_bootstrap_uses_default_route_or_loopback() -> None:
    host = advertise_host(None, [])
    assert not ipaddress.ip_address(host).is_unspecified


@pytest.mark.parametrize(
    ("host", "url"), [("10.0.0.5", "http://10.0.0.5:8000"), ("fe80::1", "http://[fe80::1]:8000")]
)
def test_http_url_brackets_ipv6(host: str, url: str) -> None:
    assert http_url(host, 8000) == url


ROUTES = """Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
lo\t0000007F\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0
wlan0\t0000A8C0\t00000000\t0001\t0\t0\t600\t00FFFFFF\t0\t0\t0
eth0\t004DD50A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
eth0\t0000FEA9\t00000000\t0001\t0\t0\t1000\t0000FFFF\t0\t0\t0
bad\tzzzz\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
"""


@pytest.mark.skipif(struct.pack("=I", 1) != struct.pack("<I", 1), reason="sample is little-endian")
def test_connected_networks_skip_default_loopback_link_local_and_sort_by_metric() -> None:
    assert [str(n) for n in connected_networks(ROUTES)] == ["10.213.77.0/24", "192.168.0.0/24"]
