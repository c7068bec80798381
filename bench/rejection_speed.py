"""Rejection-sampling throughput: K candidates per prompt batched vs the one-prompt-one-sample loop.

Both arms produce the same number of candidates (prompts x K) from the built-in tiny model with the same
sampling settings and score every candidate with the same rule rewards; the batched arm is exactly what
`lyrictool rejection-sample` runs (several prompts per generate() call, K per prompt through
num_return_sequences, KV cache), the loop arm calls generate() once per candidate.

    .venv/bin/python bench/rejection_speed.py                  # 8 prompts x K=8, 64 new tokens
    .venv/bin/python bench/rejection_speed.py --prompts 16 --k 8 --json /tmp/rs.json

Figures are in docs/benchmarks.md.  Candidates/s counts generation + scoring; new tokens are reported so the
two arms can be seen to do the same work (the random-init model seldom stops early).  Wall and CPU time are both
reported: on a shared machine CPU time (with --threads 1) is the steadier figure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8, help="prompts per generate() call in the batched arm")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()

    import torch

    from lyrictool.generation import generate_lyrics
    from lyrictool.modeling import load_model
    from lyrictool.recipes import ModelSpec
    from lyrictool.rewards import Rewards, default_rule_specs

    if args.threads:
        torch.set_num_threads(args.threads)
    songs = [json.loads(x) for x in (REPO / "lyrictool/data/demo/songs.jsonl").read_text("utf-8").splitlines()]
    step = max(1, len(songs) // args.prompts)
    controls = [songs[i * step]["controls"] for i in range(args.prompts)]
    lm = load_model(ModelSpec(name="builtin:tiny-zh", dtype="fp32"), for_training=False, announce=False)
    rewards = Rewards(default_rule_specs())
    gen = {"max_new_tokens": args.max_new_tokens, "temperature": 1.0, "top_p": 0.95}

    def batched() -> tuple[int, int]:
        outs = generate_lyrics(lm.model, lm.tokenizer, controls, n=args.k, batch_size=args.batch_size, seed=0, **gen)
        flat = [(c, s) for c, samples in zip(controls, outs) for s in samples]
        rewards.score([c for c, _ in flat], [s.text for _, s in flat])
        return len(flat), sum(s.new_tokens for _, s in flat)

    def loop() -> tuple[int, int]:
        n = tokens = 0
        for i, c in enumerate(controls):
            for j in range(args.k):
                (s,), = generate_lyrics(lm.model, lm.tokenizer, [c], n=1, batch_size=1, seed=i * 1000 + j, **gen)
                rewards.score([c], [s.text])
                n += 1
                tokens += s.new_tokens
        return n, tokens

    generate_lyrics(lm.model, lm.tokenizer, controls[:1], n=2, max_new_tokens=8, seed=0)  # warm-up
    result = {"prompts": args.prompts, "k": args.k, "max_new_tokens": args.max_new_tokens,
              "batch_size": args.batch_size, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    for name, fn in (("batched", batched), ("loop", loop)):
        t0, c0 = time.perf_counter(), time.process_time()
        n, tokens = fn()
        dt, cpu = time.perf_counter() - t0, time.process_time() - c0
        result[name] = {"candidates": n, "new_tokens": tokens, "seconds": round(dt, 3), "cpu_seconds": round(cpu, 3),
                        "candidates_per_s": round(n / dt, 2), "candidates_per_cpu_s": round(n / cpu, 2),
                        "tokens_per_s": round(tokens / dt, 1)}
    b, lp = result["batched"], result["loop"]
    result["speedup"] = round(b["candidates_per_s"] / lp["candidates_per_s"], 2)
    result["speedup_cpu"] = round(b["candidates_per_cpu_s"] / lp["candidates_per_cpu_s"], 2)
    print(f"{'arm':<8} {'candidates':>10} {'new tokens':>10} {'wall s':>8} {'cand/s':>8} {'cpu s':>8} {'cand/cpu s':>10}")
    for name in ("batched", "loop"):
        r = result[name]
        print(f"{name:<8} {r['candidates']:>10} {r['new_tokens']:>10} {r['seconds']:>8} {r['candidates_per_s']:>8} "
              f"{r['cpu_seconds']:>8} {r['candidates_per_cpu_s']:>10}")
    print(f"speedup (batched / loop, candidates per second): {result['speedup']}x wall, {result['speedup_cpu']}x CPU "
          f"time ({result['torch_threads']} torch threads)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
