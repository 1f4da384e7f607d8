"""LlamaMesh's benchmark suite: the node measured against named references, same run.

    python -m bench            the whole suite (about 25-40 minutes on 2 cores)
    python -m bench --quick    a quick subset (about 3 minutes)

Each measurement is a module with one `run(config) -> dict` entry point:

    bench/proxy.py       client -> A -> B versus client -> B, nginx and a bare
                         aiohttp pass-through in the same rounds (issue #4, 1)
    bench/engine.py      tokens/s through a node versus llama-cpp-python
                         in-process, llama-bench and llama-server (2)
    bench/discovery.py   join / kill -9 visibility in swarms of 3, 10, 30 (3)
    bench/router_cost.py routing time with 1, 100, 1,000 known peers (4)

Everything runs on 127.0.0.1 with OS-chosen ports, every load loop is bounded
in count and time, and every result carries the machine's core count and load
(bench/machine.py). Raw runs go to bench/out/ (git-ignored); the summary goes
to bench/results.json, the plots to bench/*.png, the table to bench/RESULTS.md.
"""
