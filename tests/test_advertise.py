"""Which address a node puts in its DHT record (mesh.node._advertised_ip)."""

from __future__ import annotations

import ipaddress

from mesh.dht.address import advertise_host
from mesh.node import _advertised_ip
from mesh.settings import Settings


async def test_bound_address_is_advertised() -> None:
    assert await _advertised_ip(Settings(host="127.0.0.1"), []) == "127.0.0.1"


async def test_explicit_advertise_host_wins() -> None:
    settings = Settings(host="0.0.0.0", advertise_host="10.9.8.7")
    assert await _advertised_ip(settings, [("127.0.0.1", 8001)]) == "10.9.8.7"


async def test_host_names_are_resolved_to_an_ip() -> None:
    settings = Settings(host="0.0.0.0", advertise_host="localhost")
    assert ipaddress.ip_address(await _advertised_ip(settings, [])).is_loopback


async def test_wildcard_node_joined_through_loopback_advertises_its_lan_address() -> None:
    """As the README starts a swarm: the seed (no bootstrap) and its joiners
    (bootstrap 127.0.0.1:8001) must advertise the same kind of address."""
    joiner = await _advertised_ip(Settings(host="0.0.0.0"), [("127.0.0.1", 8001)])
    seed = await _advertised_ip(Settings(host="0.0.0.0"), [])
    assert joiner == seed == advertise_host(None, [])
    assert joiner != "0.0.0.0"
