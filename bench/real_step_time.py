"""How long one LoRA SFT step of the real model takes on this CPU, beside ``python -c "import torch"``.

Issue 21's goal: a LoRA SFT optimizer step on 8 rows of 64 tokens in at most 0.64 x the time ``import torch``
takes in a fresh interpreter, measured in the same run (0.9 s where the import takes 1.4 s).

Each arm is lyrictool's own SFT path (``lyrictool.training.train_sft``: TRL SFTTrainer, peft LoRA r=16 on every
linear layer, the recipe's precision) on 宋词 text rows cut to exactly 64 tokens, batch 8, in a fresh process of its
own (one arm's memory and threads never touch the next's).  W warm-up steps, then the median wall time of the next
N optimizer steps, timed by a trainer callback from step begin to step end (forward, backward, optimizer).

Arms: the model (``builtin:gemma-3-270m``, 262,144 tokens; ``builtin:gemma-3-270m-zh``, its vocabulary trimmed to
the Chinese it writes) x the precision (fp32; bf16 autocast, ``train.bf16``; bf16 base weights too, ``model.dtype``)
x activation checkpointing x LoRA on every layer or on the top half only (``lora.layers_to_transform``).
``import torch`` is timed 3 times before and 3 times after the arms; the ratio uses the median of all 6.

    python bench/real_step_time.py                       # the default arms, 2 warm-up + 6 timed steps each
    python bench/real_step_time.py --arms zh-bf16        # one arm
    python bench/real_step_time.py --quick               # smoke on builtin:tiny-qwen (the test runs this)

Prints a markdown table and writes results.json (per-step times, load average, the import times).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SONGCI = REPO.parent / "shared" / "data" / "chinese-poetry" / "songci"
MODELS = {"full": "builtin:gemma-3-270m", "zh": "builtin:gemma-3-270m-zh"}
# arm name -> (model key, options): bf16 = autocast (train.bf16); weights = the frozen base's dtype (model.dtype);
# ckpt = activation checkpointing; top = LoRA on the top half of the 18 layers only (backward stops there)
ARMS = {
    "full-fp32": ("full", {}),
    "full-bf16": ("full", {"bf16": True}),
    "zh-fp32": ("zh", {}),
    "zh-bf16": ("zh", {"bf16": True}),
    "zh-bf16-ckpt": ("zh", {"bf16": True, "ckpt": True}),
    "zh-bf16w": ("zh", {"bf16": True, "weights": "bf16"}),
    "zh-bf16w-top": ("zh", {"bf16": True, "weights": "bf16", "top": True}),
}
DEFAULT_ARMS = "full-bf16,zh-fp32,zh-bf16,zh-bf16w,zh-bf16w-top"
GOAL = 0.64


def songci_texts(n: int) -> list[str]:
    """``n`` texts of 宋词 long enough for 64 tokens each: consecutive songs joined, from ci.song.0.json on."""
    texts, buf = [], ""
    files = [p for p in SONGCI.glob("ci.song.*.json") if p.stem.split(".")[-1].isdigit()]
    for path in sorted(files, key=lambda p: int(p.stem.split(".")[-1])):
        for song in json.loads(path.read_text(encoding="utf-8")):
            buf += "".join(song.get("paragraphs", []))
            if len(buf) >= 120:  # >= 64 tokens of Gemma's (about 1.3 characters a token on 宋词)
                texts.append(buf)
                buf = ""
                if len(texts) == n:
                    return texts
    raise SystemExit(f"{SONGCI}: fewer than {n} texts")


def run_arm(model: str, opts: dict, rows: int, tokens: int, warmup: int, steps: int, out: Path) -> dict:
    """One arm in this process: returns the per-step wall times of the timed steps and what was trained."""
    from transformers import TrainerCallback

    from lyrictool.recipes import SFTRecipe
    from lyrictool.training import train_sft

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self._t = 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter() - self._t)

    from transformers import AutoConfig

    from lyrictool.modeling import resolve_model_path

    timer = StepTimer()
    lora = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
    if opts.get("top"):
        layers = AutoConfig.from_pretrained(resolve_model_path(model)).num_hidden_layers
        lora["layers_to_transform"] = list(range(layers // 2, layers))
        lora["target_modules"] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    recipe = SFTRecipe.model_validate({
        "model": {"name": model, "lora": lora, "dtype": opts.get("weights", "auto")},
        "data": {"train": "builtin:demo-songs"},  # not read: train_sft takes the rows below
        "train": {"max_steps": warmup + steps, "per_device_train_batch_size": rows, "max_length": tokens,
                  "learning_rate": 1e-4, "logging_steps": 1000, "save_strategy": "no", "report_to": "none",
                  "bf16": bool(opts.get("bf16")), "activation_checkpointing": bool(opts.get("ckpt")),
                  "use_cpu": True, "dataloader_num_workers": 0},
        "eval_generation": {"num_prompts": 0},
        "output_dir": str(out), "seed": 0})
    texts = songci_texts(rows * (warmup + steps))
    t0 = time.perf_counter()
    trainer, lm = train_sft(recipe, [{"text": t} for t in texts], [], extra_callbacks=(timer,))
    lengths = [len(x["input_ids"]) for x in trainer.train_dataset.select(range(rows))]
    return {"model": model, "options": opts, "vocab_size": lm.model.config.vocab_size
            if hasattr(lm.model, "config") else None, "row_tokens": lengths, "step_s": timer.times[warmup:],
            "warmup_s": timer.times[:warmup], "torch_threads": __import__("torch").get_num_threads(),
            "total_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", default=DEFAULT_ARMS, help=f"comma-separated, of {', '.join(ARMS)}")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "real_step_time")
    ap.add_argument("--quick", action="store_true", help="builtin:tiny-qwen, 1 + 2 steps: a smoke test")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one arm in this process, print JSON
    args = ap.parse_args()

    if args.one:
        model, opts = json.loads(args.one)
        res = run_arm(model, opts, args.rows, args.tokens, args.warmup, args.steps, args.out / "run")
        print("RESULT " + json.dumps(res))
        return

    arms = {"tiny-fp32": ("builtin:tiny-qwen", {})} if args.quick else {
        name: (MODELS[ARMS[name][0]], ARMS[name][1]) for name in args.arms.split(",")}
    if args.quick:
        args.warmup, args.steps = 1, 2
    args.out.mkdir(parents=True, exist_ok=True)
    from lyrictool.demo import torch_import_time

    probes = 1 if args.quick else 3
    imports = [torch_import_time()["wall_s"] for _ in range(probes)]
    load = os.getloadavg()
    results = {}
    for name, (model, opts) in arms.items():
        cmd = [sys.executable, __file__, "--one", json.dumps([model, opts]), "--rows", str(args.rows),
               "--tokens", str(args.tokens), "--warmup", str(args.warmup), "--steps", str(args.steps),
               "--out", str(args.out / name)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            raise SystemExit(f"arm {name} failed:\n{proc.stderr[-3000:]}")
        results[name] = json.loads(line[len("RESULT "):])
        print(f"{name}: median step {statistics.median(results[name]['step_s']):.2f} s", flush=True)
    imports += [torch_import_time()["wall_s"] for _ in range(probes)]
    imp = statistics.median(imports)
    print(f"\n`python -c \"import torch\"`: median {imp:.2f} s of {len(imports)} "
          f"({', '.join(f'{x:.2f}' for x in imports)}); load average {load[0]:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end\n")
    print(f"| arm | vocabulary | step s (median of {args.steps}) | step / import torch | goal ≤ {GOAL} |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        med = statistics.median(r["step_s"])
        print(f"| {name} | {r['vocab_size']:,} | {med:.2f} | {med / imp:.2f} | {'met' if med / imp <= GOAL else '-'} |")
        r["median_step_s"], r["ratio_to_import"] = med, med / imp
    (args.out / "results.json").write_text(json.dumps(
        {"arms": results, "import_torch_s": imports, "import_torch_median_s": imp, "loadavg_start": load,
         "loadavg_end": os.getloadavg(), "rows": args.rows, "tokens": args.tokens, "warmup": args.warmup,
         "steps": args.steps}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
