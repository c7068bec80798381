"""`lyrictool demo`: the whole method on the built-in tiny model, offline, in about five minutes on 2 CPU cores.

    1. inject            memorize -> understand the phonetics of the demo corpus's characters
    2. sft               lyrics with phonetic hints on the in-house demo songs, from the injected model
    3. score             the lyrics scorer on the demo ratings (good songs and damaged copies)
    4. rejection-sample  K candidates per prompt from the SFT model, keep the best by scorer + rule rewards, SFT on them
    5. eval              base vs SFT vs final on the eval prompts: side by side, paired bootstrap 95% CIs, report

Each step is the same ``run_*`` function its command calls, with a recipe written out below (the CPU-sized
settings of ``recipes/tiny/``, shortened so the whole chain fits in the time budget).  Every step leaves its
model, ``recipe.yaml`` and ``summary.json`` in its own folder under the output directory.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from lyrictool.errors import UserError

REPO = Path(__file__).resolve().parents[1]
EVAL_PROMPTS = REPO / "recipes" / "eval" / "prompts.jsonl"
STEPS = ("inject", "sft", "score", "rejection-sample", "eval")
SCHEME = "shisanzhe"


def demo_recipes(out: Path) -> dict:
    """The five recipes, as a user would write them (validated by the same classes as the YAML files)."""
    from lyrictool.eval.systems import EvalRecipe
    from lyrictool.recipes import SFTRecipe
    from lyrictool.train.inject import InjectRecipe
    from lyrictool.train.rejection_sample import RejectionSampleRecipe
    from lyrictool.train.score import ScoreRecipe

    tiny = {"name": "builtin:tiny-zh"}
    songs = {"train": "builtin:demo-songs", "hints": "line_end", "scheme": SCHEME}
    recipes = {
        "inject": InjectRecipe.model_validate({
            "model": tiny,
            "knowledge": [{"builtin": "phonetic", "chars_from": "builtin:demo-songs", "max_chars": 200}],
            "augment": {"paraphrases": 2, "permute": True},
            "qa_eval_max": 32,
            "stages": [
                {"name": "memorize", "train": {"max_steps": 25, "learning_rate": 3.0e-3, "logging_steps": 25,
                                               "per_device_train_batch_size": 32, "warmup_steps": 4}},
                {"name": "understand", "train": {"max_steps": 20, "learning_rate": 2.0e-3, "logging_steps": 20,
                                                 "per_device_train_batch_size": 32}},
            ],
            "output_dir": str(out / "inject"), "seed": 42}),
        "sft": SFTRecipe.model_validate({
            "model": {"name": str(out / "inject")},
            "data": {**songs, "eval_fraction": 0.1, "control_dropout": 0.1},
            "train": {"max_steps": 200, "learning_rate": 5.0e-3, "per_device_train_batch_size": 16,
                      "lr_scheduler_type": "cosine", "warmup_steps": 10, "logging_steps": 25,
                      "eval_strategy": "no"},  # one eval-loss pass at the end, not one per epoch
            "eval_generation": {"num_prompts": 0},
            "output_dir": str(out / "sft"), "seed": 42}),
        "score": ScoreRecipe.model_validate({
            "model": tiny,
            "data": {"train": "builtin:demo-ratings", "eval_fraction": 0.1},
            "aspects": {"language": 1.0, "genre": 1.0, "content": 1.0},
            "margin_scale": 0.5,
            "train": {"max_steps": 40, "learning_rate": 1.0e-3, "per_device_train_batch_size": 16,
                      "warmup_steps": 5, "max_length": 320, "logging_steps": 20},
            "output_dir": str(out / "score"), "seed": 42}),
        "rejection-sample": RejectionSampleRecipe.model_validate({
            "model": {"name": str(out / "sft")},
            "data": {**songs, "max_rows": 48},
            "sampling": {"k": 4, "temperature": 1.0, "top_p": 0.95, "max_new_tokens": 180, "batch_size": 16},
            "rewards": [{"name": "scorer", "weight": 0.5, "path": str(out / "score")},
                        {"name": "rhyme", "weight": 1.0}, {"name": "structure", "weight": 1.0},
                        {"name": "line_length", "weight": 0.5}, {"name": "format", "weight": 1.0}],
            "finetune": True,
            "train": {"max_steps": 20, "learning_rate": 5.0e-4, "per_device_train_batch_size": 16,
                      "logging_steps": 20},
            "output_dir": str(out / "rejection-sample"), "seed": 42}),
    }
    recipes["eval"] = EvalRecipe.model_validate({
        "systems": [{"name": "base", "model": "builtin:tiny-zh"},
                    {"name": "sft", "model": str(out / "sft")},
                    {"name": "final", "model": str(out / "rejection-sample")}],
        "prompts": str(EVAL_PROMPTS),
        "generation": {"num_prompts": 0, "max_new_tokens": 180, "temperature": 0.7, "batch_size": 21},
        "scheme": SCHEME,
        "scorer": str(out / "score"),
        "bootstrap_resamples": 2000,
        "output_dir": str(out / "eval"), "seed": 42})
    for name, recipe in recipes.items():
        recipe._source = f"lyrictool demo ({name})"
    return recipes


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


def run_demo(output_dir: Path | str = "runs/demo") -> dict:
    import datasets
    import transformers
    from rich.console import Console
    from rich.rule import Rule

    from lyrictool.commands.eval import run_eval
    from lyrictool.controls import build_prompt
    from lyrictool.train.inject import run_inject
    from lyrictool.train.rejection_sample import run_rejection_sample
    from lyrictool.train.score import run_score
    from lyrictool.train.sft import run_sft

    datasets.disable_progress_bars()  # the demo prints one line per step instead
    transformers.utils.logging.disable_progress_bar()
    console = Console(highlight=False)
    if not EVAL_PROMPTS.is_file():
        raise UserError(f"the demo needs {EVAL_PROMPTS} (the eval prompts); run it from a source checkout")
    out = Path(output_dir)
    for step in STEPS:  # a fresh run: only the demo's own step folders are replaced
        if (out / step).is_dir():
            shutil.rmtree(out / step)
    out.mkdir(parents=True, exist_ok=True)
    recipes = demo_recipes(out)
    run = {"inject": run_inject, "sft": run_sft, "score": run_score, "rejection-sample": run_rejection_sample}
    times: dict[str, float] = {}
    start = time.perf_counter()
    for i, step in enumerate(STEPS, 1):
        console.print(Rule(f"{i}/{len(STEPS)} lyrictool {step}"))
        t0 = time.perf_counter()
        if step == "eval":
            result = run_eval(recipes["eval"], [], fmt="table", report=out / "eval" / "report.html")
        else:
            run[step](recipes[step])
        times[step] = round(time.perf_counter() - t0, 1)
        console.print(f"[dim]{step}: {times[step]:.0f} s[/]")
    total = round(time.perf_counter() - start, 1)

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
    verdict = " and ".join(f"{m} {'beats' if ok else 'does NOT beat'} base" for m, ok in beats.items())
    console.print(f"final model: {verdict}; total {total:.0f} s ("
                  + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()) + ")")
    summary = {"total_s": total, "timings_s": times, "beats_base": beats, "output_dir": str(out),
               "metrics": {name: s["metrics"] for name, s in result["systems"].items()},
               "comparison": result.get("comparison")}
    (out / "demo.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2, default=str) + "\n",
                                   encoding="utf-8")
    return summary
