"""Addresses: bootstrap host names to IPs, and the IP this node advertises.

Kademlia speaks to IPs only, and a node id in a routing table is only as good
as the address next to it, so both are settled here once:
- `resolve_bootstrap` turns "llama-1:8001"-style pairs into IP pairs, IPv4
  first (the DHT socket binds 0.0.0.0 by default), and fails with one clear
  line (`BootstrapResolveError`, a ValueError) naming the host that did not
  resolve.
- `advertise_host` picks the address peers should dial: the explicit one if
  given; else the local address of the interface that routes to the first
  bootstrap peer (a UDP socket `connect` sends nothing, it only asks the
  kernel for a route); 127.0.0.1 when that peer is loopback; with no
  bootstrap list, the default-route interface, else 127.0.0.1. Never an
  unspecified address such as 0.0.0.0.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from collections.abc import Sequence
from pathlib import Path

# TEST-NET-1 (RFC 5737): never routed on the Internet, so connecting to it
# only selects the default route.
_DEFAULT_ROUTE_PROBE = ("192.0.2.1", 9)
_LOOPBACK = "127.0.0.1"


class BootstrapResolveError(ValueError):
    """A bootstrap host name did not resolve, or a port is out of range."""


async def resolve_bootstrap(pairs: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """(host, port) pairs -> (ip, port) pairs, in order; IP literals pass through."""
    loop = asyncio.get_running_loop()
    out: list[tuple[str, int]] = []
    for host, port in pairs:
        if not 0 < port < 65536:
            raise BootstrapResolveError(f"bootstrap node {host}:{port}: port out of range")
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except (OSError, UnicodeError) as exc:
            raise BootstrapResolveError(f"cannot resolve bootstrap host {host!r}: {exc}") from exc
        ipv4 = [info for info in infos if info[0] == socket.AF_INET]
        chosen = (ipv4 or infos)[0] if infos else None
        if chosen is None:
            raise BootstrapResolveError(f"cannot resolve bootstrap host {host!r}: no address")
        out.append((str(chosen[4][0]), port))
    return out


def advertise_host(explicit: str | None, bootstrap: list[tuple[str, int]]) -> str:
    """The IP peers should use to reach this node (see the module docstring)."""
    if explicit:
        address = ipaddress.ip_address(explicit)  # ValueError: must be a literal IP
        if address.is_unspecified:
            raise ValueError(f"cannot advertise the unspecified address {explicit}")
        return explicit
    if bootstrap:
        host, port = bootstrap[0]
        try:
            if ipaddress.ip_address(host).is_loopback:
                return _LOOPBACK
        except ValueError:
            pass  # a host name: let the route lookup resolve it
        local = _route_source((host, port))
        if local is not None:
            return local
    return _route_source(_DEFAULT_ROUTE_PROBE) or _lan_source() or _LOOPBACK


def _route_source(peer: tuple[str, int]) -> str | None:
    """Local address the kernel would use to send to peer; nothing is sent."""
    family = socket.AF_INET6 if ":" in peer[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(peer)
            local = str(sock.getsockname()[0])
    except OSError:
        return None
    if ipaddress.ip_address(local.split("%")[0]).is_unspecified:
        return None
    return local


def _lan_source() -> str | None:
    """Our address on the first directly connected IPv4 network (Linux only)."""
    try:
        table = Path("/proc/net/route").read_text()
    except OSError:
        return None
    for network in connected_networks(table):
        local = _route_source((str(network.network_address + 1), 9))
        if local is not None and not ipaddress.ip_address(local).is_loopback:
            return local
    return None


def connected_networks(route_table: str) -> list[ipaddress.IPv4Network]:
    """Non-default, non-loopback routes of a /proc/net/route text, lowest metric first."""
    routes = []
    for order, line in enumerate(route_table.splitlines()[1:]):
        fields = line.split()
        if len(fields) < 8 or fields[0] == "lo":
            continue
        try:
            # The kernel prints each network-order u32 as a host-order integer.
            dest, metric, mask = (int(fields[i], 16) for i in (1, 6, 7))
            network = ipaddress.IPv4Network(
                (ipaddress.IPv4Address(struct.pack("=I", dest)), str(ipaddress.IPv4Address(struct.pack("=I", mask))))
            )
        except (ValueError, struct.error):
            continue
        if network.prefixlen == 0 or network.is_loopback or network.is_link_local:
            continue
        routes.append((metric, order, network))
    return [network for _, _, network in sorted(routes, key=lambda r: (r[0], r[1]))]


def http_url(host: str, port: int, *, scheme: str = "http") -> str:
    """Base URL for an advertised host, bracketing IPv6 literals."""
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
