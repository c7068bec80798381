"""SFT training throughput and model-FLOPs utilisation: eager vs SDPA vs FlashAttention-2, with and without packing.

For a lent GPU machine (no downloads there): the model is a randomly initialised copy of a real architecture
(default ``bench/configs/qwen2.5-0.5b.json``, Qwen2.5-0.5B shapes) in bf16, trained with AdamW on synthetic
token sequences of lyrics-SFT-like, varied lengths up to 2k context.  Each configuration trains for a fixed
wall-clock budget after warm-up steps; throughput counts real (non-padding) tokens only.

- without packing: each batch holds ``--batch`` sequences right-padded to the longest one (padding costs compute);
- with packing: sequences are concatenated into rows of ``--seq-len`` tokens with position ids restarting per
  sequence, so attention stays within each sequence (FlashAttention-2 varlen; transformers builds the
  block-diagonal mask from the position ids for SDPA/eager).  TRL's ``packing`` does the same.

MFU = achieved model FLOP/s / the card's dense bf16 peak.  Model FLOPs per step =
6 x (matmul parameters, lm_head included) x tokens + 6 x layers x hidden x sum(seq_len^2) for causal attention
(forward + backward, the causal half only).  The peak is looked up by device name (H100 SXM / H200 989 TFLOP/s,
H100 PCIe 756, A100 312, L40S 362) or given with ``--peak-tflops``.

    python bench/gpu_throughput.py --output runs/bench/gpu.json          # on the GPU machine, < 8 minutes
    python bench/gpu_throughput.py --toy                                  # seconds on CPU: checks it runs
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import platform
import random
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10G": 125.0,
                    "L4": 121.0}
TOY_CONFIG = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64,
              "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "vocab_size": 1000, "max_position_embeddings": 512, "tie_word_embeddings": True}


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():  # ordered: 'H100 PCIe' before 'H100'
        if key in device_name:
            return value
    return None


def sequence_lengths(n: int, max_len: int, seed: int) -> list[int]:
    """Lyrics SFT examples: log-normal lengths (median ~ max_len/3), clipped to [max_len/16, max_len]."""
    rng = random.Random(seed)
    lo = max(8, max_len // 16)
    return [int(min(max_len, max(lo, rng.lognormvariate(math.log(max_len / 3), 0.6)))) for _ in range(n)]


def padded_batches(lengths: list[int], batch: int):
    """Batches of `batch` sequences, right-padded to the longest: (lengths in the batch, padded width)."""
    for i in range(0, len(lengths) - batch + 1, batch):
        chunk = lengths[i:i + batch]
        yield chunk, max(chunk)


def packed_rows(lengths: list[int], batch: int, seq_len: int):
    """Rows of `seq_len` tokens filled greedily with whole sequences; yields `batch` rows' sequence lengths."""
    rows, row, used = [], [], 0
    for n in lengths:
        if used + n > seq_len:
            rows.append(row)
            row, used = [], 0
        row.append(n)
        used += n
        if len(rows) == batch:
            yield rows
            rows = []


