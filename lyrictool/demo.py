"""`lyrictool demo`: the whole method on the built-in tiny model, offline, in a few minutes on 2 CPU cores.

    0. base              builtin:tiny-zh (random init) with its vocabulary cut to the ~1,400 characters the demo uses
    1. inject            memorize -> understand the phonetics of the demo corpus's characters
    2. sft               lyrics with phonetic hints on the in-house demo songs, from the injected model
    3. score             the lyrics scorer on the demo ratings (good songs and damaged copies); it trains in a
                         second process beside steps 1-2, so a 2-core box uses both cores
    4. rejection-sample  K candidates per prompt from the SFT model for requests no song answers (builtin:demo-prompts),
                         keep the best by scorer + rule rewards, SFT on them
    5. eval              base vs SFT vs final on the eval prompts: side by side, paired bootstrap 95% CIs, report

Each step is the same ``run_*`` function (or command) a user calls, with a recipe written out below, its budget
tuned for effect per CPU second (docs/benchmarks.md, "lyrictool demo").  Every step leaves its model,
``recipe.yaml`` and ``summary.json`` in its own folder under the output directory; the closing screen shows one
song with its rhyme analysis, the time of every step (wall and CPU seconds) and the metric table with final - base
and final - sft, then the verdict: does the final model beat base on rhyme and structure, and (the fluency target)
is its fluency no worse than the SFT model's: repeated lines up by at most 0.05 and, with ``--model``, the upper
95% CI end of its perplexity under the frozen base model at most 10% above the SFT model's.  ``--quick`` runs the same chain for a step or two each; ``--dry-run`` reads every file it uses.
Everything it reads is package data, so it runs from an installed wheel.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

EVAL_PROMPTS = "builtin:eval-prompts"  # package data, like the songs and ratings: the demo runs from an installed wheel
STEPS = ("inject", "sft", "score", "rejection-sample", "eval")
SCHEME = "shisanzhe"


#: LoRA for a pretrained model (``--model``): every linear layer, as recipes/gemma/sft.yaml.
PRETRAINED_LORA = {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": "all-linear"}
#: A pretrained model's budgets (``--model``): it already writes Chinese, so it needs far fewer steps than the
#: random-init tiny model, and each step and each sampled token costs ~100x more on a CPU.  Sized for about 15 minutes
#: on 2 cores with the trimmed builtin:gemma-3-270m-zh: 746 s on the quiet box (docs/real-model.md, run F).
PRETRAINED_BUDGET = {"memorize": 24, "understand": 8, "sft": 45, "rs_prompts": 48, "rs_k": 4, "rs_steps": 6,
                     "rs_lr": 5.0e-5, "eval_prompts": 24, "max_new_tokens": 160, "lr": 5.0e-4}


def demo_recipes(out: Path, *, quick: bool = False, model: str | None = None) -> dict:
    """The five recipes, as a user would write them (validated by the same classes as the YAML files).
    ``quick``: every step for one or two optimizer steps on a few prompts, to check the chain end to end in
    seconds (the models learn nothing).  ``model``: a pretrained model (any ``model.name``, e.g.
    ``builtin:gemma-3-270m-zh``) trained with LoRA through the same chain on its own budgets; the lyrics scorer
    stays the small built-in model, trained beside the chain."""
    from lyrictool.eval.systems import EvalRecipe
    from lyrictool.recipes import SFTRecipe
    from lyrictool.train.inject import InjectRecipe
    from lyrictool.train.rejection_sample import RejectionSampleRecipe

    tiny = {"name": str(out / "base")}  # builtin:tiny-zh with its vocabulary cut to the demo's characters
    # TRL recomputes activations by default (gradient checkpointing): ~20% of a step, for memory a 1M-parameter
    # model does not need (12 SFT steps: 8.1 -> 6.5 CPU s without it)
    cpu = {"gradient_checkpointing": False}
    songs = {"train": "builtin:demo-songs", "hints": "line_end", "scheme": SCHEME}
    if model is not None:
        return pretrained_recipes(out, model, quick=quick, tiny=tiny, songs=songs)
    recipes = {
        "inject": InjectRecipe.model_validate({
            "model": tiny,
            "knowledge": [{"builtin": "phonetic", "chars_from": "builtin:demo-songs", "max_chars": 200}],
            "augment": {"paraphrases": 2, "permute": True},
            "qa_eval_max": 32,
            "stages": [
                {"name": "memorize", "train": {**cpu, "max_steps": 160, "learning_rate": 3.0e-3, "logging_steps": 40,
                                               "per_device_train_batch_size": 32, "warmup_steps": 10}},
                {"name": "understand", "train": {**cpu, "max_steps": 40, "learning_rate": 2.0e-3, "logging_steps": 40,
                                                 "per_device_train_batch_size": 32}},
            ],
            "output_dir": str(out / "inject"), "seed": 42}),
        "sft": SFTRecipe.model_validate({
            "model": {"name": str(out / "inject")},
            "data": {**songs, "eval_fraction": 0.1, "control_dropout": 0.1},
            # 160 + 40 knowledge steps and 170 SFT steps: sft rhyme 0.56, final 0.63, ~110 CPU s in the main process's
            # steps; 200 + 40 and 200 steps: sft 0.72, final 0.79 in 133 CPU s (too slow for 5 min on a box half as fast)
            "train": {**cpu, "max_steps": 170, "learning_rate": 5.0e-3, "per_device_train_batch_size": 8,
                      "lr_scheduler_type": "cosine", "warmup_steps": 10, "logging_steps": 25,
                      "eval_strategy": "no"},  # one eval-loss pass at the end, not one per epoch
            "eval_generation": {"num_prompts": 0},
            "output_dir": str(out / "sft"), "seed": 42}),
        "score": score_recipe(out, tiny),
        "rejection-sample": RejectionSampleRecipe.model_validate({
            "model": {"name": str(out / "sft")},
            # requests no song answers (builtin:demo-prompts: one song's shape, another's topic, a new rhyme group),
            # sampled at the eval temperature: the winners must be better than what the model writes anyway.
            # Sampling the training songs' own prompts at T=1.0 (the old setting) gave winners with rhyme 0.60 (the
            # SFT model writes 0.72 at T=0.7), and fine-tuning on them cost rhyme -0.04/-0.05 (two eval seeds):
            # on its training prompts the model has gold songs its samples can only approximate.  These prompts at
            # T=0.7 give winners at rhyme 0.86, structure 0.83, line length 0.73; 20 x 8 steps at lr 1e-3 on them:
            # final - sft rhyme +0.074 [-0.052, +0.194], structure +0.018, line length +0.033 (docs/benchmarks.md)
            "data": {**songs, "train": "builtin:demo-prompts", "max_rows": 48},
            "sampling": {"k": 8, "temperature": 0.7, "top_p": 0.95, "max_new_tokens": 180, "batch_size": 16},
            "rewards": [{"name": "scorer", "weight": 0.5, "path": str(out / "score")},
                        {"name": "rhyme", "weight": 1.0}, {"name": "structure", "weight": 1.0},
                        {"name": "line_length", "weight": 0.5}, {"name": "format", "weight": 1.0}],
            "finetune": True,
            "train": {**cpu, "max_steps": 20, "learning_rate": 1.0e-3, "per_device_train_batch_size": 8,
                      "logging_steps": 10},
            "output_dir": str(out / "rejection-sample"), "seed": 42}),
    }
    recipes["eval"] = EvalRecipe.model_validate({
        "systems": [{"name": "base", "model": str(out / "base")},
                    {"name": "sft", "model": str(out / "sft")},
                    {"name": "final", "model": str(out / "rejection-sample")}],
        "prompts": EVAL_PROMPTS,
        "generation": {"num_prompts": 0, "max_new_tokens": 180, "temperature": 0.7, "batch_size": 21},
        "scheme": SCHEME,
        "scorer": str(out / "score"),
        "bootstrap_resamples": 2000,
        "output_dir": str(out / "eval"), "seed": 42})
    return finish_recipes(recipes, quick)


def score_recipe(out: Path, tiny: dict):
    """The lyrics scorer on the demo ratings: the small built-in model in either chain, trained beside it."""
    from lyrictool.train.score import ScoreRecipe

    return ScoreRecipe.model_validate({
        "model": tiny,
        "data": {"train": "builtin:demo-ratings", "eval_fraction": 0.1},
        "aspects": {"language": 1.0, "genre": 1.0, "content": 1.0},
        "margin_scale": 0.5,
        "train": {"gradient_checkpointing": False, "max_steps": 40, "learning_rate": 1.0e-3,
                  "per_device_train_batch_size": 16, "warmup_steps": 5, "max_length": 320, "logging_steps": 20},
        "output_dir": str(out / "score"), "seed": 42})


def finish_recipes(recipes: dict, quick: bool) -> dict:
    """``--quick``'s cuts (one or two steps, a few prompts), and each recipe's name for messages."""
    if quick:
        for train in [s.train for s in recipes["inject"].stages] + [recipes[n].train for n in ("sft", "score")]:
            train.update(max_steps=2, warmup_steps=0)
        recipes["inject"].qa_eval_max = 4
        recipes["rejection-sample"].data.max_rows = 4
        recipes["rejection-sample"].sampling.max_new_tokens = 24
        recipes["rejection-sample"].train.update(max_steps=1)
        recipes["eval"].generation.num_prompts = 6
        recipes["eval"].generation.max_new_tokens = 24
        recipes["eval"].bootstrap_resamples = 200
    for name, recipe in recipes.items():
        recipe._source = f"lyrictool demo ({name})"
    return recipes


def pretrained_recipes(out: Path, model: str, *, quick: bool, tiny: dict, songs: dict) -> dict:
    """The demo's chain for a pretrained model: LoRA on every step that trains it (each merged for the next step,
    as inject and rejection-sample do), bf16 autocast where the CPU computes it (``train.bf16``), no activation
    checkpointing, and :data:`PRETRAINED_BUDGET`; the base system in the eval is the model prompted as it is."""
    from lyrictool.eval.systems import EvalRecipe
    from lyrictool.modeling import cpu_computes_bf16
    from lyrictool.recipes import SFTRecipe
    from lyrictool.train.inject import InjectRecipe
    from lyrictool.train.rejection_sample import RejectionSampleRecipe

    b = PRETRAINED_BUDGET
    lora = {"lora": PRETRAINED_LORA}
    cpu = {"gradient_checkpointing": False, "bf16": cpu_computes_bf16()}
    recipes = {
        "inject": InjectRecipe.model_validate({
            "model": {"name": model, **lora},
            "knowledge": [{"builtin": "phonetic", "chars_from": "builtin:demo-songs", "max_chars": 200}],
            "augment": {"paraphrases": 2, "permute": True},
            "qa_eval_max": 16,
            "stages": [
                {"name": "memorize", "train": {**cpu, "max_steps": b["memorize"], "learning_rate": b["lr"],
                                               "per_device_train_batch_size": 16, "warmup_steps": 2,
                                               "logging_steps": 8}},
                {"name": "understand", "train": {**cpu, "max_steps": b["understand"], "learning_rate": b["lr"],
                                                 "per_device_train_batch_size": 16, "logging_steps": 8}},
            ],
            "output_dir": str(out / "inject"), "seed": 42}),
        "sft": SFTRecipe.model_validate({
            "model": {"name": str(out / "inject"), **lora},
            "data": {**songs, "eval_fraction": 0.1, "control_dropout": 0.1},
            "train": {**cpu, "max_steps": b["sft"], "learning_rate": b["lr"], "per_device_train_batch_size": 8,
                      "lr_scheduler_type": "cosine", "warmup_steps": 3, "logging_steps": 5, "max_length": 320,
                      "eval_strategy": "no"},
            "eval_generation": {"num_prompts": 0},
            "output_dir": str(out / "sft"), "seed": 42}),
        "score": score_recipe(out, tiny),
        "rejection-sample": RejectionSampleRecipe.model_validate({
            "model": {"name": str(out / "sft"), **lora},
            "data": {**songs, "train": "builtin:demo-prompts", "max_rows": b["rs_prompts"]},
            # unguarded: the rhyme reward then picks the samples whose own endings rhyme (guarded samples all rhyme,
            # and training on them taught the model to end every line in one character of the group: 往事一梦波 /
            # 时光飞过我的波, repeated lines 0.05 -> 0.42)
            "sampling": {"k": b["rs_k"], "temperature": 0.9, "top_p": 0.95, "max_new_tokens": b["max_new_tokens"],
                         "batch_size": 16},
            "rewards": [{"name": "scorer", "weight": 0.5, "path": str(out / "score")},
                        {"name": "rhyme", "weight": 1.0}, {"name": "structure", "weight": 1.0},
                        {"name": "line_length", "weight": 0.5}, {"name": "format", "weight": 1.0},
                        # guarded samples all rhyme: without it the round picks songs that loop a rhyming line
                        {"name": "repetition", "weight": 2.0}],
            "finetune": True,
            "train": {**cpu, "max_steps": b["rs_steps"], "learning_rate": b["rs_lr"],
                      "per_device_train_batch_size": 8, "logging_steps": 4},
            "output_dir": str(out / "rejection-sample"), "seed": 42}),
    }
    recipes["eval"] = EvalRecipe.model_validate({
        "systems": [{"name": "base", "model": model},
                    {"name": "sft", "model": str(out / "sft")},
                    {"name": "final", "model": str(out / "rejection-sample")}],
        "prompts": EVAL_PROMPTS,
        "generation": {"num_prompts": b["eval_prompts"], "max_new_tokens": b["max_new_tokens"], "temperature": 0.7,
                       "batch_size": b["eval_prompts"], "rhyme_guard": True},
        "scheme": SCHEME,
        "scorer": str(out / "score"),
        # fluency: every system's songs scored under the base model as given, frozen (the base system's model)
        "fluency": {"model": model, "batch_size": 8},
        "bootstrap_resamples": 2000,
        "output_dir": str(out / "eval"), "seed": 42})
    return finish_recipes(recipes, quick)


def demo_texts(recipes: dict) -> list[str]:
    """Every text the demo trains, samples or evaluates on, as its steps render them: the base model's vocabulary."""
    from lyrictool.controls import build_prompt
    from lyrictool.data.lyrics_rows import sft_datasets
    from lyrictool.eval.systems import load_prompts
    from lyrictool.train.inject import knowledge_rows

    texts = [Path(p).read_text(encoding="utf-8") for p in data_files(recipes).values()]
    ks, _, _ = knowledge_rows(recipes["inject"])
    texts += ks.texts + [q["question"] + q["answer"] for q in ks.qa]
    rows, held, _, _ = sft_datasets(recipes["sft"].data, recipes["sft"].seed)
    texts += [m["content"] for row in rows + held for m in row["prompt"] + row["completion"]]
    for source in (recipes["eval"].prompts, recipes["rejection-sample"].data.train):
        texts += [build_prompt(p["controls"]) for p in load_prompts(source)]
    texts.append("system user assistant")  # the chat template's roles
    return texts


