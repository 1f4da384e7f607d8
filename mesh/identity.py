"""Node identity: a stable id derived from the hardware and the HTTP port.

The id is the SHA-256 of the machine's fingerprint (CPU count and
architecture, total memory, MACs of physical interfaces, machine-id,
hostname) plus the node's HTTP port, so two nodes on one machine differ and
a restarted node comes back as itself, which keeps DHT records from
piling up under ever-new ids. It is kept in the state directory; a changed
fingerprint gives a new id; where fingerprinting fails a random id is kept
instead. `--node-id` overrides all of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import secrets
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

_MACHINE_ID_FILES = (Path("/etc/machine-id"), Path("/var/lib/dbus/machine-id"))
_SYS_NET = Path("/sys/class/net")


@dataclass(frozen=True, slots=True)
class Fingerprint:
    cpu_count: int
    architecture: str
    memory_gb: int
    macs: tuple[str, ...]
    machine_id: str | None
    hostname: str
    platform: str

    def digest(self) -> str:
        parts = [f"cpu={self.cpu_count}", f"arch={self.architecture}",
                 f"mem={self.memory_gb}", f"host={self.hostname}",
                 *(f"mac={m}" for m in self.macs)]
        if self.machine_id:
            parts.append(f"machine={self.machine_id}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    def summary(self) -> dict[str, object]:
        """What `/hardware` shows: counts and names, not the raw identifiers."""
        return {
            "cpu_count": self.cpu_count, "architecture": self.architecture,
            "memory_gb": self.memory_gb, "mac_count": len(self.macs),
            "has_system_uuid": self.machine_id is not None,
            "hostname": self.hostname, "platform": self.platform,
        }


@dataclass(frozen=True, slots=True)
class Identity:
    node_id: str
    source: str  # "hardware", "override" or "fallback"
    fingerprint_digest: str | None
    stored_at: Path | None


def read_fingerprint() -> Fingerprint:
    """Raise OSError/ValueError where the machine cannot be fingerprinted."""
    memory = psutil.virtual_memory().total
    return Fingerprint(
        cpu_count=os.cpu_count() or 0,
        architecture=platform.machine(),
        memory_gb=round(memory / 2**30),
        macs=_physical_macs(),
        machine_id=_machine_id(),
        hostname=socket.gethostname(),
        platform=platform.platform(),
    )


def resolve_identity(*, state_dir: Path, port: int, override: str | None) -> Identity:
    if override:
        return Identity(override, "override", None, None)
    path = state_dir / "identity" / f"node-{port}.json"
    stored = _load(path)
    try:
        digest = read_fingerprint().digest()
    except (OSError, ValueError) as exc:
        log.warning("hardware fingerprint unavailable (%s); using a persistent random id", exc)
        if stored and stored.get("source") == "fallback":
            return Identity(str(stored["node_id"]), "fallback", None, path)
        identity = Identity(secrets.token_hex(20), "fallback", None, path)
        _save(path, identity)
        return identity
    node_id = hashlib.sha256(f"{digest}|port={port}".encode()).hexdigest()[:40]
    if stored and stored.get("node_id") == node_id:
        log.info("using stored hardware-based node id %s", node_id)
    elif stored:
        log.warning("hardware fingerprint changed: new node id %s (was %s)",
                    node_id, stored.get("node_id"))
    else:
        log.info("generated hardware-based node id %s", node_id)
    identity = Identity(node_id, "hardware", digest, path)
    if not stored or stored.get("node_id") != node_id:
        _save(path, identity)
    return identity


def validate(identity: Identity) -> dict[str, object]:
    """Does the running id still match this machine's fingerprint?"""
    if identity.source != "hardware":
        return {"node_id": identity.node_id, "source": identity.source, "consistent": True,
                "reason": f"{identity.source} id: not derived from hardware"}
    try:
        current = read_fingerprint().digest()
    except (OSError, ValueError) as exc:
        return {"node_id": identity.node_id, "source": identity.source, "consistent": False,
                "reason": f"fingerprint unavailable: {exc}"}
    same = current == identity.fingerprint_digest
    return {"node_id": identity.node_id, "source": identity.source, "consistent": same,
            "reason": "fingerprint matches" if same else "hardware changed since start"}


def _physical_macs() -> tuple[str, ...]:
    macs = set()
    link_family = getattr(psutil, "AF_LINK", None)
    for name, addresses in psutil.net_if_addrs().items():
        if name == "lo" or (_SYS_NET.exists() and not (_SYS_NET / name / "device").exists()):
            continue  # virtual interfaces (bridges, veth, docker) come and go
        for address in addresses:
            if address.family == link_family and address.address not in ("", "00:00:00:00:00:00"):
                macs.add(address.address.lower())
    return tuple(sorted(macs))


def _machine_id() -> str | None:
    for path in _MACHINE_ID_FILES:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text:
            return text
    return None


def _load(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _save(path: Path, identity: Identity) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        record = asdict(identity) | {"stored_at": str(path)}
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(path)
    except OSError as exc:
        log.warning("could not store the node id in %s: %s", path, exc)