def matmul_params(model) -> int:
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def run_one(config: dict, attn: str, packing: bool, args, device, dtype) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = AutoConfig.for_model(**{k: v for k, v in config.items() if not k.startswith("_") and k != "architectures"})
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn, dtype=dtype).to(device)
    model.config.use_cache = False
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    n_matmul = matmul_params(model)
    layers, hidden = cfg.num_hidden_layers, cfg.hidden_size
    vocab = cfg.vocab_size
    lengths = sequence_lengths(200_000, args.seq_len, seed=1)

    def batches():
        if packing:
            for rows in packed_rows(lengths, args.batch, args.seq_len):
                width = max(sum(r) for r in rows)
                ids = torch.randint(0, vocab, (len(rows), width), device=device)
                pos = torch.zeros_like(ids)
                labels = torch.full_like(ids, -100)
                for i, r in enumerate(rows):
                    pos[i, :sum(r)] = torch.cat([torch.arange(n, device=device) for n in r])
                    labels[i, :sum(r)] = ids[i, :sum(r)]
                    pos[i, sum(r):] = torch.arange(width - sum(r), device=device)  # the row's unused tail
                yield {"input_ids": ids, "position_ids": pos, "labels": labels}, [n for r in rows for n in r]
        else:
            for chunk, width in padded_batches(lengths, args.batch):
                ids = torch.randint(0, vocab, (len(chunk), width), device=device)
                mask = torch.zeros_like(ids)
                for i, n in enumerate(chunk):
                    mask[i, :n] = 1
                labels = ids.masked_fill(mask == 0, -100)
                yield {"input_ids": ids, "attention_mask": mask, "labels": labels}, chunk

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    it = batches()
    steps = tokens = 0
    flops = 0.0
    t0 = None
    for step in range(args.warmup + args.max_steps):
        if step == args.warmup:
            sync()
            t0 = time.perf_counter()
        inputs, seqs = next(it)
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= args.warmup:
            steps += 1
            real = sum(seqs)
            tokens += real
            flops += 6 * n_matmul * real + 6 * layers * hidden * sum(n * n for n in seqs)
            if time.perf_counter() - t0 > args.seconds:
                break
    sync()
    elapsed = time.perf_counter() - t0
    out = {"attention": attn, "packing": packing, "steps": steps, "tokens": tokens, "seconds": round(elapsed, 3),
           "tokens_per_s": tokens / elapsed, "tflops": flops / elapsed / 1e12, "loss_last": loss.detach().item()}
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    del model, optimizer
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(HERE / "configs" / "qwen2.5-0.5b.json"))
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8, help="sequences (no packing) or packed rows per step")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=35.0, help="timed budget per configuration")
    parser.add_argument("--attn", nargs="*", default=None, help="subset of eager sdpa flash_attention_2")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--toy", action="store_true", help="tiny model, CPU-sized: check that the script runs")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    import torch
    import transformers

    if args.toy:
        config = TOY_CONFIG
        args.seq_len, args.batch, args.warmup, args.max_steps = min(args.seq_len, 128), 2, 1, 3
        args.seconds = min(args.seconds, 5.0)
    else:
        config = json.loads(Path(args.config).read_text(encoding="utf-8"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    has_fa2 = importlib.util.find_spec("flash_attn") is not None and cuda
    attns = args.attn or ["eager", "sdpa"] + (["flash_attention_2"] if has_fa2 else [])
    name = torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine()
    peak = args.peak_tflops or (peak_tflops(name) if cuda else None)
    print(f"device: {name}; dtype {str(dtype).removeprefix('torch.')}; peak bf16 {peak or '?'} TFLOP/s; "
          f"flash_attn {'present' if has_fa2 else 'absent'}; seq_len {args.seq_len}, batch {args.batch}", flush=True)
    results = []
    for attn in attns:
        for packing in (False, True):
            r = run_one(config, attn, packing, args, device, dtype)
            r["mfu"] = r["tflops"] / peak if peak else None
            results.append(r)
            mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
            print(f"{attn:>18} packing={packing!s:5}  {r['tokens_per_s']:>12,.0f} tok/s  {r['tflops']:8.1f} "
                  f"TFLOP/s  MFU {mfu:>6}  ({r['steps']} steps, {r['seconds']:.1f} s)", flush=True)
    base = {p: next(r for r in results if r["attention"] == results[0]["attention"] and r["packing"] == p)
            for p in (False, True)}
    for r in results:
        r["speedup_vs_eager_same_packing"] = r["tokens_per_s"] / base[r["packing"]]["tokens_per_s"]
        r["speedup_vs_eager_no_packing"] = r["tokens_per_s"] / base[False]["tokens_per_s"]
    summary = {
        "device": name, "peak_bf16_tflops": peak, "config": "toy" if args.toy else args.config,
        "seq_len": args.seq_len, "batch": args.batch, "dtype": str(dtype).removeprefix("torch."),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "flash_attn": _version("flash_attn")},
        "results": results,
    }
    print("speed-ups vs eager: " + "; ".join(
        f"{r['attention']}{'+packing' if r['packing'] else ''} {r['speedup_vs_eager_no_packing']:.2f}x"
        for r in results), flush=True)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _version(pkg: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
