"""The method on a real pretrained model: rhyme control on 宋词 and on modern prompts, fluency beside it, CIs.

bench/rhyme_control.py's design and statistics on a model that already reads and writes Chinese (default
``builtin:gemma-3-270m-zh``: Gemma 3 270M base, its vocabulary trimmed to Chinese; ``--model`` takes any model name a
recipe takes).  Does the seed's premise hold (the base model near the rhyme floor), do hints help, does phonetic
injection earn its steps, and is none of it bought with fluency?

Data: training = ``--train-songs`` 宋词 from ../shared/data/chinese-poetry/songci (read in place, as
rhyme_control.py selects them: mostly one rhyme group, short) + the project's 130 demo songs (builtin:demo-songs),
one file, so every trained arm learns both kinds in one run.  Test prompts, the same for every arm and seed:
``--songci-prompts`` held-out 宋词 (tune name, rhyme group, lines and their lengths, as training states them) and
the modern prompts of builtin:eval-prompts (every one asks for a rhyme group; most for structure and line lengths).

Arms (``--arms``; each arm x seed is one run in its own folder, so arms can be run alone and ``--reuse`` picks up
finished runs):
  zero-shot   the base model, prompted with the request alone (its chat template)
  few-shot    the base model, two example songs (request -> song turns, drawn per seed) before the request
  plain       `lyrictool inject` utilize stage only: SFT without hints, T optimizer steps
  hints       the same with hints (〔group〕 before each line's last character), T steps
  phonetic    memorize M + understand Q steps of builtin:phonetic, then SFT with hints for T - M - Q steps
  rs          after SFT (``--after-sft``): from the hints model, one `lyrictool rejection-sample` round (K samples per
              prompt on fresh requests, the best by the rule rewards, SFT on them for R steps)
  grpo        after SFT: from the hints model, `lyrictool ppo` (GRPO, the rule rewards) for G steps
  guard       after SFT: the hints model as it is, sampled with the rhyme guard (``rhyme_guard: true``: after the
              model's own hint 〔G〕 only characters of group G, then a line end; lyrictool.generation.guard)
  rs-guard    after SFT: the rs round with its K samples guarded, then sampled with the guard
Every trained arm: LoRA r=16 on all linear layers (merged after each stage), bf16 autocast on the CPU
(``train.bf16``, ``use_cpu``), activation checkpointing off; a seed changes the LoRA init, the data order and the
samples (base arms: the samples and the few-shot examples).

Metrics per generated song (one sample per prompt and seed): rhyme accuracy (share of lines in the requested group,
lyrictool.metrics.song_metrics), and beside it the fluency a real model makes measurable: perplexity of the lyric
lines under the frozen base model (``--model``; per song exp(mean token NLL), the lines and their end token,
reported as the geometric mean over songs, differences as ratios), repeated lines and repeated rhyme characters
(lyrictool.metrics.repeated_lines / repeated_rhyme_chars: "rhymes" must not mean "repeats one rhyming
character"), distinct-2, line-length accuracy and structure accuracy (where the prompt asks for them).

Intervals, as rhyme_control.py: per arm the mean over seeds x prompts with a two-way bootstrap 95% CI
(lyrictool.stats.seeds_by_items_bootstrap) and a Student t 95% CI over the per-seed means (lyrictool.stats.mean_ci95);
per difference of arms the same on the per-seed, per-prompt differences; "real" only when both exclude 0.

    python bench/real_rhyme.py                                 # 3 seeds, 5 arms: runs/bench/real_rhyme/ (<= 90 min)
    python bench/real_rhyme.py --arms hints --seeds 3          # one arm alone (fits the box's free time)
    python bench/real_rhyme.py --seeds 5 --reuse               # + seeds 3, 4; finished runs are read back
    python bench/real_rhyme.py --after-sft --reuse             # + rs, grpo, guard, rs-guard from each hints model
    python bench/real_rhyme.py --quick                         # smoke on builtin:tiny-zh, 1 seed, every arm (< 2 min)

Prints markdown tables and writes results.json (per-seed, per-prompt scores and samples, CIs, wall / CPU time,
load average, ``import torch`` time).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rhyme_control import (
    arm_recipe,
    content_key,
    fmt,
    fmt_diff,
    has_weights,
    interval_fields,
    load_songs,
    parse_budget,
    reused_scores,
    start_timing,
    tokens_seen,
)

from lyrictool.eval.fluency import lyrics_nll, sung_lines

ARMS = {"zero-shot": "base model, zero-shot", "few-shot": "base model, 2 example songs in the prompt",
        "plain": "plain SFT", "hints": "SFT + hints", "phonetic": "phonetic injection + SFT + hints",
        "rs": "SFT + hints, then 1 rejection-sampling round", "grpo": "SFT + hints, then GRPO",
        "guard": "SFT + hints, sampled with the rhyme guard",
        "rs-guard": "SFT + hints, then 1 rejection-sampling round, guarded"}
BASE_ARMS = ("zero-shot", "few-shot")
TRAINED_ARMS = ("plain", "hints", "phonetic")
AFTER_ARMS = ("rs", "grpo", "rs-guard")
GUARD_ARMS = ("guard", "rs-guard")  # sampled with rhyme_guard (lyrictool.generation.guard); rs-guard's round too
LATER_ARMS = ("rs", "grpo", "guard", "rs-guard")  # from each seed's hints model (--after-sft adds them)
# differences a conclusion rests on: (a, b) -> b - a
DIFFS = (("zero-shot", "few-shot"), ("few-shot", "plain"), ("plain", "hints"), ("hints", "phonetic"),
         ("plain", "phonetic"), ("few-shot", "hints"), ("hints", "rs"), ("hints", "grpo"), ("hints", "guard"),
         ("guard", "rs-guard"), ("few-shot", "rs-guard"))
PROMPT_SETS = {"songci": "held-out 宋词 requests", "modern": "modern requests (builtin:eval-prompts)"}
# per song, the figures reported; log_ppl is shown as perplexity (exp), its differences as ratios
METRICS = ("rhyme_accuracy", "log_ppl", "repeated_lines", "repeated_rhyme_chars", "distinct_2",
           "line_length_accuracy", "structure_accuracy", "rhyme_accuracy_near", "format_validity")
SHOWN = {"rhyme_accuracy": "rhyme", "log_ppl": "perplexity (base)", "repeated_lines": "repeated lines",
         "repeated_rhyme_chars": "repeated rhyme chars", "distinct_2": "distinct-2",
         "line_length_accuracy": "line length", "structure_accuracy": "structure",
         "format_validity": "format valid"}  # a base model may echo the request: its lines then "rhyme" as asked
CONTROLS = ["genre", "title", "topic", "rhyme", "scheme", "structure", "line_lengths"]
DERIVE = ["rhyme", "structure", "line_lengths"]


# --------------------------------------------------------------------------------------------------------------
# Data and prompts


def request_controls(song: dict) -> dict:
    """What a training row of this song states (the data spec below derives structure and line lengths)."""
    from lyrictool.controls import derive_controls

    given = {k: v for k, v in song.get("controls", {}).items() if v}
    need = [c for c in DERIVE if c not in given]
    return {**given, **derive_controls(song["lyrics"], need)}


def few_shot_prompt(tokenizer, examples: list[dict], controls: dict) -> str:
    """The request after two (request -> song) turns, through the model's chat template (plain text without one)."""
    from lyrictool.controls import build_prompt

    msgs = []
    for ex in examples:
        msgs += [{"role": "user", "content": build_prompt(request_controls(ex))},
                 {"role": "assistant", "content": ex["lyrics"]}]
    msgs.append({"role": "user", "content": build_prompt(controls)})
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in msgs) + "\n\n"


