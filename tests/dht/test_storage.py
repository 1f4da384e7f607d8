"""EntryStore and Entry: merge by writer, relative expiry, paging budget, wire validation."""

from __future__ import annotations

import pytest

from mesh.dht.storage import MAX_WRITERS_PER_KEY, Entry, EntryStore, merge

KEY = b"k" * 20


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(writer: str = "w", seq: int = 1, ttl: float = 10.0, value: bytes | None = b"v") -> Entry:
    return Entry(writer=writer, seq=seq, ttl=ttl, value=value)


@pytest.mark.parametrize(
    ("stored", "incoming", "kept_seq", "changed"),
    [
        (entry(seq=1), entry(seq=2), 2, True),
        (entry(seq=2), entry(seq=1), 2, False),
        (entry(seq=2, ttl=5), entry(seq=2, ttl=8), 2, True),  # same seq: longer ttl wins
        (entry(seq=2, ttl=8), entry(seq=2, ttl=5), 2, False),
        (entry(seq=2), entry(seq=3, value=None), 3, True),  # tombstone shadows older value
        (entry(seq=3, value=None), entry(seq=2), 3, False),  # ...and is not undone by it
    ],
)
def test_newest_per_writer_wins(stored: Entry, incoming: Entry, kept_seq: int, changed: bool) -> None:
    store = EntryStore(clock=Clock())
    store.put(KEY, stored)
    assert store.put(KEY, incoming) is changed
    [kept] = store.live(KEY)
    assert kept.seq == kept_seq


def test_writers_are_kept_side_by_side() -> None:
    store = EntryStore(clock=Clock())
    for writer in ("a", "b", "c"):
        store.put(KEY, entry(writer))
    assert sorted(e.writer for e in store.live(KEY)) == ["a", "b", "c"]


def test_expiry_is_relative_and_ttl_counts_down() -> None:
    clock = Clock()
    store = EntryStore(clock=clock)
    store.put(KEY, entry("a", ttl=2.0))
    store.put(KEY, entry("b", ttl=5.0))
    clock.now += 1.5
    assert {e.writer: round(e.ttl, 3) for e in store.live(KEY)} == {"a": 0.5, "b": 3.5}
    clock.now += 1.0
    assert [e.writer for e in store.live(KEY)] == ["b"]
    clock.now += 10
    assert store.live(KEY) == [] and store.keys() == []


def test_an_expired_entry_does_not_block_an_older_seq() -> None:
    clock = Clock()
    store = EntryStore(clock=clock)
    store.put(KEY, entry(seq=5, ttl=1))
    clock.now += 2
    assert store.put(KEY, entry(seq=1)) is True


def test_library_republish_sees_nothing_to_republish() -> None:
    store = EntryStore(clock=Clock())
    store.put(KEY, entry())
    assert store.iter_older_than(0) == []
    assert [k for k, _ in store] == [KEY]


def test_pages_follow_writer_order_within_budget() -> None:
    store = EntryStore(clock=Clock())
    for i in range(50):
        store.put(KEY, entry(f"w{i:02d}", value=b"x" * 100))
    size = entry("w00", value=b"x" * 100).wire_size()
    seen: list[str] = []
    after = ""
    while True:
        page, more = store.page(KEY, after=after, budget=10 * size)
        assert len(page) <= 10
        seen += [e.writer for e in page]
        if not more:
            break
        after = page[-1].writer
    assert seen == [f"w{i:02d}" for i in range(50)]


def test_writer_cap_evicts_the_entry_that_dies_first() -> None:
    store = EntryStore(clock=Clock())
    store.put(KEY, entry("short", ttl=1.0))
    for i in range(MAX_WRITERS_PER_KEY - 1):
        store.put(KEY, entry(f"w{i:04d}", ttl=10.0))
    assert store.put(KEY, entry("late", ttl=5.0)) is True
    writers = {e.writer for e in store.live(KEY)}
    assert "late" in writers and "short" not in writers and len(writers) == MAX_WRITERS_PER_KEY
    assert store.put(KEY, entry("later", ttl=2.0)) is False  # would die before everyone held


def test_merge_takes_newest_per_writer() -> None:
    merged = merge([entry("a", 1), entry("b", 4), entry("a", 3), entry("a", 2)])
    assert {w: e.seq for w, e in merged.items()} == {"a": 3, "b": 4}


@pytest.mark.parametrize(
    "wire",
    [
        None,
        "x",
        [],
        ["w", 1, 1.0],
        ["w", 1, 1.0, b"v", "extra"],
        ["", 1, 1.0, b"v"],
        ["w" * 129, 1, 1.0, b"v"],
        ["w", -1, 1.0, b"v"],
        ["w", "1", 1.0, b"v"],
        ["w", 1.5, 1.0, b"v"],
        ["w", True, 1.0, b"v"],
        ["w", 1, 0.0, b"v"],
        ["w", 1, -3.0, b"v"],
        ["w", 1, float("nan"), b"v"],
        ["w", 1, float("inf"), b"v"],
        ["w", 1, 1e9, b"v"],
        ["w", 1, 1.0, "text, not bytes"],
        ["w", 1, 1.0, b"x" * 5000],
        [b"w", 1, 1.0, b"v"],
    ],
)
def test_malformed_wire_entries_are_none(wire: object) -> None:
    assert Entry.from_wire(wire) is None


def test_wire_roundtrip_and_size_bound() -> None:
    import umsgpack

    for e in (entry(), entry(value=None), entry(writer="é" * 40, value=b"x" * 4000), entry(seq=2**62)):
        assert Entry.from_wire(umsgpack.unpackb(umsgpack.packb(e.to_wire()))) == e
        assert len(umsgpack.packb(e.to_wire())) <= e.wire_size()
    assert Entry.from_wire(["w", 1, 3, b"v"]) == entry(ttl=3.0)
