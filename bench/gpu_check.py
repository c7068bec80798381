"""One prepared GPU check: attention kernels, MFU and the real commands end to end, in one run of at most 8 minutes.

For a lent GPU machine (an H200: docs/benchmarks.md, "GPU check", says how to bring the missing wheels and run it).
Stages, each in its own process with its own timeout inside one overall budget (``--budget-s``, 480 s), so one
failure or hang is recorded (status, error) and the next stage still runs:

1. ``throughput``: ``bench/gpu_throughput.py`` on a random-initialised Qwen2.5-0.5B-shaped model (vocab 151,936),
   bf16, 2k context: tokens/s, MFU, peak memory, which SDPA backend ran; eager vs SDPA vs flash_attention_2
   (when flash_attn imports), unpacked and packed (TRL's padding-free layout with ``cu_seq_lens``);
2. ``model``: the same 0.5B-shaped model, random init, saved in bf16 to a folder with the ``builtin:tiny-qwen``
   tokenizer (``builtin:tiny-zh`` where tiny-qwen is not in the tree);
3. the real commands through the ``lyrictool`` CLI on that folder: ``sft`` (LoRA, bf16, 50 steps),
   ``rejection-sample`` (batched sampling, one round), ``ppo`` (GRPO, a few steps), ``eval``, and ``serve``
   answering a burst of concurrent requests (completion tokens/s, p50/p99 latency);
4. ``throughput-flex`` (GPU only, last, so it only spends what is left of the budget): the throughput table for
   PyTorch's flex_attention on the packed layout, the one boundary-exact varlen-style kernel that can run where
   flash-attn cannot travel (compiled by Triton; its compile time counts against the stage).

Each command runs under a small wrapper that records, when its process exits, ``torch.cuda.max_memory_allocated()``
(peak GPU memory) and the peak resident memory.  The environment (GPU, CUDA, torch, transformers, trl, peft,
accelerate, flash_attn) is printed first.  Output: ``gpu_check.json`` and ``gpu_check.log`` in ``--out`` (default
``$OUT`` when set, else ``runs/gpu-check``); models and run folders go to ``--work`` (default a temporary folder).

    python bench/gpu_check.py                 # on the GPU machine
    python bench/gpu_check.py --toy           # the same stages at toy size on CPU, about a minute (tested in CI)

Exit status 0 when every stage passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "bench"
STAGES = ("throughput", "model", "sft", "rejection-sample", "ppo", "eval", "serve", "throughput-flex")
# Per-stage timeouts (seconds) on the GPU; each is also capped by what is left of the overall budget.
TIMEOUTS = {"throughput": 170, "model": 90, "sft": 120, "rejection-sample": 120, "ppo": 150, "eval": 100,
            "serve": 120, "throughput-flex": 120}
TOY_TIMEOUTS = {"throughput": 60, "model": 60, "sft": 90, "rejection-sample": 90, "ppo": 90, "eval": 90,
                "serve": 90}
TOY_MODEL = {"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "max_position_embeddings": 1024}
TOKENIZERS = ("builtin:tiny-qwen", "builtin:tiny-zh")  # the first that this tree knows


class Log:
    """Everything printed goes to the console and to gpu_check.log."""

    def __init__(self, path: Path):
        self.file = path.open("w", encoding="utf-8")

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.file.write(text + "\n")
        self.file.flush()


# ---- sizes ---------------------------------------------------------------------------------------------------
def plan(toy: bool) -> dict:
    """Every size the stages use, toy or GPU, in one place."""
    if toy:
        return {"stages": STAGES[:-1],  # flex_attention has no backward on CPU
                "throughput": ["--toy", "--seconds", "0.5", "--attn", "eager", "sdpa", "--layouts", "none", "flat"],
                "sft_steps": 2, "sft_batch": 4, "gen_prompts": 1, "new_tokens": 12, "rs_rows": 2, "rs_steps": 1,
                "ppo_steps": 1, "ppo_batch": 4, "ppo_generations": 2, "eval_prompts": 2, "eval_batch": 2,
                "serve_clients": 4, "serve_requests": 1, "serve_batch": 4, "timeouts": TOY_TIMEOUTS}
    return {"stages": STAGES, "throughput": ["--seconds", "12"],
            "throughput-flex": ["--attn", "flex_attention", "--layouts", "flat", "--seconds", "12"],
            "sft_steps": 50, "sft_batch": 16, "gen_prompts": 8, "new_tokens": 128, "rs_rows": 32, "rs_steps": 10,
            "ppo_steps": 5, "ppo_batch": 16, "ppo_generations": 4, "eval_prompts": 42, "eval_batch": 21,
            "serve_clients": 32, "serve_requests": 2, "serve_batch": 32, "timeouts": TIMEOUTS}


def recipes(model: str, work: Path, p: dict, toy: bool) -> dict[str, dict]:
    """The recipe of each command stage: the tiny recipes' data and rewards, on the check's model and sizes."""
    train_device = {"use_cpu": True} if toy else {}  # bf16 follows model.dtype (trl_config)
    dtype = "fp32" if toy else "bf16"
    lora = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
    safety = {"name": "safety", "weight": 1.0, "path": str(ROOT / "recipes/safety/blocklist.txt"),
              "override_below": 0.15}
    gen = {"num_prompts": p["gen_prompts"], "max_new_tokens": p["new_tokens"]}
    return {
        "sft": {"model": {"name": model, "dtype": dtype, "lora": lora},
                "data": {"train": "builtin:demo-songs", "eval_fraction": 0.1, "hints": "line_end",
                         "controls": ["genre", "topic", "rhyme", "structure", "line_lengths"]},
                "train": {"max_steps": p["sft_steps"], "learning_rate": 2.0e-4,
                          "per_device_train_batch_size": p["sft_batch"], "logging_steps": 10, **train_device},
                "eval_generation": gen, "output_dir": str(work / "sft"), "seed": 42},
        "rejection-sample": {
            "model": {"name": model, "dtype": dtype},
            "data": {"train": "builtin:demo-songs", "max_rows": p["rs_rows"],
                     "controls": ["genre", "topic", "rhyme", "structure", "line_lengths"]},
            "sampling": {"k": 4, "temperature": 1.0, "top_p": 0.95, "max_new_tokens": p["new_tokens"],
                         "batch_size": 8},
            "rewards": [{"name": "rhyme", "weight": 1.0}, {"name": "structure", "weight": 0.5},
                        {"name": "line_length", "weight": 0.5}, {"name": "format", "weight": 1.0}, safety],
            "finetune": True, "rounds": 1,
            "train": {"max_steps": p["rs_steps"], "learning_rate": 1.0e-5, "per_device_train_batch_size": 8,
                      "logging_steps": 5, **train_device},
            "output_dir": str(work / "rejection-sample"), "seed": 42},
        "ppo": {"model": {"name": model, "dtype": dtype}, "algorithm": "grpo",
                "data": {"train": "builtin:demo-songs", "eval_fraction": 0.05},
                "rewards": [{"name": "rhyme", "weight": 1.0}, {"name": "line_length", "weight": 0.5},
                            {"name": "format", "weight": 0.5}, safety],
                "train": {"beta": 0.01, "num_generations": p["ppo_generations"],
                          "max_completion_length": p["new_tokens"], "per_device_train_batch_size": p["ppo_batch"],
                          "learning_rate": 1.0e-6, "max_steps": p["ppo_steps"], "temperature": 1.0,
                          # gradient_checkpointing, not its newer name activation_checkpointing: transformers
                          # 5.17 (the GPU machine's) knows only the old one; 5.24 still takes it
                          "gradient_checkpointing": False, **train_device},
                "eval_generation": gen, "output_dir": str(work / "ppo"), "seed": 42},
        "eval": {"systems": [{"name": "base", "model": model}], "prompts": str(ROOT / "recipes/eval/prompts.jsonl"),
                 "generation": {"num_prompts": p["eval_prompts"], "max_new_tokens": p["new_tokens"],
                                "temperature": 0.7, "batch_size": p["eval_batch"]},
                 "scorer": None, "bootstrap_resamples": 200, "output_dir": str(work / "eval"), "seed": 42},
    }


# ---- stage processes -----------------------------------------------------------------------------------------
def run_process(args: list[str], log_path: Path, timeout: float, env: dict) -> tuple[int | None, float]:
    """Run to completion or until `timeout` (then its whole process group is killed): (exit code or None, s)."""
    start = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            rc = proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    return rc, time.perf_counter() - start


def last_error(log_path: Path) -> str:
    """The lines that say why a stage failed: the last few non-empty lines of its log."""
    lines = [ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    return " | ".join(lines[-3:])[-800:]


def lyrictool_args(memfile: Path, *args: str) -> list[str]:
    """`lyrictool ARGS` under the peak-memory wrapper (this file's ``_stage`` mode)."""
    return [sys.executable, str(Path(__file__).resolve()), "_stage", str(memfile), "--", *args]


def stage_main(memfile: str, args: list[str]) -> None:
    """Run the lyrictool CLI in this process; at exit write its peak GPU memory and peak RSS to `memfile`."""
    import atexit
    import resource

    def dump() -> None:
        out = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            out["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        Path(memfile).write_text(json.dumps(out), encoding="utf-8")

    atexit.register(dump)
    sys.argv = ["lyrictool", *args]
    from lyrictool.cli import main

    main()


def build_model(folder: str, toy: bool) -> None:
    """The check's model: Qwen2.5-0.5B-shaped (toy: tiny) Qwen2, random init, with the first tokenizer we have."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lyrictool.errors import UserError
    from lyrictool.modeling import load_tokenizer

    skipped = {}
    for name in TOKENIZERS:
        try:
            tok = load_tokenizer(name)
            break
        except (UserError, ImportError, OSError) as e:  # not in this tree, or its package is missing
            skipped[name] = f"{type(e).__name__}: {e}"[:300]
    config = json.loads((HERE / "configs" / "qwen2.5-0.5b.json").read_text(encoding="utf-8"))
    config = {k: v for k, v in config.items() if not k.startswith("_") and k != "architectures"}
    if toy:
        config.update(TOY_MODEL, vocab_size=-(-len(tok) // 64) * 64)
    if config["vocab_size"] < len(tok):
        raise SystemExit(f"tokenizer {name} has {len(tok)} tokens, more than the model's {config['vocab_size']}")
    config.update(bos_token_id=None, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    cfg = AutoConfig.for_model(**config)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32 if toy else torch.bfloat16)
    model.generation_config.update(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"tokenizer": name, "tokenizer_size": len(tok), "vocab_size": cfg.vocab_size,
                      "parameters": n, "dtype": str(model.dtype).removeprefix("torch."), "tokenizers_skipped": skipped},
                     ensure_ascii=False))


# ---- serve burst ---------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def burst(base: str, clients: int, per_client: int, max_tokens: int) -> dict:
    """`clients` concurrent clients, each sending `per_client` chat requests back to back, after one warm-up."""
    import httpx

    topics = ["夏天", "故乡", "雨", "青春", "城市", "离别", "月亮", "海"]
    latencies: list[float] = []
    tokens = 0
    errors: list[str] = []

    def body(i: int) -> dict:
        return {"model": "lyrictool-tiny", "max_tokens": max_tokens, "temperature": 0.8,
                "messages": [{"role": "user", "content": f"写一首关于{topics[i % len(topics)]}的歌"}]}

    async def client(i: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens
        for j in range(per_client):
            start = time.perf_counter()
            r = await http.post("/v1/chat/completions", json=body(i + j))
            if r.status_code == 200:
                latencies.append(time.perf_counter() - start)
                tokens += r.json()["usage"]["completion_tokens"]
            else:
                errors.append(f"{r.status_code} {r.text[:200]}")

    async with httpx.AsyncClient(base_url=base, timeout=120,
                                 limits=httpx.Limits(max_connections=clients * 2)) as http:
        await http.post("/v1/chat/completions", json=body(0))  # first-call costs out of the measurement
        start = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        wall = time.perf_counter() - start
    return {"clients": clients, "requests": len(latencies), "errors": len(errors), "first_error": errors[:1],
            "burst_s": round(wall, 3), "completion_tokens": tokens, "tokens_per_s": round(tokens / wall, 1),
            "requests_per_s": round(len(latencies) / wall, 2),
            "p50_s": round(percentile(latencies, 50), 3) if latencies else None,
            "p99_s": round(percentile(latencies, 99), 3) if latencies else None}


def run_serve(model: str, work: Path, p: dict, timeout: float, env: dict) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    port = free_port()
    memfile = work / "serve.mem.json"
    log_path = work / "logs" / "serve.log"
    args = lyrictool_args(memfile, "serve", str(ROOT / "recipes/tiny/serve.yaml"), "--port", str(port),
                          "--set", f"model.name={model}", "--set", f"batching.max_batch_size={p['serve_batch']}",
                          "--set", "limits.request_timeout_s=110")
    start = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            base = f"http://127.0.0.1:{port}"
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"server exited ({proc.returncode}): {last_error(log_path)}")
                if time.monotonic() > deadline:
                    raise TimeoutError("server did not answer /healthz in time")
                try:
                    if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            startup = time.perf_counter() - start
            remaining = deadline - time.monotonic()
            result = asyncio.run(asyncio.wait_for(
                burst(base, p["serve_clients"], p["serve_requests"], p["new_tokens"]), timeout=max(1, remaining)))
            result["startup_s"] = round(startup, 2)
        finally:
            proc.send_signal(signal.SIGINT)  # graceful: the wrapper writes the peak memory on the way out
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if memfile.exists():
        result.update(json.loads(memfile.read_text(encoding="utf-8")))
    if result["errors"] or not result["requests"]:
        raise RuntimeError(f"{result['errors']} of the burst's requests failed: {result['first_error']}")
    return result


# ---- the check -----------------------------------------------------------------------------------------------
def environment() -> dict:
    import importlib.metadata as md
    import platform

    import torch

    cuda = torch.cuda.is_available()
    versions = {}
    for pkg in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "flash_attn", "lyrictool"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"gpu": torch.cuda.get_device_name(0) if cuda else None,
            "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
            "cuda": torch.version.cuda, "python": platform.python_version(), "cpus": os.cpu_count(),
            "versions": versions}


def summary_fields(folder: Path) -> dict:
    """The figures worth keeping from a command's summary.json / result.json (not its samples)."""
    out = {}
    for name in ("summary.json", "result.json"):
        path = folder / name
        if path.exists():
            data = json.loads(path.read_text(encoding="utf-8"))
            for key in ("timings_s", "metrics", "model", "world_size", "wall_s"):
                if key in data:
                    out[key] = data[key]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--toy", action="store_true", help="toy size on CPU: checks the script end to end")
    parser.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "runs" / "gpu-check"),
                        help="gpu_check.json and gpu_check.log go here (default $OUT, else runs/gpu-check)")
    parser.add_argument("--work", default=None, help="model and run folders (default: a temporary folder)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="the whole check's time limit")
    parser.add_argument("--only", nargs="*", choices=STAGES, default=None, help="run only these stages")
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="gpu-check-"))
    (work / "logs").mkdir(parents=True, exist_ok=True)
    (work / "recipes").mkdir(exist_ok=True)
    log = Log(out / "gpu_check.log")
    t_start = time.monotonic()
    p = plan(args.toy)
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))

    environ = environment()
    log(f"gpu_check {'--toy ' if args.toy else ''}budget {args.budget_s:.0f} s; work {work}")
    log(f"environment: {json.dumps(environ)}")
    report: dict = {"toy": args.toy, "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
                    "budget_s": args.budget_s, "environment": environ, "stages": {}}
    model = str(work / "model")
    stage_recipes = recipes(model, work, p, args.toy)

    import yaml

    def remaining() -> float:
        return args.budget_s - (time.monotonic() - t_start)

    for stage in p["stages"]:
        if args.only and stage not in args.only:
            continue
        timeout = min(p["timeouts"][stage], remaining())
        if timeout < 5:
            report["stages"][stage] = {"status": "skipped", "error": "the check's time budget is spent"}
            log(f"[{stage}] skipped: budget spent")
            continue
        log(f"[{stage}] start (timeout {timeout:.0f} s)")
        log_path = work / "logs" / f"{stage}.log"
        memfile = work / f"{stage}.mem.json"
        rec: dict = {}
        try:
            if stage == "serve":
                t0 = time.perf_counter()
                rec = run_serve(model, work, p, timeout, env)
                rec.update(status="ok", seconds=round(time.perf_counter() - t0, 2))
            else:
                if stage.startswith("throughput"):
                    cmd = [sys.executable, str(HERE / "gpu_throughput.py"), *p[stage],
                           "--output", str(work / f"{stage}.json")]
                elif stage == "model":
                    cmd = [sys.executable, str(Path(__file__).resolve()), "_model", model] + (["--toy"] * args.toy)
                else:
                    recipe = work / "recipes" / f"{stage}.yaml"
                    recipe.write_text(yaml.safe_dump(stage_recipes[stage], allow_unicode=True, sort_keys=False),
                                      encoding="utf-8")
                    cmd = lyrictool_args(memfile, stage, str(recipe))
                rc, seconds = run_process(cmd, log_path, timeout, env)
                rec = {"status": "ok" if rc == 0 else "timeout" if rc is None else "failed",
                       "seconds": round(seconds, 2)}
                if rc != 0:
                    rec["error"] = (f"timed out after {timeout:.0f} s: " if rc is None else f"exit {rc}: ") + \
                        last_error(log_path)
                if memfile.exists():
                    rec.update(json.loads(memfile.read_text(encoding="utf-8")))
                if stage.startswith("throughput") and (work / f"{stage}.json").exists():
                    rec["table"] = json.loads((work / f"{stage}.json").read_text(encoding="utf-8"))
                elif stage == "model" and rc == 0:
                    rec["model"] = json.loads(log_path.read_text(encoding="utf-8").strip().splitlines()[-1])
                elif stage in stage_recipes:
                    rec.update(summary_fields(Path(stage_recipes[stage]["output_dir"])))
        except Exception as e:  # noqa: BLE001 - a stage's failure is recorded, the next stage still runs
            rec = {"status": "failed", "error": f"{type(e).__name__}: {e}"[:800], **rec}
        report["stages"][stage] = rec
        write_report(out, report, t_start)  # after every stage: a check killed from outside still leaves its JSON
        if log_path.exists():
            log(log_path.read_text(encoding="utf-8", errors="replace").rstrip())
        log(f"[{stage}] {rec['status']} in {rec.get('seconds', '?')} s"
            + (f"; peak GPU memory {rec['peak_gpu_memory_gib']} GiB" if "peak_gpu_memory_gib" in rec else "")
            + (f"; {rec['error']}" if rec.get("error") else ""))

    write_report(out, report, t_start)
    log(summary_table(report))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if report["passed"] else 1