def song_scores(text: str, controls: dict, log_ppl: float, prompt_set: str) -> dict:
    """One song's figures.  Structure is not scored on 宋词: they have no section tags, so the derived request (one
    verse of n lines) is stated for them as in training, but an untagged song never matches its section name (the
    held-out songs themselves would score 0)."""
    from lyrictool.lyrics import parse
    from lyrictool.metrics import repeated_lines, repeated_rhyme_chars, song_metrics

    m = song_metrics(text, controls)
    lines = parse(text).lines
    rrc = repeated_rhyme_chars(lines)
    return {"rhyme_accuracy": m["rhyme_accuracy"] or 0.0, "rhyme_accuracy_near": m["rhyme_accuracy_near"] or 0.0,
            "log_ppl": log_ppl, "repeated_lines": repeated_lines(lines),
            "repeated_rhyme_chars": rrc if rrc is not None else 0.0,  # no rhyming line: no character repeated
            "distinct_2": m["distinct_2"], "line_length_accuracy": m["line_length_accuracy"],
            "structure_accuracy": m["structure_accuracy"] if prompt_set != "songci" else None,
            "format_validity": m["format_validity"],
            "n_lines": m["n_lines"]}


# --------------------------------------------------------------------------------------------------------------
# One run: train (or not), sample once per prompt, score