def build_base(recipes: dict, out: Path) -> Path:
    """The demo's base model: builtin:tiny-zh (same architecture, random init) with its vocabulary cut from 6,894
    characters to the ~1,400 the demo uses, which makes every CPU training step about 1.8x cheaper.  A choice for
    the built-in demo model only: a user's model keeps its tokenizer."""
    from lyrictool.builtin_models import save_tiny_model

    return save_tiny_model(out / "base", demo_texts(recipes))


def data_files(recipes: dict) -> dict[str, str]:
    """Every data source the demo's recipes read, resolved to its file (package data: no source checkout needed)."""
    from lyrictool.data import resolve_source

    sources = [recipes["inject"].knowledge[0].chars_from, recipes["sft"].data.train, recipes["score"].data.train,
               recipes["rejection-sample"].data.train, recipes["eval"].prompts]
    return {s: resolve_source(s) for s in dict.fromkeys(sources)}


def dry_run(output_dir: Path | str = "runs/demo", *, model: str | None = None) -> dict[str, int]:
    """Check the five recipes and read every data file the demo uses; load no model, train nothing."""
    from rich.console import Console

    from lyrictool.data import load_records
    from lyrictool.eval.systems import load_prompts
    from lyrictool.modeling import resolve_model_path

    console = Console(highlight=False, soft_wrap=True)
    recipes = demo_recipes(Path(output_dir), model=model)
    if model is not None:
        resolve_model_path(model, convert=False)  # installed, or one line naming the extra
    rows = {}
    for source, path in data_files(recipes).items():
        n = len(load_prompts(source)) if source == EVAL_PROMPTS else len(load_records(source, what=source))
        rows[source] = n
        console.print(f"  {source}: {path} ({n} rows)")
    console.print(f"recipes OK: {', '.join(recipes)}; dry run: no model loaded, nothing written")
    return rows


