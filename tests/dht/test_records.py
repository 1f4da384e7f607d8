"""NodeRecord wire form: roundtrip, validation at the boundary, size, keys."""

from __future__ import annotations

import json

import pytest

from mesh.dht.records import (
    ALL_NODES_SHARDS,
    RECORD_MAX_BYTES,
    ModelInfo,
    NodeRecord,
    RecordTooLarge,
    all_nodes_shard,
    decode_record,
    encode_record,
    keys_for,
)
from tests.dht.support import make_record

TYPICAL = make_record("f" * 64, models=("gemma-3-270m-it-Q4_K_M",))


def wire(record: NodeRecord, **changes: object) -> bytes:
    body = json.loads(encode_record(record))
    for key, value in changes.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return json.dumps(body).encode()


def test_roundtrip_is_exact_for_typical_values() -> None:
    assert decode_record(encode_record(TYPICAL)) == TYPICAL


def test_encoding_is_compact() -> None:
    data = encode_record(TYPICAL)
    assert b" " not in data and b"\n" not in data
    # Measured: 64-char node id, one model with quantization/architecture.
    assert len(data) < 300, len(data)
    assert len(data) < len(TYPICAL.model_dump_json()) * 0.75


def test_python_names_stay_long_outside_the_wire() -> None:
    assert '"node_id"' in TYPICAL.model_dump_json()


def test_full_field_names_are_accepted_too() -> None:
    assert decode_record(TYPICAL.model_dump_json()) == TYPICAL


@pytest.mark.parametrize(
    ("case", "data"),
    [
        ("hostname url", wire(TYPICAL, u="http://example.com:8000")),
        ("localhost url", wire(TYPICAL, u="http://localhost:8000")),
        ("no port", wire(TYPICAL, u="http://10.0.0.5")),
        ("port out of range", wire(TYPICAL, u="http://10.0.0.5:70000")),
        ("ftp scheme", wire(TYPICAL, u="ftp://10.0.0.5:21")),
        ("credentials", wire(TYPICAL, u="http://user:pw@10.0.0.5:8000")),
        ("query", wire(TYPICAL, u="http://10.0.0.5:8000/?a=b")),
        ("not a url", wire(TYPICAL, u="10.0.0.5:8000")),
        ("dht host name", wire(TYPICAL, h="node.local")),
        ("empty node id", wire(TYPICAL, n="")),
        ("long node id", wire(TYPICAL, n="x" * 129)),
        ("node id with space", wire(TYPICAL, n="a b")),
        ("missing url", wire(TYPICAL, u=None)),
        ("missing models", wire(TYPICAL, m=None)),
        ("missing load", wire(TYPICAL, l=None)),
        ("negative queue", wire(TYPICAL, l={"q": -1})),
        ("model without id", wire(TYPICAL, m=[{"c": 10}])),
        ("not json", b"{nope"),
        ("json list", b"[1,2]"),
        ("empty", b""),
        ("oversized", b"{" + b" " * RECORD_MAX_BYTES + b"}"),
    ],
)
def test_invalid_records_are_dropped(case: str, data: bytes) -> None:
    assert decode_record(data) is None, case


@pytest.mark.parametrize(
    "url",
    ["http://10.0.0.5:8000", "https://10.0.0.5:443", "http://[fe80::1]:8000", "http://[::1]:8000/prefix"],
)
def test_literal_ip_urls_are_accepted(url: str) -> None:
    record = decode_record(wire(TYPICAL, u=url))
    assert record is not None and record.url == url


def test_unknown_fields_are_ignored_at_every_level() -> None:
    body = json.loads(encode_record(TYPICAL))
    body["future"] = {"x": 1}
    body["l"]["gpu"] = "h100"
    body["m"][0]["rope"] = 2.0
    assert decode_record(json.dumps(body)) == TYPICAL


def test_defaults_fill_in_left_out_fields() -> None:
    record = decode_record(wire(TYPICAL, l={}))
    assert record is not None
    assert (record.load.capacity, record.load.queue_depth, record.load.tokens_per_second) == (1, 0, 0.0)


def test_oversized_record_is_refused_at_encode() -> None:
    models = tuple(ModelInfo(id=f"model-{i:03d}-" + "x" * 60, n_ctx=8192) for i in range(100))
    with pytest.raises(RecordTooLarge):
        encode_record(TYPICAL.model_copy(update={"models": models}))


def test_keys_cover_node_shard_and_each_model_once() -> None:
    record = make_record("abc", models=("a", "b", "a"))
    assert keys_for(record) == ("node:abc", f"all_nodes:{all_nodes_shard('abc')}", "model:a", "model:b")


def test_shards_spread_node_ids() -> None:
    counts = [0] * ALL_NODES_SHARDS
    for i in range(1600):
        counts[all_nodes_shard(f"node-{i}")] += 1
    assert min(counts) > 60 and max(counts) < 140