def write_report(out: Path, report: dict, t_start: float) -> None:
    report["seconds"] = round(time.monotonic() - t_start, 1)
    report["passed"] = all(s["status"] == "ok" for s in report["stages"].values())
    tmp = out / "gpu_check.json.tmp"
    tmp.write_text(json.dumps(report, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(out / "gpu_check.json")


def summary_table(report: dict) -> str:
    lines = [(f"gpu_check: {'PASSED' if report['passed'] else 'FAILED'} in {report['seconds']} s "
              f"({report['environment']['gpu'] or 'CPU'})")]
    for name, s in report["stages"].items():
        mem = f"{s['peak_gpu_memory_gib']:.2f} GiB" if "peak_gpu_memory_gib" in s else "-"
        extra = ""
        if name == "serve" and s["status"] == "ok":
            extra = f"{s['tokens_per_s']} tok/s, p50 {s['p50_s']} s, p99 {s['p99_s']} s"
        lines.append(f"  {name:17} {s['status']:8} {s.get('seconds', '-')!s:>8} s  peak GPU {mem:>10}  {extra}")
    tables = [report["stages"].get(name, {}).get("table") or {} for name in ("throughput", "throughput-flex")]
    for r in [r for table in tables for r in table.get("results", [])]:
        if "error" in r:
            lines.append(f"    {r['attention']:>18}/{r['layout']:4} FAILED {r['error']}")
        else:
            mfu = f"{r['mfu']:.1%}" if r.get("mfu") is not None else "-"
            lines.append(f"    {r['attention']:>18}/{r['layout']:4} {r['tokens_per_s']:>12,.0f} tok/s  MFU {mfu:>6}  "
                         f"x{r['speedup_vs_eager_same_packing'] or 0:.2f} vs eager  "
                         f"SDPA {'/'.join(r['sdpa_backends'] or []) or '-'}")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_stage":  # internal: python gpu_check.py _stage MEMFILE -- ARGS
        stage_main(sys.argv[2], sys.argv[4:])
    elif len(sys.argv) > 1 and sys.argv[1] == "_model":  # internal: python gpu_check.py _model FOLDER [--toy]
        sys.path.insert(0, str(ROOT))
        build_model(sys.argv[2], "--toy" in sys.argv[3:])
    else:
        sys.exit(main())