SHOWN_METRICS = ("rhyme_accuracy", "structure_accuracy", "line_length_accuracy", "format_validity", "rhyme_density",
                 "repeated_lines")
#: The fluency target of the final model against the SFT model (issue 21): the upper 95% CI end of the perplexity
#: ratio final / sft under the frozen base model below this, and repeated lines up by at most ``repeated_lines``.
FLUENCY_TARGET = {"perplexity_ratio_ci_high": 1.10, "repeated_lines": 0.05}


def final_vs_sft(out: Path) -> dict:
    """final − sft per metric with paired bootstrap CIs, from the eval's saved generations: does the rejection-
    sampling round keep (or improve) what SFT learned?  With the songs' perplexities in the generations (eval's
    ``fluency``), ``"perplexity"`` is the ratio final / sft with its paired bootstrap CI."""
    from lyrictool.eval.fluency import perplexity_ratio
    from lyrictool.eval.systems import evaluate

    gen = out / "eval" / "generations"
    result, systems = evaluate(None, [gen / "sft.jsonl", gen / "final.jsonl"], scheme=SCHEME)
    out_metrics = dict(result["comparison"]["pairs"][0]["metrics"])
    rows = {name: {r["id"]: r for r in map(json.loads, (gen / f"{name}.jsonl").read_text(encoding="utf-8")
                                              .splitlines())} for name in ("sft", "final")}
    ids = [s["id"] for s in systems[0].songs]  # the songs evaluate paired, in its order
    if all("fluency" in rows[name].get(i, {}) for name in rows for i in ids):
        sft, final = ([rows[name][i]["fluency"]["log_ppl"] for i in ids] for name in ("sft", "final"))
        out_metrics["perplexity"] = perplexity_ratio(sft, final, resamples=2000, seed=0)  # as evaluate's defaults
    return out_metrics


