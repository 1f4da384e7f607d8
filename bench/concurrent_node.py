"""A stock node whose scripted engine admits any number of concurrent streams.

The proxy benchmark's upstream B. `ScriptedEngine` goes through the same
one-at-a-time admission queue as the llama.cpp engine, so at concurrency 16
or 64 B would serve streams one after another and node A would only ever
relay one of them: that measures B's queue, not A's relaying. This wrapper
swaps the scripted engine's `Admission` for one without a limit before the
node starts and changes nothing else: the CLI, HTTP app, SSE framing and
router are the stock code paths (a batched engine, like llama-server with
`--parallel N`, behaves like this).

    python -m bench.concurrent_node <the usual `python -m mesh` flags> --engine scripted
"""

from __future__ import annotations

import sys

import mesh.local.scripted as scripted


class UnboundedAdmission:
    def __init__(self, *, max_waiting: int) -> None:
        self._max_waiting = max_waiting
        self._active = 0

    @property
    def waiting(self) -> int:
        return 0

    @property
    def busy(self) -> bool:
        return self._active > 0

    @property
    def capacity(self) -> int:
        return 1 + self._max_waiting

    async def acquire(self) -> None:
        self._active += 1

    def release(self) -> None:
        self._active -= 1


scripted.Admission = UnboundedAdmission  # type: ignore[misc,assignment]

if __name__ == "__main__":
    from mesh.cli import main

    sys.exit(main())
