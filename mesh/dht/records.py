"""What a node says about itself in the DHT: `NodeRecord`, its wire form, its keys.

The router and the web UI read these models by their Python field names
(`model_dump_json()` keeps them long); the DHT wire form is ours, so it is
squeezed: short aliases, no whitespace, defaults left out, floats rounded. A
one-model record with a 64-character node id encodes to 250-280 B, a third
less than `model_dump_json()` (tests/dht/test_records.py): a STORE stays far
below one Ethernet MTU and ~22 records share one find reply page.

Validation happens once, here, at the boundary: `decode_record` returns a
`NodeRecord` or None (logged at DEBUG) and never raises on peer input. A URL
must be http(s) with a literal IP host and an explicit port, because nodes
dial it directly and a host name would move trust to whoever runs DNS.

Keys: `node:<id>` (one writer), `model:<id>` (one entry per provider), and
`all_nodes:<0..15>`. `all_nodes` is sharded by a hash of the node id so no
single key grows with the swarm: at 1,000 nodes a shard holds ~63 records,
read in parallel with the other fifteen (see discovery.Discovery.all_nodes).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

log = logging.getLogger(__name__)

ALL_NODES_SHARDS = 16
# An encoded record must fit one STORE and one find reply page with room to
# spare (rpcudp refuses requests over 8192 B; see storage.REPLY_LIMIT).
RECORD_MAX_BYTES = 4096
NODE_ID_MAX_CHARS = 128

_WIRE = ConfigDict(frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True)


class RecordTooLarge(ValueError):
    """Our own record encodes to more than RECORD_MAX_BYTES (too many models)."""


class ModelInfo(BaseModel):
    model_config = _WIRE

    id: str = Field(alias="i", min_length=1, max_length=256, description="model id as served by /v1/models")
    n_ctx: int = Field(alias="c", ge=0, description="context window in tokens")
    quantization: str | None = Field(default=None, alias="q", max_length=64, description="e.g. Q4_K_M")
    architecture: str | None = Field(default=None, alias="a", max_length=64, description="GGUF general.architecture")


class NodeLoad(BaseModel):
    model_config = _WIRE

    queue_depth: int = Field(default=0, alias="q", ge=0, description="requests waiting for a slot")
    active_requests: int = Field(default=0, alias="a", ge=0, description="requests generating now")
    capacity: int = Field(default=1, alias="c", ge=0, description="max concurrent+queued requests the node accepts")
    tokens_per_second: float = Field(default=0.0, alias="t", ge=0, description="recent generation tok/s")
    prompt_tokens_per_second: float = Field(default=0.0, alias="p", ge=0, description="recent prompt tok/s")


class NodeRecord(BaseModel):
    model_config = _WIRE

    node_id: str = Field(alias="n", min_length=1, max_length=NODE_ID_MAX_CHARS)
    url: str = Field(alias="u", max_length=300, description="advertised HTTP base URL, e.g. http://10.0.0.5:8000")
    dht_host: str = Field(alias="h", description="literal IP of the node's DHT socket")
    dht_port: int = Field(alias="d", ge=1, le=65535)
    models: tuple[ModelInfo, ...] = Field(alias="m", max_length=256)
    load: NodeLoad = Field(alias="l")
    uptime_s: float = Field(alias="s", ge=0)
    version: str = Field(alias="v", max_length=64)
    expires_at: float = Field(alias="e", description="unix time this entry stops being valid (reader's clock)")

    @field_validator("node_id")
    @classmethod
    def _visible_ascii(cls, value: str) -> str:
        # The id becomes part of DHT keys and log lines: no spaces or controls.
        if not all("\x21" <= ch <= "\x7e" for ch in value):
            raise ValueError("node_id must be visible ASCII")
        return value

    @field_validator("url")
    @classmethod
    def _literal_ip_url(cls, value: str) -> str:
        check_url(value)
        return value

    @field_validator("dht_host")
    @classmethod
    def _literal_ip(cls, value: str) -> str:
        ipaddress.ip_address(value)
        return value

    def serves(self, model_id: str) -> bool:
        return any(model.id == model_id for model in self.models)


def check_url(url: str) -> None:
    """Raise ValueError unless url is http(s)://<literal IP>:<port>[/path]."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ValueError("url scheme must be http or https")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ValueError("url must not carry credentials, query or fragment")
    if parts.hostname is None:
        raise ValueError("url has no host")
    ipaddress.ip_address(parts.hostname)  # a host name raises ValueError
    if parts.port is None:  # .port itself raises ValueError when out of range
        raise ValueError("url must name its port")


def encode_record(record: NodeRecord) -> bytes:
    """Compact JSON; raises RecordTooLarge past RECORD_MAX_BYTES."""
    body = record.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    body["l"] = {key: _round(value) for key, value in body["l"].items()}
    body["s"] = round(body["s"], 1)
    body["e"] = round(body["e"], 1)
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    if len(data) > RECORD_MAX_BYTES:
        raise RecordTooLarge(f"node record is {len(data)} B, limit {RECORD_MAX_BYTES} B")
    return data


def decode_record(data: bytes | str) -> NodeRecord | None:
    """The record, or None when data is not a valid record (peer input: never raises)."""
    if len(data) > RECORD_MAX_BYTES:
        log.debug("dropping record: %d B over limit", len(data))
        return None
    try:
        return NodeRecord.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        log.debug("dropping invalid record (%d errors): %s: %s", exc.error_count(), first["loc"], first["msg"])
        return None


def _round(value: float | int) -> float | int:
    return round(value, 2) if isinstance(value, float) else value


def model_key(model_id: str) -> str:
    return f"model:{model_id}"


def node_key(node_id: str) -> str:
    return f"node:{node_id}"


def all_nodes_shard(node_id: str) -> int:
    return int.from_bytes(hashlib.sha1(node_id.encode()).digest()[:4], "big") % ALL_NODES_SHARDS


def all_nodes_key(shard: int) -> str:
    return f"all_nodes:{shard}"


def all_nodes_keys() -> tuple[str, ...]:
    return tuple(all_nodes_key(shard) for shard in range(ALL_NODES_SHARDS))


def keys_for(record: NodeRecord) -> tuple[str, ...]:
    """Every key a node publishes its record under."""
    models = dict.fromkeys(model_key(model.id) for model in record.models)
    return (node_key(record.node_id), all_nodes_key(all_nodes_shard(record.node_id)), *models)