def _ci(m: dict | None) -> str:
    if not m or m.get("diff") is None:
        return "-"
    text = f"{m['diff']:+.3f} [{m['ci_low']:+.3f}, {m['ci_high']:+.3f}]"
    if m.get("significant"):
        text = f"[{'green' if m['diff'] > 0 else 'red'}]{text}[/]"
    return text


def results_table(result: dict, vs_sft: dict):
    """The closing screen's table: each system's metrics, final − base and final − sft with 95% CIs (perplexity:
    each system's geometric mean and the ratios)."""
    from rich.table import Table

    from lyrictool.eval.fluency import fmt_perplexity, fmt_ratio

    systems = result["systems"]
    vs_base = {p["b"]: p["metrics"] for p in result["comparison"]["pairs"]}["final"]
    n = systems["final"]["n"]
    table = Table(title=f"{n} eval prompts; differences with paired bootstrap 95% CIs (green/red: CI excludes 0)",
                  title_justify="left")
    for col in ("metric", "base", "sft", "final", "final − base", "final − sft"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for metric in SHOWN_METRICS:
        values = [systems[name]["metrics"].get(metric) for name in ("base", "sft", "final")]
        table.add_row(metric, *["-" if v is None else f"{v:.3f}" for v in values], _ci(vs_base.get(metric)),
                      _ci(vs_sft.get(metric)), end_section=metric == SHOWN_METRICS[-1] and "fluency" in result)
    if "fluency" in result:
        ratio = next(p for p in result["comparison"]["pairs"] if p["b"] == "final").get("fluency")
        table.caption = "perplexity: geometric mean under the frozen base model [95% CI]; differences are ratios"
        table.caption_justify = "left"
        table.add_row("perplexity",
                      *[fmt_perplexity(systems[name].get("fluency")) for name in ("base", "sft", "final")],
                      fmt_ratio(ratio), fmt_ratio(vs_sft.get("perplexity")))
    return table


def fluency_verdict(vs_sft: dict) -> tuple[dict, str]:
    """The fluency target (:data:`FLUENCY_TARGET`) against the SFT model: which parts hold, and the sentence saying
    so.  Perplexity is None (not checked) where the eval measured none (the tiny demo: a random-init base model
    predicts nothing)."""
    rep = vs_sft.get("repeated_lines") or {}
    ppl = vs_sft.get("perplexity")
    limit, ratio_limit = FLUENCY_TARGET["repeated_lines"], FLUENCY_TARGET["perplexity_ratio_ci_high"]
    holds = {"repeated_lines": None if rep.get("diff") is None else rep["diff"] <= limit + 1e-12,
             "perplexity": None if not ppl or ppl.get("ci_high") is None else ppl["ci_high"] < ratio_limit}
    word = {True: "holds", False: "does NOT hold", None: "not measured"}
    parts = [f"repeated lines final − sft {rep['diff']:+.3f} (at most {limit:+.2f}): {word[holds['repeated_lines']]}"
             if rep.get("diff") is not None else "repeated lines: not measured"]
    if ppl and ppl.get("ratio") is not None:
        parts.append(f"perplexity final / sft ×{ppl['ratio']:.2f} [{ppl['ci_low']:.2f}, {ppl['ci_high']:.2f}] (upper "
                     f"end below ×{ratio_limit:.2f}): {word[holds['perplexity']]}")
    else:
        parts.append("perplexity: not measured (the tiny demo's base model is random-init; run with --model)")
    return holds, "fluency no worse than sft: " + "; ".join(parts)


def sample_song_table(lyrics: str):
    """A rich table of one song's lines with their last syllable, final and rhyme group."""
    from rich.table import Table

    from lyrictool.metrics import rhyme_rows

    table = Table(title="rhyme analysis", title_justify="left")
    for col in ("section", "line", "last", "pinyin", "group"):
        table.add_column(col)
    for row in rhyme_rows(lyrics, SCHEME):
        table.add_row(row["section"] or "", row["line"], row["char"] or "-", row["pinyin"] or "-",
                      row["group"] or "-")
    return table


def cpu_seconds() -> float:
    """User + system CPU seconds of this process (all threads) and its finished children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def torch_import_time() -> dict:
    """Wall and CPU seconds of ``python -c "import torch"`` in a fresh interpreter: how fast this box is, to
    compare the demo's times with other machines'."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch"], check=False, capture_output=True)
    return {"wall_s": round(time.perf_counter() - t0, 2), "cpu_s": round(cpu_seconds() - c0, 2)}