def after_recipe(arm: str, job: dict, out: Path):
    """The `lyrictool rejection-sample` / `lyrictool ppo` recipe that continues from this seed's hints model."""
    from lyrictool.train.ppo import PPORecipe
    from lyrictool.train.rejection_sample import RejectionSampleRecipe

    cfg = job["cfg"]
    model = {"name": job["hints_dir"], "lora": cfg["lora"]}
    data = {"train": job["after_prompts"], "hints": "line_end", "controls": CONTROLS, "derive": DERIVE}
    rewards = [{"name": "rhyme", "weight": 1.0}, {"name": "structure", "weight": 0.5},
               {"name": "line_length", "weight": 0.5}, {"name": "format", "weight": 1.0}]
    common = {"learning_rate": cfg["after_lr"], "gradient_checkpointing": False, "logging_steps": 5,
              "dataloader_pin_memory": False, **cfg["cpu_train"]}
    if arm in ("rs", "rs-guard"):
        recipe = RejectionSampleRecipe.model_validate({
            "model": model, "data": {**data, "max_rows": cfg["rs_prompts"]}, "rewards": rewards, "finetune": True,
            "sampling": {"k": cfg["rs_k"], "temperature": cfg["temperature"], "top_p": 0.95,
                         "max_new_tokens": cfg["max_new_tokens"], "batch_size": cfg["batch_size"],
                         "rhyme_guard": arm == "rs-guard"},
            "train": {**common, "max_steps": cfg["rs_steps"], "per_device_train_batch_size": cfg["batch"],
                      "max_length": cfg["max_length"]},
            "output_dir": str(out), "seed": job["seed"]})
    else:
        recipe = PPORecipe.model_validate({
            "model": model, "algorithm": "grpo", "data": data, "rewards": rewards,
            "train": {**common, "max_steps": cfg["grpo_steps"], "num_generations": cfg["grpo_group"],
                      "per_device_train_batch_size": cfg["grpo_group"] * cfg["grpo_prompts_per_step"],
                      "max_completion_length": cfg["max_new_tokens"], "temperature": 1.0, "beta": 0.01},
            "eval_generation": {"num_prompts": 0},
            "output_dir": str(out), "seed": job["seed"]})
    recipe._source = "bench/real_rhyme.py"
    return recipe


def eval_key(job: dict) -> str:
    """What the scores depend on besides the trained model: the prompts and the sampling settings."""
    cfg = job["cfg"]
    what = [job["prompts"], cfg["max_new_tokens"], cfg["temperature"], job["base"], job.get("examples")]
    return content_key(what)


def drop_weights(out: Path, keep_final: bool) -> None:
    """Free the disk a scored run no longer needs: the stage and round folders, and unless ``keep_final`` the final
    weights too (summary, recipe, samples and log stay)."""
    for p in list(out.glob("stage-*")) + list(out.glob("round-*")):
        shutil.rmtree(p, ignore_errors=True)
    if not keep_final:
        for p in out.glob("*.safetensors"):
            p.unlink()


