"""SFT training throughput and model-FLOPs utilisation: eager vs SDPA vs FlashAttention-2, with and without packing.

For a lent GPU machine (no downloads there): the model is a randomly initialised copy of a real architecture
(default ``bench/configs/qwen2.5-0.5b.json``, Qwen2.5-0.5B shapes) in bf16, trained with AdamW on synthetic
token sequences of lyrics-SFT-like, varied lengths up to 2k context.  Each configuration trains for a fixed
wall-clock budget after warm-up steps; throughput counts real (non-padding) tokens only.

Each step trains on the same kind of sequences in one of three layouts (``--layouts``):

- ``none`` (no packing): ``--batch`` sequences right-padded to the longest one, with an attention mask;
- ``flat`` (TRL's padding-free packing, ``DataCollatorForLanguageModeling(padding_free=True)``): the sequences of
  ``--batch`` rows of ``--seq-len`` tokens concatenated into ONE row, ``position_ids`` restarting per sequence and
  ``cu_seq_lens_q/k`` + ``max_length_q/k`` passed.  FlashAttention-2 runs varlen on them; SDPA and eager get a
  block-diagonal causal mask that transformers builds from the restarting ``position_ids`` (no attention mask
  given), so attention never crosses a sequence boundary in either, but for those two the mask is dense over the
  whole flattened row (quadratic in batch x seq-len: eager would hold a 16k x 16k score matrix per head and layer,
  so it is not run flat by default);
- ``rows``: the same sequences packed into ``--batch`` rows of at most ``--seq-len`` tokens, ``position_ids``
  restarting per sequence, so transformers' block-diagonal mask is per row (the way eager/SDPA can pack cheaply;
  FlashAttention-2 does NOT honour boundaries here: with more than one row transformers runs plain causal FA2
  over each row, so the benchmark never runs FA2 with this layout).

``tests/test_gpu_bench.py`` checks on CPU that a sequence's logits are the same packed (both layouts) as alone.
``--attn`` takes ``eager``, ``sdpa``, ``flash_attention_2``, ``flex_attention`` (GPU only: no backward on CPU; its
flat rows are padded to ``--batch`` x ``--seq-len`` so it compiles once) and ``sdpa:<backend>`` (``flash``,
``efficient``, ``cudnn``, ``math``: SDPA forced to one backend with ``torch.nn.attention.sdpa_kernel``).  Which SDPA
backend actually ran is read off the profiler's op names for one extra step and recorded as ``sdpa_backends``.

MFU = achieved model FLOP/s / the card's dense bf16 peak (``--peak-tflops``; default: looked up by device name,
else the H200's 989 TFLOP/s dense).  Model FLOPs per step = 6 x (matmul parameters, lm_head included) x tokens +
6 x layers x hidden x sum(seq_len^2) for causal attention (forward + backward, the causal half only), counted
per sequence, so work a dense mask wastes counts as lost MFU.

    python bench/gpu_throughput.py --output runs/bench/gpu.json          # on the GPU machine, ~3 minutes
    python bench/gpu_throughput.py --toy                                  # seconds on CPU: checks it runs
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import platform
import random
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
H200_DENSE_BF16_TFLOPS = 989.4
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10G": 125.0,
                    "L4": 121.0}
TOY_CONFIG = {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": 64,
              "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
              "vocab_size": 1000, "max_position_embeddings": 512, "tie_word_embeddings": True}
LAYOUTS = ("none", "rows", "flat")
# Packed layouts run by default: boundary-safe and affordable for each attention implementation (see above).
DEFAULT_PACKED = {"eager": ("rows",), "sdpa": ("rows", "flat"), "flash_attention_2": ("flat",),
                  "flex_attention": ("flat",)}
SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "cudnn": "CUDNN_ATTENTION",
                 "math": "MATH"}
# Profiler op name fragment -> backend (the CPU flash kernel is "_scaled_dot_product_flash_attention_for_cpu").
SDPA_OPS = {"_scaled_dot_product_flash_attention_for_cpu": "flash (cpu)", "_scaled_dot_product_flash_attention": "flash",
            "_scaled_dot_product_efficient_attention": "efficient", "_scaled_dot_product_cudnn_attention": "cudnn",
            "_scaled_dot_product_attention_math": "math", "_scaled_dot_product_fused_attention_overrideable": "fused"}


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


def packed_batch(sequences: list, layout: str, device=None, pad_to: int | None = None) -> dict:
    """Model inputs for token sequences (1-D LongTensors) packed as `layout` ('flat', or 'rows': a list of rows).

    ``flat`` is TRL's padding-free collation: one row, ``position_ids`` restarting per sequence, ``cu_seq_lens_q/k``
    (int32) and ``max_length_q/k``; the first token of each sequence is not a target (it would be predicted from
    the previous sequence).  ``pad_to`` pads the flat row to a fixed length with one more (ignored) sequence, so
    compiled kernels (flex_attention) see one shape.  For ``rows``, ``sequences`` is a list of rows, each a list of
    sequences; a row's unused tail is one more (ignored) sequence.
    """
    import torch

    if layout == "flat":
        total = sum(len(s) for s in sequences)
        pad = pad_to - total if pad_to and pad_to > total else 0
        parts = list(sequences) + ([torch.zeros(pad, dtype=torch.long)] if pad else [])
        ids = torch.cat(parts).unsqueeze(0)
        pos = torch.cat([torch.arange(len(s)) for s in parts]).unsqueeze(0)
        labels = ids.masked_fill(pos == 0, -100)
        labels[0, total:] = -100
        lens = torch.tensor([len(s) for s in parts])
        cu = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)]).to(torch.int32)
        longest = int(lens.max())
        out = {"input_ids": ids, "position_ids": pos, "labels": labels, "cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
               "max_length_q": longest, "max_length_k": longest}
    elif layout == "rows":
        width = max(sum(len(s) for s in row) for row in sequences)
        ids = torch.zeros(len(sequences), width, dtype=torch.long)
        pos = torch.zeros_like(ids)
        labels = torch.full_like(ids, -100)
        for i, row in enumerate(sequences):
            used = sum(len(s) for s in row)
            ids[i, :used] = torch.cat(row)
            pos[i, :used] = torch.cat([torch.arange(len(s)) for s in row])
            pos[i, used:] = torch.arange(width - used)  # the unused tail: its own sequence, no targets
            labels[i, :used] = ids[i, :used].masked_fill(pos[i, :used] == 0, -100)
        out = {"input_ids": ids, "position_ids": pos, "labels": labels}
    else:
        raise ValueError(f"unknown packed layout {layout!r}")
    return {k: v.to(device) if device is not None and hasattr(v, "to") else v for k, v in out.items()}


def padded_batch(sequences: list, device=None) -> dict:
    """Right-padded batch with an attention mask (no packing)."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(sequences):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
    out = {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}
    return {k: v.to(device) if device is not None else v for k, v in out.items()}