def step_phases(step_dir: Path) -> dict:
    """The phases a step's own summary.json timed (wall and CPU seconds), e.g. load_model, train, save."""
    try:
        summary = json.loads((step_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    cpu = summary.get("cpu_s") or {}
    return {k: {"wall_s": round(v, 1), "cpu_s": round(cpu.get(k, 0.0), 1)}
            for k, v in (summary.get("timings_s") or {}).items()}


def timings_table(timings: dict, total: dict, torch_import: dict):
    """The closing screen's timing table: wall and CPU seconds per step and per phase of each step."""
    from rich.table import Table

    table = Table(title="time per step (CPU s = user + system over all threads)", title_justify="left")
    for col in ("step", "wall s", "CPU s", "phases (wall s / CPU s)"):
        table.add_column(col, justify="left" if col in ("step", "phases (wall s / CPU s)") else "right")
    for step, t in timings.items():
        phases = ", ".join(f"{k} {v['wall_s']:.0f}/{v['cpu_s']:.0f}" for k, v in t.get("phases", {}).items()
                           if v["wall_s"] >= 0.5)
        label = step + (" (beside inject, sft)" if step == "score" else "")
        table.add_row(label, f"{t['wall_s']:.0f}", f"{t['cpu_s']:.0f}", phases)
    table.add_row("total", f"{total['wall_s']:.0f}", f"{total['cpu_s']:.0f}", "")
    table.caption = (f"this box: python -c \"import torch\" took {torch_import['wall_s']:.1f} s wall, "
                     f"{torch_import['cpu_s']:.1f} CPU s")
    table.caption_justify = "left"
    return table


class Beside:
    """A demo step run as its own ``lyrictool`` command in a child process with one thread, beside the main chain:
    on a 2-core box the scorer trains on the second core while inject and SFT use the first."""

    def __init__(self, step: str, recipe, out: Path) -> None:
        import os

        from lyrictool.recipes import dump_recipe

        self.step, self.recipe_path, self.log_path = step, out / f"{step}.yaml", out / f"{step}.log"
        self.recipe_path.write_text(dump_recipe(recipe), encoding="utf-8")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
               "TOKENIZERS_PARALLELISM": "false", "COLUMNS": "200"}  # one log line per message
        self.started = time.time()
        with self.log_path.open("w", encoding="utf-8") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "lyrictool", step, str(self.recipe_path)],
                                         stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait(self) -> float:
        """Wait for the child; returns its wall seconds (start to its last log line)."""
        if self.proc.wait() != 0:
            tail = self.log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
            raise RuntimeError(f"lyrictool {self.step} {self.recipe_path} failed (log {self.log_path}):\n{tail}")
        return self.log_path.stat().st_mtime - self.started

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()

    def last_line(self) -> str:
        lines = [x for x in self.log_path.read_text(encoding="utf-8", errors="replace").splitlines() if x.strip()]
        return lines[-1] if lines else ""


