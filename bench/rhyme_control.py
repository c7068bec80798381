"""Does phonetic knowledge add anything to hints, at an equal number of optimizer steps?  宋词, seeds, CIs.

Data: 宋词 from the chinese-poetry corpus (``--data``, default ../shared/data/chinese-poetry/songci), converted
by ``lyrictool data chinese-poetry``'s converter; songs whose lines mostly share one rhyme group (the derived
``rhyme`` control) and that are short enough for the tiny model.  Prompt = the tune name (词牌, ``title``) and
the requested rhyme group; held-out songs give the test prompts.  The split is fixed (``--split-seed``): every
arm and seed answers the same prompts, so differences pair by seed and prompt.

Arms, all `lyrictool inject` runs, every one with the same total number of optimizer steps T (all stages
counted) and about the same number of tokens (SFT steps of 8 songs; knowledge steps of 24 short texts or
questions, ~3x shorter rows; results.json has each run's estimate):
  plain     SFT without hints, T steps
  hints     SFT with hints (〔group〕 before each line's last character), T steps
  phonetic  memorize M + understand Q steps of builtin:phonetic (the training songs' most frequent characters),
            then SFT with hints for T - M - Q steps
One run per arm, budget and seed; a seed changes the model's random init (``save_tiny_model(seed=)``), the
order of the training data and the samples drawn.  The model is builtin:tiny-zh's architecture with its
vocabulary cut to the characters this benchmark uses (same config, chat template and special tokens).

Metric: rhyme accuracy = share of generated lines whose last sung syllable is in the requested group
(lyrictool.metrics.song_metrics), one sample per test prompt.  Floor: the requested group's base rate (share
of all training line-ends in that group, averaged over the prompts): what a model that ignores the request
scores.  Reference: the held-out songs themselves.

Intervals: for each arm, the mean over seeds x prompts with a two-way bootstrap 95% CI (seeds and prompts
resampled, lyrictool.stats.seeds_by_items_bootstrap); for each difference of arms, the same bootstrap of the
per-seed, per-prompt differences, and a Student t 95% interval over the per-seed mean differences
(lyrictool.stats.mean_ci95).  A difference is called real only when both intervals exclude 0.

    python bench/rhyme_control.py                     # 3 seeds, T = 320 and 480; runs/bench/rhyme_control/
    python bench/rhyme_control.py --seeds 5 --reuse   # + seeds 3 and 4: the tables in docs/benchmarks.md
    python bench/rhyme_control.py --quick             # smoke: 6 steps, 1 seed, 8 prompts (~30 s)

Independent runs go to ``--workers`` processes of one torch thread each.  Prints a markdown table and writes
results.json (per-seed, per-prompt scores, CIs, wall / CPU time, load average, ``import torch`` time).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARMS = {"plain": "plain SFT", "hints": "SFT + hints", "phonetic": "phonetic injection + SFT + hints"}
# differences a conclusion rests on: (a, b) -> b - a
DIFFS = (("plain", "hints"), ("hints", "phonetic"), ("plain", "phonetic"))


def load_songs(data: Path, max_lines: int, max_chars: int) -> list[dict]:
    from lyrictool.controls import derive_controls
    from lyrictool.data.convert import iter_chinese_poetry
    from lyrictool.phonetics import syllable_count

    songs = []
    for row, _where in iter_chinese_poetry(data):
        if row is None:
            continue
        lines = row["lyrics"].split("\n")
        if len(lines) > max_lines or sum(syllable_count(x) for x in lines) > max_chars:
            continue
        rhyme = derive_controls(row["lyrics"], ["rhyme"]).get("rhyme")
        if rhyme:
            songs.append({"lyrics": row["lyrics"], "controls": {"title": row["controls"].get("title"),
                                                                "rhyme": rhyme}})
    return songs


def hint_diagnostics(raw_texts: list[str], requested: list[str]) -> dict:
    """For models that write hints: how often the hint names the requested group, and how often the character
    after a hint really is in the hinted group (commit to a group, then find a character of it)."""
    import re

    from lyrictool.lyrics import strip_hints
    from lyrictool.phonetics import rhyme_group

    hint = re.compile(r"〔([^〔〕]+)〕")
    lines = asked = agree = 0
    for text, want in zip(raw_texts, requested):
        for line in text.split("\n"):
            m = hint.search(line)
            if not m:
                continue
            lines += 1
            asked += m.group(1) == want
            agree += rhyme_group(strip_hints(line)) == m.group(1)
    if not lines:
        return {}
    return {"hinted_lines": lines, "hint_is_requested_group": asked / lines, "char_matches_its_hint": agree / lines}


def parse_budget(text: str) -> dict:
    """``T:M:Q`` -> total steps T, of which the phonetic arm spends M memorizing and Q on questions."""
    try:
        total, mem, qa = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"budget {text!r}: write T:M:Q, e.g. 400:100:40") from None
    if min(total, mem, qa) < 0 or total - mem - qa < 1:
        raise argparse.ArgumentTypeError(f"budget {text!r}: the phonetic arm needs T - M - Q >= 1 SFT steps")
    return {"total": total, "memorize": mem, "understand": qa}


def knowledge_source(train_path: Path, chars: int) -> list[dict]:
    return [{"builtin": "phonetic", "chars_from": str(train_path), "max_chars": chars}]


def arm_recipe(arm: str, budget: dict, seed: int, base: str, train_path: Path, out: Path, cfg: dict, *,
               model: dict | None = None, data: dict | None = None, train_extra: dict | None = None):
    """The `lyrictool inject` recipe of one arm at one budget and seed (as a user would write it).  ``model``,
    ``data`` and ``train_extra`` add to the model section, the utilize stage's data and every stage's train keys
    (bench/real_rhyme.py: LoRA, the data's controls, bf16 on the CPU)."""
    from lyrictool.train.inject import InjectRecipe

    train = {"learning_rate": cfg["lr"], "per_device_train_batch_size": cfg["batch"], "gradient_checkpointing": False,
             "max_length": cfg["max_length"], "lr_scheduler_type": "cosine", "warmup_steps": 0.05,
             "dataloader_pin_memory": False, "logging_steps": 10, **(train_extra or {})}

    def utilize(hints: str, steps: int) -> dict:
        return {"name": "utilize", "train": dict(train, max_steps=steps), "eval_generation": {"num_prompts": 0},
                "data": {"train": str(train_path), "controls": ["title", "rhyme"], "derive": ["rhyme"],
                         **(data or {}), "hints": hints}}

    knowledge, stages = [], []
    if arm == "phonetic":
        knowledge = knowledge_source(train_path, cfg["chars"])
        kb = {"per_device_train_batch_size": cfg["knowledge_batch"]}
        stages = [{"name": "memorize", "train": dict(train, **kb, max_steps=budget["memorize"])},
                  {"name": "understand", "train": dict(train, **kb, max_steps=budget["understand"])}]
        stages = [s for s in stages if s["train"]["max_steps"] > 0]
        sft_steps = budget["total"] - budget["memorize"] - budget["understand"]
    else:
        sft_steps = budget["total"]
    stages.append(utilize("none" if arm == "plain" else "line_end", sft_steps))
    recipe = InjectRecipe.model_validate({
        "model": {"name": base, **(model or {})}, "knowledge": knowledge, "augment": {"paraphrases": 2},
        "qa_eval_fraction": 0.1, "qa_eval_max": cfg["qa_eval_max"] if knowledge else 0, "stages": stages,
        "output_dir": str(out), "seed": seed})
    recipe._source = "bench/rhyme_control.py"
    return recipe


def tokens_seen(recipe, tokenizer) -> list[int]:
    """Per stage, the tokens it trained on, estimated as steps x batch x the mean length of its rows in tokens
    (chat template applied, cut at max_length; padding not counted): stages of different batch sizes and row
    lengths compare in tokens as well as in steps."""
    from lyrictool.data.lyrics_rows import sft_datasets
    from lyrictool.train.inject import knowledge_rows, qa_messages

    def length(row: dict) -> int:
        text = row["text"] + tokenizer.eos_token if "text" in row else \
            tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    ks, qa_train, _ = knowledge_rows(recipe) if recipe.knowledge else (None, [], [])
    out = []
    for stage in recipe.stages:
        if stage.name == "memorize":
            rows = [{"text": t} for t in ks.texts]
        elif stage.name == "understand":
            rows = qa_messages(qa_train)
        else:
            rows = sft_datasets(stage.data, recipe.seed)[0]
        rows = random.Random(0).sample(rows, min(len(rows), 500))
        mean = sum(min(length(r), stage.train["max_length"]) for r in rows) / len(rows)
        out.append(round(stage.train["max_steps"] * stage.train["per_device_train_batch_size"] * mean))
    return out


def run_job(job: dict) -> dict:
    """Train one arm at one budget and seed (or reuse it), sample once per test prompt, score.  One torch thread;
    the run's log goes to log.txt in its folder."""
    import torch

    torch.set_num_threads(1)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "log.txt", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        from lyrictool.generation import generate_lyrics
        from lyrictool.metrics import song_metrics
        from lyrictool.modeling import load_model
        from lyrictool.recipes import ModelSpec
        from lyrictool.train.inject import run_inject

        cfg = job["cfg"]
        recipe = arm_recipe(job["arm"], job["budget"], job["seed"], job["base"], Path(job["train_path"]), out, cfg)
        done = out / "summary.json"
        reused = bool(job["reuse"] and done.exists())
        summary = json.loads(done.read_text(encoding="utf-8")) if reused else run_inject(recipe)
        train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
        if reused and (out / "train_time.json").exists():  # what training this run cost when it ran
            first = json.loads((out / "train_time.json").read_text(encoding="utf-8"))
            train_s, train_cpu_s = first["train_s"], first["train_cpu_s"]
        elif not reused:
            (out / "train_time.json").write_text(json.dumps({"train_s": train_s, "train_cpu_s": train_cpu_s}))
        lm = load_model(ModelSpec(name=str(out)), announce=False)
        controls = job["controls"]
        samples = generate_lyrics(lm.model, lm.tokenizer, controls, n=1, max_new_tokens=cfg["max_new_tokens"],
                                  temperature=cfg["temperature"], top_p=0.95, batch_size=50, seed=job["seed"])
        tokens = tokens_seen(recipe, lm.tokenizer)
    scores = [song_metrics(s[0].text, c)["rhyme_accuracy"] or 0.0 for s, c in zip(samples, controls)]
    stages = [{**{k: s.get(k) for k in ("name", "steps", "train_loss_first", "train_loss_last", "time_s",
                                        "knowledge_qa")}, "batch": st.train["per_device_train_batch_size"],
               "tokens_seen_est": n} for s, st, n in zip(summary["stages"], recipe.stages, tokens)]
    return {"arm": job["arm"], "total_steps": job["budget"]["total"], "seed": job["seed"], "scores": scores,
            "rhyme_accuracy": sum(scores) / len(scores),
            "songs_mostly_in_group": sum(x >= 0.5 for x in scores) / len(scores),
            **hint_diagnostics([s[0].raw for s in samples], [c["rhyme"] for c in controls]),
            "optimizer_steps": sum(s["steps"] or 0 for s in stages), "tokens_seen_est": sum(tokens),
            "stages": stages, "reused": reused,
            "train_s": round(train_s, 1), "train_cpu_s": round(train_cpu_s, 1),
            "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - cpu0, 1),
            "examples": [{"controls": c, "lyrics": s[0].text} for s, c in list(zip(samples, controls))[:2]]}


def vocabulary_texts(train_path: Path, test: list[dict], seeds: list[int], chars: int) -> list[str]:
    """Every text the runs train on or prompt with, as the product renders it: the cut vocabulary's characters."""
    from lyrictool.controls import build_prompt
    from lyrictool.data.lyrics_rows import sft_datasets
    from lyrictool.recipes import DataSpec
    from lyrictool.train.inject import InjectRecipe, knowledge_rows

    texts = [train_path.read_text(encoding="utf-8"), "system user assistant"]
    for hints in ("none", "line_end"):
        rows, _, _, _ = sft_datasets(DataSpec(train=str(train_path), controls=["title", "rhyme"], derive=["rhyme"],
                                              hints=hints), 0)
        texts += [m["content"] for row in rows for m in row["prompt"] + row["completion"]]
    for seed in seeds:  # the phrasings are drawn per seed
        recipe = InjectRecipe.model_validate({"knowledge": knowledge_source(train_path, chars),
                                              "augment": {"paraphrases": 2}, "output_dir": "-", "seed": seed,
                                              "stages": [{"name": "memorize"}]})
        ks, _, _ = knowledge_rows(recipe)
        texts += ks.texts + [q["question"] + q["answer"] for q in ks.qa]
    texts += [build_prompt(s["controls"]) for s in test]
    return texts


def content_key(what) -> str:
    """A short hash of ``what`` (as sorted JSON): what a finished run's results depend on, compared by ``--reuse``."""
    return hashlib.sha256(json.dumps(what, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]


def has_weights(path: Path) -> bool:
    """A saved model, or a LoRA adapter on one (as a LoRA `lyrictool sft` or `lyrictool ppo` saves it), in ``path``."""
    return ((path / "config.json").exists() or (path / "adapter_config.json").exists()) and \
        any(path.glob("*.safetensors"))


def reused_scores(out: Path, key: str, reuse: bool) -> dict | None:
    """With ``--reuse``, the run's finished ``scores.json`` when it was made under the same ``key``, else None."""
    done = out / "scores.json"
    if reuse and done.exists():
        prev = json.loads(done.read_text(encoding="utf-8"))
        if prev.get("eval_key") == key:
            return {**prev, "reused": True}
    return None


def start_timing():
    """A bench's clock: (wall start, the running LoadSampler, ``import torch`` timed in a fresh process), the
    import time printed beside the load average."""
    from lyrictool.demo import torch_import_time

    wall0 = time.perf_counter()
    load = LoadSampler()
    load.start()
    torch_import = torch_import_time()
    print(f"python -c 'import torch': {torch_import['wall_s']} s wall, {torch_import['cpu_s']} CPU s; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)
    return wall0, load, torch_import


def interval_fields(ci: dict) -> dict:
    return {k: ci[k] for k in ("mean", "ci_low", "ci_high")}


def aggregate(runs: list[dict], arms: list[str], budgets: list[dict], seeds: list[int], resamples: int) -> dict:
    """Per budget: each arm's mean with its CIs, and each difference of arms with its CIs."""
    import numpy as np

    from lyrictool.stats import mean_ci95, seeds_by_items_bootstrap

    by_key = {(r["total_steps"], r["arm"], r["seed"]): r for r in runs}
    out = {}
    for budget in budgets:
        t = budget["total"]
        table = {a: np.array([by_key[(t, a, s)]["scores"] for s in seeds]) for a in arms}
        res = {"budget": budget, "arms": {}, "differences": {}}
        for a in arms:
            per_seed = table[a].mean(axis=1).tolist()
            res["arms"][a] = {"label": ARMS[a], "per_seed": dict(zip(map(str, seeds), per_seed)),
                              "bootstrap": interval_fields(seeds_by_items_bootstrap(table[a], resamples=resamples)),
                              "t_over_seeds": interval_fields(mean_ci95(per_seed)),
                              "tokens_seen_est": round(np.mean([by_key[(t, a, s)]["tokens_seen_est"] for s in seeds])),
                              "train_cpu_s": round(float(np.mean([by_key[(t, a, s)]["train_cpu_s"] for s in seeds])),
                                                   1)}
        for a, b in DIFFS:
            if a not in table or b not in table:
                continue
            d = table[b] - table[a]
            boot = seeds_by_items_bootstrap(d, resamples=resamples)
            t_ci = mean_ci95(d.mean(axis=1).tolist())
            both = boot["significant"] and t_ci["ci_low"] is not None and (t_ci["ci_low"] > 0 or t_ci["ci_high"] < 0)
            res["differences"][f"{b} - {a}"] = {"per_seed": dict(zip(map(str, seeds), d.mean(axis=1).tolist())),
                                                "bootstrap": interval_fields(boot), "t_over_seeds": interval_fields(t_ci),
                                                "both_exclude_0": both}
        out[str(t)] = res
    return out


def fmt(ci: dict) -> str:
    if ci["ci_low"] is None:
        return f"{ci['mean']:.3f}"
    return f"{ci['mean']:.3f} [{ci['ci_low']:.3f}, {ci['ci_high']:.3f}]"


def fmt_diff(ci: dict) -> str:
    if ci["ci_low"] is None:
        return f"{ci['mean']:+.3f}"
    return f"{ci['mean']:+.3f} [{ci['ci_low']:+.3f}, {ci['ci_high']:+.3f}]"


class LoadSampler(threading.Thread):
    """The 1-minute load average every 15 s while the benchmark runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples = [os.getloadavg()[0]]
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(15):
            self.samples.append(os.getloadavg()[0])

    def summary(self) -> dict:
        s = self.samples
        return {"start": round(s[0], 2), "mean": round(sum(s) / len(s), 2), "max": round(max(s), 2),
                "end": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "chinese-poetry" / "songci")
    ap.add_argument("--train-songs", type=int, default=3000)
    ap.add_argument("--test-prompts", type=int, default=100)
    ap.add_argument("--max-lines", type=int, default=10)
    ap.add_argument("--max-chars", type=int, default=50)
    ap.add_argument("--budget", type=parse_budget, action="append", dest="budgets",
                    help="T:M:Q, repeatable: every arm trains T optimizer steps in all; the phonetic arm M memorize "
                         "+ Q understand + T-M-Q SFT steps (default: the two budgets in docs/benchmarks.md)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per arm and budget (0, 1, ...)")
    ap.add_argument("--chars", type=int, default=400, help="characters described by the phonetic knowledge")
    ap.add_argument("--batch", type=int, default=8, help="batch size of the SFT stages")
    ap.add_argument("--knowledge-batch", type=int, default=24,
                    help="batch size of the memorize and understand stages: their rows are ~3x shorter than a song, "
                         "so a step of 24 of them is about as many tokens as an SFT step of 8 songs")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--max-length", type=int, default=160, help="tokens per training row")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--qa-eval-max", type=int, default=30, help="knowledge questions asked after each stage")
    ap.add_argument("--split-seed", type=int, default=0, help="the train / test split (the same for every seed)")
    ap.add_argument("--arms", default="plain,hints,phonetic")
    ap.add_argument("--workers", type=int, default=2, help="training processes (one torch thread each)")
    ap.add_argument("--resamples", type=int, default=4000)
    ap.add_argument("--quick", action="store_true", help="smoke test: 1 seed, 8 prompts, 300 songs, 6 steps")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "rhyme_control")
    ap.add_argument("--reuse", action="store_true", help="re-sample and re-score runs already trained in --out")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.test_prompts, args.train_songs, args.chars = 1, 8, 300, 60
        args.budgets, args.max_new_tokens, args.qa_eval_max, args.resamples = [parse_budget("6:2:2")], 48, 4, 500
    # 480 steps: hints alone rhyme well (pilot 0.70); 320: hints alone barely above the floor (pilot 0.18).  The
    # knowledge stages take ~48% of the steps at both, as in the earlier single-seed run (150 + 80 of 480)
    args.budgets = args.budgets or [parse_budget("320:100:50"), parse_budget("480:150:80")]
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        ap.error(f"--arms: unknown {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    seeds = list(range(args.seeds))

    from lyrictool.demo import cpu_seconds

    wall0, load, torch_import = start_timing()

    from lyrictool.builtin_models import save_tiny_model
    from lyrictool.data import write_jsonl
    from lyrictool.metrics import song_metrics
    from lyrictool.phonetics import line_groups

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    songs = load_songs(args.data, args.max_lines, args.max_chars)
    random.Random(args.split_seed).shuffle(songs)
    test, train = songs[: args.test_prompts], songs[args.test_prompts: args.test_prompts + args.train_songs]
    train_path = out / "train.jsonl"
    write_jsonl(train_path, train)
    print(f"{len(songs)} usable 宋词; {len(train)} train, {len(test)} test prompts", flush=True)

    line_ends = Counter(g for s in train for g in line_groups(s["lyrics"].split("\n")) if g)
    total = sum(line_ends.values())
    floor = sum(line_ends[s["controls"]["rhyme"]] / total for s in test) / len(test)
    reference = sum(song_metrics(s["lyrics"], {"rhyme": s["controls"]["rhyme"]})["rhyme_accuracy"]
                    for s in test) / len(test)

    texts = vocabulary_texts(train_path, test, seeds, args.chars)
    bases = {}
    for seed in seeds:
        path = out / f"base-seed{seed}"
        bases[seed] = str(path if args.reuse and (path / "config.json").exists() else save_tiny_model(path, texts, seed))
    cfg = {k: getattr(args, k) for k in ("lr", "batch", "knowledge_batch", "max_length", "chars", "qa_eval_max", "max_new_tokens",
                                         "temperature")}
    controls = [s["controls"] for s in test]
    # the longest runs first, so the two workers finish together
    jobs = [{"arm": a, "budget": b, "seed": s, "base": bases[s], "train_path": str(train_path), "cfg": cfg,
             "controls": controls, "reuse": args.reuse, "out": str(out / f"T{b['total']}-{a}-seed{s}")}
            for b in sorted(args.budgets, key=lambda b: -b["total"]) for s in seeds for a in arms]
    runs = []
    if args.workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(run_job, j) for j in jobs]
            for f in as_completed(futures):
                runs.append(f.result())
                r = runs[-1]
                print(f"-> T={r['total_steps']} {r['arm']} seed {r['seed']}: rhyme accuracy {r['rhyme_accuracy']:.3f} "
                      f"({r['wall_s']:.0f} s, {r['cpu_s']:.0f} CPU s) [{len(runs)}/{len(jobs)}]", flush=True)
    else:
        for j in jobs:
            runs.append(run_job(j))
            r = runs[-1]
            print(f"-> T={r['total_steps']} {r['arm']} seed {r['seed']}: rhyme accuracy {r['rhyme_accuracy']:.3f} "
                  f"({r['wall_s']:.0f} s, {r['cpu_s']:.0f} CPU s) [{len(runs)}/{len(jobs)}]", flush=True)
    for r in runs:
        if r["optimizer_steps"] != r["total_steps"] and not r["reused"]:
            raise SystemExit(f"T={r['total_steps']} {r['arm']} seed {r['seed']}: ran {r['optimizer_steps']} steps")
    runs.sort(key=lambda r: (r["total_steps"], arms.index(r["arm"]), r["seed"]))
    results = aggregate(runs, arms, args.budgets, seeds, args.resamples)

    load.stop.set()
    timing = {"wall_s": round(time.perf_counter() - wall0, 1), "cpu_s": round(cpu_seconds(), 1),
              "import_torch": torch_import, "load_average": load.summary(), "workers": args.workers,
              "cpus": os.cpu_count()}
    summary = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "seeds": seeds, "train_songs": len(train), "test_prompts": len(test), "vocabulary": len(
                   json.loads((Path(bases[seeds[0]]) / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]),
               "base_rate_floor": floor, "reference_songs": reference, "intervals": (
                   "arm: mean over seeds x prompts, two-way bootstrap (seeds and prompts resampled) 95% CI and Student "
                   "t 95% CI over per-seed means; difference: the same on per-seed, per-prompt differences"),
               "budgets": results, "runs": runs, "timing": timing}
    (out / "results.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")

    print(f"\nRhyme accuracy vs the requested group; {len(test)} test prompts x {len(seeds)} seeds; mean "
          "[two-way bootstrap 95% CI] (t interval over seeds)")
    for key, res in results.items():
        b = res["budget"]
        print(f"\n**T = {key} optimizer steps** (SFT batch {args.batch}; phonetic: memorize {b['memorize']} + "
              f"understand {b['understand']} at batch {args.knowledge_batch}, then SFT "
              f"{b['total'] - b['memorize'] - b['understand']})\n")
        print("| arm | rhyme accuracy | t over seeds | per seed | tokens trained on | training CPU s per run |")
        print("|---|---|---|---|---|---|")
        print(f"| floor: requested group's base rate | {floor:.3f} | | | | |")
        for r in res["arms"].values():
            print(f"| {r['label']} | {fmt(r['bootstrap'])} | {fmt(r['t_over_seeds'])} | "
                  + " / ".join(f"{v:.3f}" for v in r["per_seed"].values())
                  + f" | {r['tokens_seen_est'] / 1e3:.0f}k | {r['train_cpu_s']:.0f} |")
        print(f"| reference: the held-out songs | {reference:.3f} | | | | |")
        for name, d in res["differences"].items():
            mark = " (both CIs exclude 0)" if d["both_exclude_0"] else ""
            print(f"| difference {name}{mark} | {fmt_diff(d['bootstrap'])} | {fmt_diff(d['t_over_seeds'])} | "
                  + " / ".join(f"{v:+.3f}" for v in d["per_seed"].values()) + " | | |")
    print(f"\nwall {timing['wall_s'] / 60:.1f} min, {timing['cpu_s']:.0f} CPU s, {args.workers} workers x 1 thread; "
          f"load average {timing['load_average']}; import torch {torch_import['wall_s']} s wall; "
          f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
