"""llama-cpp-python called in-process: the engine-efficiency reference without HTTP.

Runs in its own process (started by bench/engine.py) so its threads and memory
stay out of the orchestrator. Prints one JSON object:

    python -m bench.llama_inproc --model GGUF --threads 2 --tokens 128 --streams 2 --aggregate 4
"""

from __future__ import annotations

import argparse
import json
import time


def generate(llama, prompt: str, tokens: int, *, stream: bool) -> dict:
    started = time.perf_counter()
    times: list[float] = []
    # Greedy, as the node is asked; the prompt is one the model continues past
    # `tokens` (the node's API has no ignore_eos), and "tokens" is reported.
    kwargs = dict(max_tokens=tokens, temperature=0.0)
    if stream:
        for chunk in llama.create_completion(prompt, stream=True, **kwargs):
            if chunk["choices"][0]["text"]:
                times.append(time.perf_counter())
        n = len(times)
    else:
        out = llama.create_completion(prompt, **kwargs)
        times.append(time.perf_counter())
        n = out["usage"]["completion_tokens"]
    ended = time.perf_counter()
    rate = (n - 1) / (times[-1] - times[0]) if stream and n > 1 and times[-1] > times[0] else None
    return {"tokens": n, "wall_s": ended - started, "ttft_s": times[0] - started if stream else None,
            "gen_tokens_per_s": rate, "tokens_per_s_wall": n / (ended - started)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--streams", type=int, default=2)
    parser.add_argument("--aggregate", type=int, default=4)
    parser.add_argument("--prompt", default="Once upon a time")
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args()
    import llama_cpp

    llama = llama_cpp.Llama(model_path=args.model, n_threads=args.threads, n_ctx=args.n_ctx,
                            verbose=False)
    generate(llama, args.prompt, 8, stream=True)  # warm-up
    singles = [generate(llama, args.prompt, args.tokens, stream=True) for _ in range(args.streams)]
    whole = generate(llama, args.prompt, args.tokens, stream=False)
    aggregate = None
    if args.aggregate:
        # One Llama decodes one sequence at a time: N requests run one after another.
        started = time.perf_counter()
        runs = [generate(llama, args.prompt, args.tokens, stream=True) for _ in range(args.aggregate)]
        wall = time.perf_counter() - started
        aggregate = {"streams": args.aggregate, "tokens": sum(r["tokens"] for r in runs),
                     "wall_s": wall, "tokens_per_s": sum(r["tokens"] for r in runs) / wall}
    print(json.dumps({"single": singles, "unstreamed": whole, "aggregate": aggregate}))


if __name__ == "__main__":
    main()