def use_one_thread() -> int:
    """One torch thread unless OMP_NUM_THREADS says otherwise: the ~1M-parameter model's matrices are too small
    for a second thread to pay (measured: 12 SFT steps took 6.9 CPU s on one thread, 46 CPU s on two on a busy
    2-core box)."""
    import os

    import torch

    if not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(1)
    return torch.get_num_threads()


def run_demo(output_dir: Path | str = "runs/demo", *, quick: bool = False, model: str | None = None) -> dict:
    import datasets
    import torch
    import transformers
    from rich.console import Console
    from rich.rule import Rule

    from lyrictool.commands.eval import run_eval
    from lyrictool.controls import build_prompt
    from lyrictool.train.inject import run_inject
    from lyrictool.train.rejection_sample import run_rejection_sample
    from lyrictool.train.sft import run_sft

    datasets.disable_progress_bars()  # the demo prints one line per step instead
    transformers.utils.logging.disable_progress_bar()
    console = Console(highlight=False)
    if not console.is_terminal:  # a log file or a pipe: wide enough for the tables not to wrap
        console.width = 120
    out = Path(output_dir)
    for step in ("base", *STEPS):  # a fresh run: only the demo's own step folders are replaced
        if (out / step).is_dir():
            shutil.rmtree(out / step)
    out.mkdir(parents=True, exist_ok=True)
    recipes = demo_recipes(out, quick=quick, model=model)
    run = {"inject": run_inject, "sft": run_sft, "rejection-sample": run_rejection_sample}
    torch_import = torch_import_time()
    # a pretrained model's matrices are big enough for every core; the tiny model's are not
    threads = use_one_thread() if model is None else torch.get_num_threads()
    timings: dict[str, dict] = {}
    start, cpu_start = time.perf_counter(), cpu_seconds()
    build_base(recipes, out)
    timings["base"] = {"wall_s": round(time.perf_counter() - start, 1), "cpu_s": round(cpu_seconds() - cpu_start, 1)}
    if model is None:
        console.print(f"[dim]base model: builtin:tiny-zh with the demo's characters only, in {out / 'base'}; "
                      f"torch threads: {threads}[/]")
    else:
        console.print(f"[dim]base model: {model} (LoRA); the lyrics scorer: builtin:tiny-zh with the demo's "
                      f"characters, in {out / 'base'}; torch threads: {threads}[/]")
    score = Beside("score", recipes["score"], out)
    console.print(f"[dim]score: training beside inject and sft in a second process (log {score.log_path})[/]")
    try:
        for i, step in enumerate(STEPS, 1):
            console.print(Rule(f"{i}/{len(STEPS)} lyrictool {step}"))
            t0, c0 = time.perf_counter(), cpu_seconds()
            if step == "eval":
                result = run_eval(recipes["eval"], [], fmt="table", report=out / "eval" / "report.html")
            elif step == "score":  # reaping the child adds its CPU seconds to cpu_seconds()
                wall = score.wait()
                console.print(score.last_line())
            else:
                run[step](recipes[step])
            timings[step] = {"wall_s": round(wall if step == "score" else time.perf_counter() - t0, 1),
                             "cpu_s": round(cpu_seconds() - c0, 1), "phases": step_phases(out / step)}
            console.print(f"[dim]{step}: {timings[step]['wall_s']:.0f} s wall, {timings[step]['cpu_s']:.0f} CPU s[/]")
    finally:  # an error or Ctrl-C in the main chain must not leave the scorer training on
        score.stop()
    total = {"wall_s": round(time.perf_counter() - start, 1), "cpu_s": round(cpu_seconds() - cpu_start, 1)}

    vs_sft = final_vs_sft(out)
    vs_base = {p["b"]: p["metrics"] for p in result["comparison"]["pairs"]}["final"]
    final = result["systems"]["final"]["metrics"]
    base = result["systems"]["base"]["metrics"]
    beats = {m: (final[m] or 0.0) > (base[m] or 0.0) for m in ("rhyme_accuracy", "structure_accuracy")}
    first = (out / "eval" / "generations" / "final.jsonl").read_text(encoding="utf-8").splitlines()[0]
    sample = json.loads(first)  # the first eval prompt's song: not picked for looking good
    console.print(Rule(f"the final model's song for eval prompt {sample['id']}"))
    console.print(build_prompt(sample["controls"]).replace("\n", "  "))
    console.print(sample["lyrics"] or "(empty)")
    console.print(sample_song_table(sample["lyrics"]))
    console.print(Rule("artefacts"))
    for step in STEPS[:-1]:
        console.print(f"{step:>17}: {out / step}  (model, recipe.yaml, summary.json)")
    console.print(f"{'eval':>17}: {out / 'eval' / 'result.json'}, generations/, report.html")
    console.print(timings_table(timings, total, torch_import))
    console.print(results_table(result, vs_sft))
    verdict = " and ".join(f"{m} {'beats' if ok else 'does NOT beat'} base" for m, ok in beats.items())
    fluency_holds, fluency_line = fluency_verdict(vs_sft)
    console.print(f"final model: {verdict}; total {total['wall_s']:.0f} s wall, {total['cpu_s']:.0f} CPU s")
    console.print(f"final model: {fluency_line}", soft_wrap=True)  # one line, for a log to grep
    keep = ("diff", "ci_low", "ci_high", "significant", "n")
    summary = {"model": model or "builtin:tiny-zh", "total": total, "timings": timings, "torch_import": torch_import,
               "torch_threads": threads,
               "beats_base": beats, "fluency_target": {**FLUENCY_TARGET, "holds": fluency_holds},
               "output_dir": str(out),
               "metrics": {name: s["metrics"] for name, s in result["systems"].items()},
               "final_minus_base": {m: {k: vs_base[m].get(k) for k in keep} for m in SHOWN_METRICS if m in vs_base},
               "final_minus_sft": {m: {k: vs_sft[m].get(k) for k in keep} for m in SHOWN_METRICS if m in vs_sft},
               "perplexity": {"model": result["fluency"]["model"],
                              "systems": {n: s["fluency"] for n, s in result["systems"].items()},
                              "final_over_base": next(p for p in result["comparison"]["pairs"]
                                                      if p["b"] == "final")["fluency"],
                              "final_over_sft": vs_sft.get("perplexity")} if "fluency" in result else None,
               "comparison": result.get("comparison")}
    (out / "demo.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2, default=str) + "\n",
                                   encoding="utf-8")
    return summary
