"""Multi-writer DHT values: `Entry` (one writer's value under one key) and `EntryStore`.

The stock library keeps one value per key and lets it live a week. Here a key
holds one entry per writer, and each entry carries a RELATIVE ttl: a node that
receives an entry computes its own expiry (`time.monotonic() + ttl`), and
sends the remaining ttl whenever it passes the entry on, so wall-clock skew
between nodes never matters and a relayed entry never outlives its owner's
last heartbeat.

Merge rule (the same in storage, in replies and in readers): per writer the
highest `seq` wins; on equal seq the longer remaining ttl wins. A writer's seq
is its wall clock in nanoseconds, made strictly increasing, so a restarted
node outranks its own stale replicas without any state on disk. A tombstone
(value None) is an entry like any other: it shadows the writer's older value
wherever it lands and expires the same way.

Replies are paged by writer id (`page`), a cursor every holder agrees on: a
reader that keeps asking "after <last writer>" sees every entry, however many,
which a single size-capped reply (say freshest-first) would not give it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from kademlia.storage import IStorage
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mesh.dht.records import NODE_ID_MAX_CHARS, RECORD_MAX_BYTES

log = logging.getLogger(__name__)

# Longest ttl accepted from a peer: a bound on how long a bogus or buggy
# entry can linger (ours are ~3 heartbeats, 31 s by default).
MAX_TTL = 3600.0
MAX_KEYS = 65536
MAX_WRITERS_PER_KEY = 1024


class Entry(BaseModel):
    """One writer's value under one key. On the wire: [writer, seq, ttl, value]."""

    model_config = ConfigDict(frozen=True, strict=True)

    writer: str = Field(min_length=1, max_length=NODE_ID_MAX_CHARS)
    seq: int = Field(ge=0, lt=2**63)
    ttl: float = Field(gt=0, le=MAX_TTL, description="seconds left to live, relative to receipt")
    value: bytes | None = Field(max_length=RECORD_MAX_BYTES, description="None = tombstone")

    @property
    def tombstone(self) -> bool:
        return self.value is None

    def to_wire(self) -> list[object]:
        return [self.writer, self.seq, float(self.ttl), self.value]

    @classmethod
    def from_wire(cls, obj: object) -> Entry | None:
        """The entry, or None when obj is not a well-formed entry (never raises)."""
        if not isinstance(obj, list | tuple) or len(obj) != 4:
            return None
        writer, seq, ttl, value = obj
        if isinstance(ttl, int) and not isinstance(ttl, bool):
            ttl = float(ttl)
        try:
            return cls(writer=writer, seq=seq, ttl=ttl, value=value)
        except ValidationError:
            return None

    def wire_size(self) -> int:
        """Upper bound of this entry's msgpack size (array + str + int64 + float64 + bin)."""
        value = 1 if self.value is None else len(self.value) + 5
        return 1 + len(self.writer.encode()) + 5 + 9 + 9 + value


def newer(a: Entry, b: Entry) -> bool:
    """True if a should replace b (same writer)."""
    return (a.seq, a.ttl) > (b.seq, b.ttl)


def merge(entries: Iterable[Entry]) -> dict[str, Entry]:
    """Newest entry per writer, tombstones included."""
    best: dict[str, Entry] = {}
    for entry in entries:
        held = best.get(entry.writer)
        if held is None or newer(entry, held):
            best[entry.writer] = entry
    return best


@dataclass(slots=True)
class _Held:
    entry: Entry
    expires: float  # on this node's monotonic clock


class EntryStore(IStorage):
    """Per key (a 20-byte digest): writer -> newest entry, each with its own expiry."""

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, accept: Callable[[Entry], bool] = lambda _: True
    ) -> None:
        self._clock = clock
        # Entries that fail `accept` (say, a value that is no valid record)
        # are refused, so they cannot shadow the writer's real entry.
        self._accept = accept
        self._data: dict[bytes, dict[str, _Held]] = {}

    def put(self, key: bytes, entry: Entry) -> bool:
        """Keep entry if it is acceptable and the writer's newest; True when something changed."""
        if not self._accept(entry):
            return False
        now = self._clock()
        writers = self._data.get(key)
        if writers is None:
            if len(self._data) >= MAX_KEYS:
                self.cull()
                if len(self._data) >= MAX_KEYS:
                    log.debug("store full (%d keys): dropping entry", MAX_KEYS)
                    return False
            writers = self._data[key] = {}
        held = writers.get(entry.writer)
        if held is not None and held.expires > now:
            current = held.entry.model_copy(update={"ttl": held.expires - now})
            if not newer(entry, current):
                return False
        elif held is None and len(writers) >= MAX_WRITERS_PER_KEY and not self._evict(writers, now, entry):
            return False
        writers[entry.writer] = _Held(entry, now + entry.ttl)
        return True

    def _evict(self, writers: dict[str, _Held], now: float, entry: Entry) -> bool:
        """Make room for entry by dropping the entry that dies first, if it dies before entry."""
        for writer in [w for w, held in writers.items() if held.expires <= now]:
            del writers[writer]
        if len(writers) < MAX_WRITERS_PER_KEY:
            return True
        victim = min(writers, key=lambda w: writers[w].expires)
        if writers[victim].expires >= now + entry.ttl:
            return False
        del writers[victim]
        return True

    def live(self, key: bytes) -> list[Entry]:
        """Unexpired entries of key, tombstones included, ttl set to what is left."""
        return [entry.model_copy(update={"ttl": left}) for entry, left in self._alive(key)]

    def page(self, key: bytes, *, after: str, budget: int) -> tuple[list[Entry], bool]:
        """Entries with writer > after, in writer order, whose wire sizes sum to <= budget.

        Returns (entries, more): more is True when entries were left out.
        """
        ordered = sorted((pair for pair in self._alive(key) if pair[0].writer > after), key=lambda p: p[0].writer)
        out: list[Entry] = []
        used = 0
        for entry, left in ordered:
            used += entry.wire_size()
            if used > budget:
                return out, True
            out.append(entry.model_copy(update={"ttl": left}))
        return out, False

    def _alive(self, key: bytes) -> list[tuple[Entry, float]]:
        """(entry, seconds left) of key's unexpired entries; drops the expired ones."""
        now = self._clock()
        writers = self._data.get(key)
        if not writers:
            return []
        out = []
        for writer, held in list(writers.items()):
            if held.expires <= now:
                del writers[writer]
            else:
                out.append((held.entry, held.expires - now))
        if not writers:
            del self._data[key]
        return out

    def keys(self) -> list[bytes]:
        return list(self._data)

    def cull(self) -> None:
        for key in list(self._data):
            self._alive(key)

    # IStorage, for the parts of the library that still look at storage.
    def __setitem__(self, key: bytes, value: Entry) -> None:
        self.put(key, value)

    def __getitem__(self, key: bytes) -> list[Entry]:
        entries = self.live(key)
        if not entries:
            raise KeyError(key)
        return entries

    def get(self, key: bytes, default: list[Entry] | None = None) -> list[Entry] | None:
        return self.live(key) or default

    def iter_older_than(self, seconds_old: float) -> list[tuple[bytes, list[Entry]]]:
        # Owners republish their own entries; nobody re-stores someone else's.
        return []

    def __iter__(self) -> Iterator[tuple[bytes, list[Entry]]]:
        for key in self.keys():
            entries = self.live(key)
            if entries:
                yield key, entries