def matmul_params(model) -> int:
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def model_flops(n_matmul: int, layers: int, hidden: int, seqs: list[int]) -> float:
    """Training FLOPs (forward + backward) for these sequences: dense matmuls + causal attention, per sequence."""
    return 6.0 * n_matmul * sum(seqs) + 6.0 * layers * hidden * sum(n * n for n in seqs)


def sdpa_context(attn: str):
    """``sdpa:<backend>`` -> a context forcing that SDPA backend; anything else -> a null context."""
    if not attn.startswith("sdpa:"):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(getattr(SDPBackend, SDPA_BACKENDS[attn.split(":", 1)[1]]))


def sdpa_backends_used(step) -> list[str]:
    """Run `step()` under the profiler; the SDPA backends whose ops ran (forward and backward)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    names = {e.key for e in prof.key_averages()}
    found = set()
    for name in names:
        for fragment, backend in SDPA_OPS.items():  # the CPU flash fragment is checked before plain flash
            if fragment in name:
                found.add(backend)
                break
    return sorted(found)


def run_one(config: dict, attn: str, layout: str, args, device, dtype) -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    cfg = AutoConfig.for_model(**{k: v for k, v in config.items() if not k.startswith("_") and k != "architectures"})
    with torch.device(device):  # initialise on the device: seconds, not a minute of CPU init for 0.5B
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn.split(":")[0], dtype=dtype)
    model.config.use_cache = False
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")
    n_matmul = matmul_params(model)
    layers, hidden, vocab = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    lengths = sequence_lengths(200_000, args.seq_len, seed=1)
    gen = torch.Generator().manual_seed(1)
    pad_to = args.batch * args.seq_len if attn == "flex_attention" else None  # one shape: compiled once

    def tokens(n: int):
        return torch.randint(0, vocab, (n,), generator=gen)

    def batches():
        if layout == "none":
            for chunk, _ in padded_batches(lengths, args.batch):
                yield padded_batch([tokens(n) for n in chunk], device), chunk
        else:
            for rows in packed_rows(lengths, args.batch, args.seq_len):
                seqs = [[tokens(n) for n in row] for row in rows]
                flat = [s for row in seqs for s in row]
                yield (packed_batch(flat if layout == "flat" else seqs, layout, device, pad_to=pad_to),
                       [len(s) for s in flat])

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step(inputs):
        loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    it = batches()
    steps = n_tokens = 0
    flops = 0.0
    t0 = None
    with sdpa_context(attn):
        for step in range(args.warmup + args.max_steps):
            if step == args.warmup:
                sync()
                t0 = time.perf_counter()
            inputs, seqs = next(it)
            loss = train_step(inputs)
            if step >= args.warmup:
                steps += 1
                n_tokens += sum(seqs)
                flops += model_flops(n_matmul, layers, hidden, seqs)
                if time.perf_counter() - t0 > args.seconds:
                    break
        sync()
        elapsed = time.perf_counter() - t0
        backends = None
        if attn.startswith("sdpa"):  # one more step under the profiler: which SDPA kernels ran
            inputs, _ = next(it)
            backends = sdpa_backends_used(lambda: (train_step(inputs), sync()))
    out = {"attention": attn, "layout": layout, "packing": layout != "none", "steps": steps, "tokens": n_tokens,
           "seconds": round(elapsed, 3), "tokens_per_s": n_tokens / elapsed, "tflops": flops / elapsed / 1e12,
           "loss_last": loss.detach().float().item(), "sdpa_backends": backends}
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def configurations(attns: list[str], layouts: list[str] | None) -> list[tuple[str, str]]:
    """(attention, layout) pairs to run: unpacked + the boundary-safe packed layouts (``DEFAULT_PACKED``)."""
    pairs = []
    for attn in attns:
        base = attn.split(":")[0]
        for layout in layouts or ("none",) + DEFAULT_PACKED.get(base, ("rows",)):
            if base in ("flash_attention_2", "flex_attention") and layout == "rows":
                continue  # several packed rows: plain causal FA2 over each row, attention crosses sequences
            pairs.append((attn, layout))
    return pairs


def flash_attn_importable() -> bool:
    try:
        importlib.import_module("flash_attn")
    except Exception:  # noqa: BLE001 - a broken build raises anything from ImportError to OSError
        return False
    return True


def environment() -> dict:
    import torch

    cuda = torch.cuda.is_available()
    env = {"device": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
           "cuda": torch.version.cuda if cuda else None, "python": platform.python_version()}
    env["versions"] = {pkg: _version(pkg) for pkg in ("torch", "transformers", "trl", "peft", "accelerate",
                                                       "flash_attn", "lyrictool")}
    return env


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(HERE / "configs" / "qwen2.5-0.5b.json"))
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8, help="sequences (no packing) or packed rows per step")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=20.0, help="timed budget per configuration")
    parser.add_argument("--attn", nargs="*", default=None,
                        help="eager sdpa flash_attention_2 flex_attention sdpa:{flash,efficient,cudnn,math}; "
                             "default: eager sdpa (+ flash_attention_2 when flash_attn imports)")
    parser.add_argument("--layouts", nargs="*", choices=LAYOUTS, default=None,
                        help="default: none + the boundary-safe packed layouts of each attention")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help=f"dense bf16 peak of the card; default by device name, else {H200_DENSE_BF16_TFLOPS} "
                             "(H200)")
    parser.add_argument("--toy", action="store_true", help="tiny model, CPU-sized: check that the script runs")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    import torch

    if args.toy:
        config = TOY_CONFIG
        args.seq_len, args.batch, args.warmup, args.max_steps = min(args.seq_len, 128), 2, 1, 3
        args.seconds = min(args.seconds, 5.0)
    else:
        config = json.loads(Path(args.config).read_text(encoding="utf-8"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    has_fa2 = cuda and flash_attn_importable()
    attns = args.attn or ["eager", "sdpa"] + (["flash_attention_2"] if has_fa2 else [])
    env = environment()
    peak = args.peak_tflops or (peak_tflops(env["device"]) or H200_DENSE_BF16_TFLOPS if cuda else None)
    print(f"device: {env['device']}; CUDA {env['cuda']}; dtype {str(dtype).removeprefix('torch.')}; peak bf16 "
          f"{peak or '?'} TFLOP/s; flash_attn {'imports' if has_fa2 else 'absent'}; seq_len {args.seq_len}, "
          f"batch {args.batch}; versions {env['versions']}", flush=True)
    results = []
    for attn, layout in configurations(attns, args.layouts):
        try:
            r = run_one(config, attn, layout, args, device, dtype)
        except Exception as e:  # noqa: BLE001 - one configuration failing (OOM, no kernel) must not end the table
            r = {"attention": attn, "layout": layout, "packing": layout != "none",
                 "error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:500]}
            print(f"{attn:>18} layout={layout:4}  FAILED {r['error']}", flush=True)
            results.append(r)
            write_summary(args.output, summarise(results, env, peak, args, dtype, has_fa2))
            continue
        finally:
            if cuda:
                import gc

                gc.collect()
                torch.cuda.empty_cache()
        r["mfu"] = r["tflops"] * 1e12 / (peak * 1e12) if peak else None
        results.append(r)
        write_summary(args.output, summarise(results, env, peak, args, dtype, has_fa2))  # a killed run keeps these
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        print(f"{attn:>18} layout={layout:4}  {r['tokens_per_s']:>12,.0f} tok/s  {r['tflops']:8.1f} TFLOP/s  "
              f"MFU {mfu:>6}  ({r['steps']} steps, {r['seconds']:.1f} s"
              f"{', peak ' + str(r['peak_memory_gib']) + ' GiB' if 'peak_memory_gib' in r else ''}"
              f"{', SDPA backends ' + '/'.join(r['sdpa_backends']) if r.get('sdpa_backends') else ''})", flush=True)
    summary = summarise(results, env, peak, args, dtype, has_fa2)
    ok = [r for r in results if "error" not in r]
    print("speed-ups vs eager (same packing): " + "; ".join(
        f"{r['attention']}/{r['layout']} {r['speedup_vs_eager_same_packing']:.2f}x" for r in ok
        if r["speedup_vs_eager_same_packing"] is not None), flush=True)
    write_summary(args.output, summary)
    return summary


def summarise(results: list[dict], env: dict, peak: float | None, args, dtype, has_fa2: bool) -> dict:
    """The JSON summary of the configurations run so far, with speed-ups against eager at the same packing."""
    ok = [r for r in results if "error" not in r]
    eager = {r["layout"]: r for r in ok if r["attention"] == "eager"}
    base_packed = eager.get("rows") or eager.get("flat")
    for r in ok:
        base = eager.get("none") if r["layout"] == "none" else base_packed
        r["speedup_vs_eager_same_packing"] = r["tokens_per_s"] / base["tokens_per_s"] if base else None
        r["speedup_vs_eager_unpacked"] = (r["tokens_per_s"] / eager["none"]["tokens_per_s"]
                                          if "none" in eager else None)
    best = max((r["speedup_vs_eager_same_packing"] for r in ok if r["attention"] != "eager"
                and r["speedup_vs_eager_same_packing"] is not None), default=None)
    return {
        **env, "peak_bf16_tflops": peak, "config": "toy" if args.toy else args.config,
        "seq_len": args.seq_len, "batch": args.batch, "dtype": str(dtype).removeprefix("torch."),
        "flash_attn_importable": has_fa2, "results": results,
        "goal": {"what": "SDPA or FA2 >= 1.15x eager tokens/s at the same packing", "best_speedup": best,
                 "met": best >= 1.15 if best is not None else None},
    }


def write_summary(output: str | None, summary: dict) -> None:
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(output).with_suffix(".tmp")
        tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
        tmp.replace(output)


def _version(pkg: str) -> str | None:
    import importlib.metadata as md

    try:
        return md.version(pkg)
    except md.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