def run_job(job: dict) -> dict:
    """Train one arm for one seed (or reuse it), sample once per test prompt, score; one run's log in log.txt."""
    import torch

    torch.set_num_threads(job["threads"])
    cpu0, t0 = time.process_time(), time.perf_counter()
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    arm, cfg, seed = job["arm"], job["cfg"], job["seed"]
    key = eval_key(job)
    done = out / "scores.json"
    if (prev := reused_scores(out, key, job["reuse"])) is not None:
        return prev
    with open(out / "log.txt", "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        from lyrictool.generation import generate_lyrics, generate_texts
        from lyrictool.modeling import load_model, load_tokenizer
        from lyrictool.recipes import ModelSpec

        summary, train_info, model_dir, after = {}, {}, job["base"], {}
        if arm == "guard":  # the hints model as it is, sampled with the guard: nothing to train
            model_dir = job["hints_dir"]
            if not has_weights(Path(model_dir)):
                raise RuntimeError(f"guard seed {seed}: no hints model in {model_dir} (run the hints arm with this "
                                   "--out first; it keeps its weights)")
        elif arm not in BASE_ARMS:
            model_dir = str(out)
            timing = out / "train_time.json"
            if job["reuse"] and (out / "summary.json").exists() and has_weights(out) and timing.exists():
                summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
                train_info = {**json.loads(timing.read_text(encoding="utf-8")), "reused": True}
            else:
                if (out / "summary.json").exists() and not has_weights(out):
                    (out / "summary.json").unlink()
                if arm in AFTER_ARMS:
                    from lyrictool.train.ppo import run_ppo
                    from lyrictool.train.rejection_sample import run_rejection_sample

                    if not has_weights(Path(job["hints_dir"])):
                        raise RuntimeError(f"{arm} seed {seed}: no hints model in {job['hints_dir']} (run the hints "
                                           "arm with this --out first; it keeps its weights)")
                    recipe = after_recipe(arm, job, out)
                    summary = (run_ppo if arm == "grpo" else run_rejection_sample)(recipe)
                    m = summary["metrics"]
                    if arm != "grpo":  # what the round found: its candidates' and winners' rewards
                        steps = m["rounds"][0]["finetune"]["global_step"]
                        after = {k: m["rounds"][0].get(k) for k in ("best_reward_mean", "worst_reward_mean",
                                                                     "candidate_reward_mean", "best_components_mean")}
                    else:  # the reward and KL at the start and end of GRPO
                        steps = m["global_step"]
                        after = {k: m.get(k) for k in ("reward_first5", "reward_last5", "kl_last5")}
                    tokens = None
                else:
                    from lyrictool.train.inject import run_inject

                    recipe = arm_recipe(arm, job["budget"], seed, job["base"], Path(job["train_path"]), out, cfg,
                                        model={"lora": cfg["lora"]},
                                        data={"controls": CONTROLS, "derive": DERIVE},
                                        train_extra=cfg["cpu_train"])
                    summary = run_inject(recipe)
                    steps = sum(s["steps"] or 0 for s in summary["stages"])
                    tokens = sum(tokens_seen(recipe, load_tokenizer(job["base"])))
                train_info = {"train_s": round(time.perf_counter() - t0, 1),
                              "train_cpu_s": round(time.process_time() - cpu0, 1), "optimizer_steps": steps,
                              "tokens_seen_est": tokens, **({"after_sft": after} if arm in AFTER_ARMS else {})}
                timing.write_text(json.dumps(train_info), encoding="utf-8")
        lm = load_model(ModelSpec(name=model_dir), for_training=False, announce=False)
        gen0, gcpu0 = time.perf_counter(), time.process_time()
        samples = {}
        for name, prompts in job["prompts"].items():
            controls = [p["controls"] for p in prompts]
            kw = {"n": 1, "max_new_tokens": cfg["max_new_tokens"], "temperature": cfg["temperature"], "top_p": 0.95,
                  "batch_size": cfg["batch_size"], "seed": seed, "rhyme_guard": arm in GUARD_ARMS}
            if arm == "few-shot":
                texts = [few_shot_prompt(lm.tokenizer, job["examples"][name], c) for c in controls]
                got = generate_texts(lm.model, lm.tokenizer, texts, **kw)
            else:
                got = generate_lyrics(lm.model, lm.tokenizer, controls, **kw)
            samples[name] = [s[0] for s in got]
        gen_s, gen_cpu_s = time.perf_counter() - gen0, time.process_time() - gcpu0
        del lm
        base = load_model(ModelSpec(name=job["base"]), for_training=False, announce=False)
        scores, reference = {}, {}
        for name, prompts in job["prompts"].items():
            nll = lyrics_nll(base.model, base.tokenizer, [sung_lines(s.text) for s in samples[name]])
            scores[name] = [song_scores(s.text, p["controls"], x, name) for s, p, x in zip(samples[name], prompts, nll)]
            if arm == "zero-shot" and all("lyrics" in p for p in prompts):  # the held-out songs themselves
                ref = lyrics_nll(base.model, base.tokenizer, [sung_lines(p["lyrics"]) for p in prompts])
                reference[name] = [song_scores(p["lyrics"], p["controls"], x, name) for p, x in zip(prompts, ref)]
    res = {"arm": arm, "seed": seed, "eval_key": key, "reused": False, "scores": scores, "reference": reference,
           "samples": {n: [{"id": p["id"], "lyrics": s.text, "raw": s.raw, "new_tokens": s.new_tokens}
                           for p, s in zip(job["prompts"][n], samples[n])] for n in samples},
           "train": train_info, "stages": [{k: s.get(k) for k in ("name", "steps", "train_loss_first",
                                                                    "train_loss_last", "time_s")}
                                           for s in summary.get("stages", [])],
           "generate_s": round(gen_s, 1), "generate_cpu_s": round(gen_cpu_s, 1),
           "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - cpu0, 1)}
    done.write_text(json.dumps(res, ensure_ascii=False, indent=1), encoding="utf-8")
    if arm not in BASE_ARMS + ("guard",) and not job["keep_all"]:
        drop_weights(out, keep_final=job["keep"])
    return res


# --------------------------------------------------------------------------------------------------------------
# Statistics


def matrix(runs: dict, arm: str, seeds: list[int], prompt_set: str, metric: str, cols: list[int]):
    import numpy as np

    return np.array([[runs[(arm, s)]["scores"][prompt_set][i][metric] for i in cols] for s in seeds], dtype=float)


def aggregate(runs: dict, arms: list[str], seeds: list[int], n_prompts: dict, resamples: int) -> dict:
    """Per prompt set and metric: each arm's mean with both CIs, and each difference of arms with both CIs, over
    the prompts where the metric applies (line length and structure: where the prompt asks for them)."""
    from lyrictool.stats import mean_ci95, seeds_by_items_bootstrap

    out = {}
    for ps, n in n_prompts.items():
        res = {}
        for metric in METRICS:
            cols = [i for i in range(n) if all(runs[(a, s)]["scores"][ps][i][metric] is not None
                                               for a in arms for s in seeds)]
            if not cols:
                continue
            table = {a: matrix(runs, a, seeds, ps, metric, cols) for a in arms}
            m = {"prompts": len(cols), "arms": {}, "differences": {}}
            for a in arms:
                per_seed = table[a].mean(axis=1).tolist()
                m["arms"][a] = {"per_seed": dict(zip(map(str, seeds), per_seed)),
                                "bootstrap": interval_fields(seeds_by_items_bootstrap(table[a], resamples=resamples)),
                                "t_over_seeds": interval_fields(mean_ci95(per_seed))}
            for a, b in DIFFS:
                if a in table and b in table:
                    d = table[b] - table[a]
                    boot = seeds_by_items_bootstrap(d, resamples=resamples)
                    t_ci = mean_ci95(d.mean(axis=1).tolist())
                    both = boot["significant"] and t_ci["ci_low"] is not None and (
                        t_ci["ci_low"] > 0 or t_ci["ci_high"] < 0)
                    m["differences"][f"{b} - {a}"] = {
                        "per_seed": dict(zip(map(str, seeds), d.mean(axis=1).tolist())),
                        "bootstrap": interval_fields(boot), "t_over_seeds": interval_fields(t_ci),
                        "both_exclude_0": both}
            res[metric] = m
        out[ps] = res
    return out


def fmt_ppl(ci: dict) -> str:
    """A mean log-perplexity interval as the geometric-mean perplexity."""
    if ci["ci_low"] is None:
        return f"{math.exp(ci['mean']):.1f}"
    return f"{math.exp(ci['mean']):.1f} [{math.exp(ci['ci_low']):.1f}, {math.exp(ci['ci_high']):.1f}]"


def fmt_ratio(ci: dict) -> str:
    """A difference of mean log-perplexities as the ratio of geometric-mean perplexities."""
    if ci["ci_low"] is None:
        return f"x{math.exp(ci['mean']):.2f}"
    return f"x{math.exp(ci['mean']):.2f} [{math.exp(ci['ci_low']):.2f}, {math.exp(ci['ci_high']):.2f}]"


def print_tables(results: dict, arms: list[str], seeds: list[int], floors: dict, references: dict) -> None:
    for ps, res in results.items():
        n = res["rhyme_accuracy"]["prompts"]
        print(f"\n**{PROMPT_SETS[ps]}**: {n} prompts x {len(seeds)} seeds; mean [two-way bootstrap 95% CI]; rhyme "
              "also with the t interval over seeds; perplexity of the lyric lines under the frozen base model "
              "(geometric mean; differences as ratios)\n")
        shown = [k for k in SHOWN if k in res]
        print("| arm | rhyme (t over seeds) | " + " | ".join(SHOWN[k] for k in shown) + " |")
        print("|---|---|" + "---|" * len(shown))
        if ps in floors:
            print(f"| floor: requested group's base rate | | {floors[ps]:.3f} |" + " |" * (len(shown) - 1))
        for a in arms:
            cells = [fmt_ppl(res[k]["arms"][a]["bootstrap"]) if k == "log_ppl" else fmt(res[k]["arms"][a]["bootstrap"])
                     for k in shown]
            print(f"| {ARMS[a]} | {fmt(res['rhyme_accuracy']['arms'][a]['t_over_seeds'])} | " + " | ".join(cells) + " |")
        if ps in references:
            ref = references[ps]
            cells = [f"{math.exp(ref[k]):.1f}" if k == "log_ppl" else
                     (f"{ref[k]:.3f}" if ref.get(k) is not None else "") for k in shown]
            print("| reference: the held-out songs | | " + " | ".join(cells) + " |")
        diffs = [d for d in res["rhyme_accuracy"]["differences"]]
        if diffs:
            print("\n| difference | rhyme (t over seeds) | " + " | ".join(SHOWN[k] for k in shown) + " |")
            print("|---|---|" + "---|" * len(shown))
            for name in diffs:
                mark = " (both rhyme CIs exclude 0)" if res["rhyme_accuracy"]["differences"][name]["both_exclude_0"] \
                    else ""
                cells = [fmt_ratio(res[k]["differences"][name]["bootstrap"]) if k == "log_ppl" else
                         fmt_diff(res[k]["differences"][name]["bootstrap"]) for k in shown]
                print(f"| {name}{mark} | {fmt_diff(res['rhyme_accuracy']['differences'][name]['t_over_seeds'])} | "
                      + " | ".join(cells) + " |")


# --------------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="the pretrained base model (any model name a recipe takes; default "
                    "builtin:gemma-3-270m-zh, --quick: builtin:tiny-zh); also the frozen model that measures "
                    "perplexity")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "chinese-poetry" / "songci")
    ap.add_argument("--train-songs", type=int, default=400, help="宋词 in the training file (+ the 130 demo songs)")
    ap.add_argument("--songci-prompts", type=int, default=32, help="held-out 宋词 requests")
    ap.add_argument("--modern-prompts", type=int, default=42, help="builtin:eval-prompts requests (at most 42)")
    ap.add_argument("--max-lines", type=int, default=10)
    ap.add_argument("--max-chars", type=int, default=50)
    ap.add_argument("--budget", type=parse_budget, default=parse_budget("40:10:4"),
                    help="T:M:Q: every trained arm takes T optimizer steps in all; the phonetic arm M memorize + Q "
                         "understand + T-M-Q SFT steps (default 40:10:4)")
    ap.add_argument("--seeds", type=int, default=3, help="seeds per arm (0, 1, ...)")
    ap.add_argument("--arms", default=",".join(BASE_ARMS + TRAINED_ARMS), help=f"comma-separated, of {', '.join(ARMS)}")
    ap.add_argument("--after-sft", action="store_true", help="add the rs, grpo, guard and rs-guard arms (from each "
                    "seed's hints model)")
    ap.add_argument("--chars", type=int, default=400, help="characters described by the phonetic knowledge")
    ap.add_argument("--batch", type=int, default=8, help="batch size of the SFT stages")
    ap.add_argument("--knowledge-batch", type=int, default=24, help="batch of the memorize / understand stages "
                    "(rows ~3x shorter than a song)")
    ap.add_argument("--lr", type=float, default=2e-4, help="LoRA learning rate of every training stage")
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=256, help="tokens per training row")
    ap.add_argument("--max-new-tokens", type=int, default=160)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--batch-size", type=int, default=24, help="prompts per generate() call")
    ap.add_argument("--qa-eval-max", type=int, default=20, help="knowledge questions asked after each stage")
    ap.add_argument("--rs-prompts", type=int, default=48, help="rs: fresh requests sampled")
    ap.add_argument("--rs-k", type=int, default=4, help="rs: samples per request")
    ap.add_argument("--rs-steps", type=int, default=12, help="rs: SFT steps on the winners")
    ap.add_argument("--grpo-steps", type=int, default=12)
    ap.add_argument("--grpo-group", type=int, default=4, help="grpo: samples per prompt")
    ap.add_argument("--grpo-prompts-per-step", type=int, default=2)
    ap.add_argument("--after-lr", type=float, default=5e-5, help="learning rate of rs and grpo")
    ap.add_argument("--no-bf16", action="store_true", help="train in fp32 (default: bf16 autocast on the CPU)")
    ap.add_argument("--split-seed", type=int, default=0, help="the train / test split (the same for every seed)")
    ap.add_argument("--workers", type=int, default=2, help="runs at once (processes)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--keep-models", action="store_true", help="keep every trained model (default: only the hints "
                    "arm's, which rs and grpo start from)")
    ap.add_argument("--resamples", type=int, default=4000)
    ap.add_argument("--quick", action="store_true", help="smoke: builtin:tiny-zh, 1 seed, 4 + 4 prompts, 3 steps")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "real_rhyme")
    ap.add_argument("--reuse", action="store_true", help="read back runs already scored in --out (re-sample those "
                    "trained but not scored with these settings)")
    args = ap.parse_args()
    if args.quick:
        args.model, args.seeds, args.songci_prompts, args.modern_prompts = args.model or "builtin:tiny-zh", 1, 4, 4
        args.train_songs, args.chars, args.budget, args.qa_eval_max = 60, 30, parse_budget("3:1:1"), 2
        args.max_new_tokens, args.resamples, args.max_length, args.lr = 24, 300, 128, 1e-3
        args.rs_prompts, args.rs_k, args.rs_steps, args.grpo_steps = 4, 2, 1, 1
        args.grpo_group, args.grpo_prompts_per_step, args.batch, args.knowledge_batch = 2, 2, 4, 8
    args.model = args.model or "builtin:gemma-3-270m-zh"
    arms = list(dict.fromkeys(args.arms.split(",") + (list(LATER_ARMS) if args.after_sft else [])))
    if any(a in LATER_ARMS for a in arms) and "hints" not in arms:
        arms.append("hints")  # what rs and grpo start from and are compared with (read back with --reuse)
    arms = list(dict.fromkeys(arms))
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        ap.error(f"--arms: unknown {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    seeds = list(range(args.seeds))

    from lyrictool.demo import cpu_seconds

    wall0, load, torch_import = start_timing()

    from lyrictool.data import load_records, write_jsonl
    from lyrictool.eval.systems import load_prompts
    from lyrictool.phonetics import line_groups

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    songs = load_songs(args.data, args.max_lines, args.max_chars)
    random.Random(args.split_seed).shuffle(songs)
    n_test, n_train = args.songci_prompts, args.train_songs
    test, train = songs[:n_test], songs[n_test:n_test + n_train]
    fresh = songs[n_test + n_train:n_test + n_train + args.rs_prompts]  # rs / grpo requests no song answers
    demo = [{"lyrics": r.data["lyrics"], "controls": r.data.get("controls") or {}}
            for r in load_records("builtin:demo-songs", what="builtin:demo-songs")]
    train_path = out / "train.jsonl"
    write_jsonl(train_path, train + demo)
    modern = [p for p in load_prompts("builtin:eval-prompts") if p["controls"].get("rhyme")][:args.modern_prompts]
    prompts = {"songci": [{"id": f"songci-{i}", "controls": request_controls(s), "lyrics": s["lyrics"]}
                          for i, s in enumerate(test)],
               "modern": [{"id": p["id"], "controls": p["controls"]} for p in modern]}
    after_path = out / "after_prompts.jsonl"
    write_jsonl(after_path, [{"id": f"fresh-songci-{i}", "controls": request_controls(s)} for i, s in enumerate(fresh)]
                + [{"id": p["id"], "controls": p["controls"]} for p in load_prompts("builtin:demo-prompts")])
    print(f"{len(songs)} usable 宋词: {len(train)} train (+ {len(demo)} demo songs), {len(test)} test; "
          f"{len(modern)} modern prompts; model {args.model}", flush=True)

    line_ends = Counter(g for s in train for g in line_groups(s["lyrics"].split("\n")) if g)
    total = sum(line_ends.values())
    floors = {"songci": sum(line_ends[p["controls"]["rhyme"]] / total for p in prompts["songci"]) / len(test)}

    lora = {"r": args.lora_r, "alpha": 2 * args.lora_r, "dropout": 0.0, "target_modules": "all-linear"}
    cpu_train = {"bf16": not args.no_bf16, "use_cpu": True}
    cfg = {k: getattr(args, k) for k in (
        "lr", "batch", "knowledge_batch", "max_length", "chars", "qa_eval_max", "max_new_tokens", "temperature",
        "batch_size", "rs_prompts", "rs_k", "rs_steps", "grpo_steps", "grpo_group", "grpo_prompts_per_step",
        "after_lr")} | {"lora": lora, "cpu_train": cpu_train}
    demo_pool = [d for d in demo if d["controls"].get("rhyme")]

    def job(arm: str, seed: int) -> dict:
        rng = random.Random(1000 + seed)
        examples = {"songci": rng.sample(train, 2), "modern": rng.sample(demo_pool, 2)} if arm == "few-shot" else None
        return {"arm": arm, "seed": seed, "base": args.model, "budget": args.budget, "train_path": str(train_path),
                "after_prompts": str(after_path), "hints_dir": str(out / f"hints-seed{seed}"), "cfg": cfg,
                "prompts": prompts, "examples": examples, "reuse": args.reuse, "threads": args.threads,
                "keep": args.keep_models or arm == "hints", "keep_all": args.keep_models, "out": str(out / f"{arm}-seed{seed}")}

    # the longest runs first, so the workers finish together; rs and grpo after every hints run
    order = ["phonetic", "hints", "plain", "few-shot", "zero-shot"]
    first = [job(a, s) for a in sorted((a for a in arms if a not in LATER_ARMS), key=order.index) for s in seeds]
    then = [job(a, s) for a in arms if a in LATER_ARMS for s in seeds]
    runs: dict = {}

    def report(r: dict, total: int) -> None:
        runs[(r["arm"], r["seed"])] = r
        mean = {ps: sum(x["rhyme_accuracy"] for x in v) / len(v) for ps, v in r["scores"].items()}
        print(f"-> {r['arm']} seed {r['seed']}: rhyme " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items())
              + f" ({r['wall_s']:.0f} s, {r['cpu_s']:.0f} CPU s{', reused' if r['reused'] else ''}) "
              f"[{len(runs)}/{total}]", flush=True)

    total = len(first) + len(then)
    for batch in (first, then):
        if args.workers > 1 and len(batch) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(min(args.workers, len(batch)),
                                     mp_context=multiprocessing.get_context("spawn")) as pool:
                for f in as_completed([pool.submit(run_job, j) for j in batch]):
                    report(f.result(), total)
        else:
            for j in batch:
                report(run_job(j), total)
    for r in runs.values():
        steps = {"plain": args.budget["total"], "hints": args.budget["total"], "phonetic": args.budget["total"],
                 "rs": args.rs_steps, "rs-guard": args.rs_steps, "grpo": args.grpo_steps}.get(r["arm"])
        if steps is not None and r["train"].get("optimizer_steps") != steps:
            raise SystemExit(f"{r['arm']} seed {r['seed']}: ran {r['train'].get('optimizer_steps')} optimizer steps, "
                             f"not {steps}")
    n_prompts = {ps: len(v) for ps, v in prompts.items()}
    results = aggregate(runs, arms, seeds, n_prompts, args.resamples)
    references = {}
    ref_run = runs.get(("zero-shot", seeds[0]))
    if ref_run and ref_run["reference"].get("songci"):
        rows = ref_run["reference"]["songci"]
        references["songci"] = {k: (sum(x[k] for x in rows if x[k] is not None) / max(1, sum(x[k] is not None
                                                                                           for x in rows)))
                                for k in METRICS}

    load.stop.set()
    timing = {"wall_s": round(time.perf_counter() - wall0, 1), "cpu_s": round(cpu_seconds(), 1),
              "import_torch": torch_import, "load_average": load.summary(), "workers": args.workers,
              "threads_per_run": args.threads, "cpus": os.cpu_count(),
              "train_cpu_s_per_run": {a: round(sum(runs[(a, s)]["train"].get("train_cpu_s", 0) for s in seeds)
                                               / len(seeds), 1) for a in arms},
              "wall_s_per_run": {a: round(sum(runs[(a, s)]["wall_s"] for s in seeds) / len(seeds), 1) for a in arms}}
    summary = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "arms": arms,
               "seeds": seeds, "train_songs": len(train), "demo_songs": len(demo), "prompts": n_prompts,
               "base_rate_floor": floors, "reference_songs": references, "intervals": (
                   "arm: mean over seeds x prompts, two-way bootstrap (seeds and prompts resampled) 95% CI and Student "
                   "t 95% CI over per-seed means; difference: the same on per-seed, per-prompt differences; log_ppl "
                   "is the per-song mean token NLL under the frozen base model (exp: perplexity)"),
               "results": results, "runs": [runs[(a, s)] for a in arms for s in seeds], "timing": timing}
    (out / "results.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")

    print_tables(results, arms, seeds, floors, references)
    for a in arms:
        r = runs[(a, seeds[0])]["samples"]["modern"][0]
        print(f"\n{ARMS[a]}, seed {seeds[0]}, {r['id']}:\n" + "\n".join("    " + x for x in r["lyrics"].split("\n")[:8]))
    print(f"\nwall {timing['wall_s'] / 60:.1f} min, {timing['cpu_s']:.0f} CPU s, {args.workers} workers x "
          f"{args.threads} thread(s); load average {timing['load_average']}; import torch "
          f"{torch_import['wall_s']} s wall; results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
