"""`lyrictool score`: train the lyrics scorer (a reward model) with TRL's RewardTrainer, or score a file with it.

Data, either kind of row (both may be mixed in one file):

- ratings rows ``{"controls" | "prompt", "lyrics", "ratings": {"language": 1-5, "genre": 1-5, "content": 1-5}}``.
  Each row's rating is the weighted mean of the recipe's ``aspects``; rows of the same prompt are paired
  (higher rating = chosen) when their ratings differ by more than ``min_gap``, and the gap times ``margin_scale``
  becomes the pair's loss margin, LLaMA 2's ``-log σ(r_chosen - r_rejected - m)`` (TRL's ``margin`` column);
- preference rows ``{"controls" | "prompt", "chosen", "rejected"}`` (an optional numeric ``margin`` is used as
  given, else 0), e.g. the ``samples.jsonl`` of ``lyrictool rejection-sample``.

The held-out split is by prompt (no prompt has pairs on both sides).  Pairwise accuracy on it, before and after
training, is computed with :class:`lyrictool.rewards.Scorer`, the same wrapper rejection sampling and RL use, so
the number also checks that inference formats inputs exactly as training did.  The scorer is saved as a plain
sequence-classification model (a LoRA adapter is merged first), ready for ``rewards: [{name: scorer, path: ...}]``.

``--predict FILE --output FILE`` (or a ``predict`` section, run after training) adds ``score`` to every row of a
lyrics file, batched, with a progress bar.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pydantic import Field

from lyrictool.console import console, print_dry_run
from lyrictool.data.pairs import Pair, load_pairs, row_prompt, row_text
from lyrictool.errors import UserError
from lyrictool.recipes import AspectWeights, BaseRecipe, Strict, recipe_source
from lyrictool.training import Timer, callbacks, is_main_process, loss_summary, trl_config, write_run_files

log = logging.getLogger("lyrictool")


class PredictSpec(Strict):
    """Score a lyrics file with a trained scorer (after training, or alone with ``--predict``)."""

    input: str = Field(..., description="Lyrics rows {lyrics, controls | prompt} (jsonl/json/csv/parquet).")
    output: str = Field(..., description="JSONL written with every input row plus its 'score'.")
    model: str | None = Field(None, description="Scorer folder; default: this recipe's output_dir.")
    batch_size: int = Field(16, gt=0, description="Sequences per forward pass.")


class ScoreRecipe(BaseRecipe):
    """`lyrictool score`: the lyrics scorer (reward model) on ratings or preference rows."""

    trl_config = ("trl", "RewardConfig")

    aspects: AspectWeights = Field(
        default_factory=lambda: {"language": 1.0, "genre": 1.0, "content": 1.0},
        description="Rated aspects and their weights; a row's rating is the weighted mean of these.",
    )
    margin_scale: float = Field(1.0, ge=0.0, description="Loss margin = this x rating gap (0 = no margin).")
    min_gap: float = Field(0.0, ge=0.0, description="Pair two ratings of one prompt only if they differ by more.")
    max_pairs_per_prompt: int | None = Field(None, gt=0, description="Keep at most this many pairs per prompt "
                                                                     "(the largest gaps first).")
    predict: PredictSpec | None = Field(None, description="After training, score this lyrics file.")



# --------------------------------------------------------------------------------------------------------------
# Accuracy, training, prediction


def pairwise_accuracy(scorer, pairs: list[Pair]) -> float | None:
    """Share of pairs the scorer orders right (chosen strictly above rejected); each text scored once."""
    if not pairs:
        return None
    keys, prompts, texts = {}, [], []
    for p in pairs:
        for t in (p.chosen, p.rejected):
            k = (json.dumps(p.prompt, ensure_ascii=False), t)
            if k not in keys:
                keys[k] = len(texts)
                prompts.append(p.prompt)
                texts.append(t)
    scores = scorer.score(prompts, texts)
    right = 0
    for p in pairs:
        key = json.dumps(p.prompt, ensure_ascii=False)
        right += scores[keys[(key, p.chosen)]] > scores[keys[(key, p.rejected)]]
    return right / len(pairs)


def train_scorer(recipe: ScoreRecipe, train: list[Pair], held: list[Pair], timer: Timer):
    """RewardTrainer on the pairs, the scorer saved in output_dir; returns (trainer, accuracy before training;
    None when the weights were partitioned at load)."""
    from datasets import Dataset
    from transformers import set_seed
    from trl import RewardTrainer

    from lyrictool.distributed import barrier, save_full_model, sharding, trainer_model
    from lyrictool.modeling import load_model, merge_lora, model_plan, peft_config, to_accelerator
    from lyrictool.rewards import Scorer

    set_seed(recipe.seed)  # the new score head is initialised at load: same recipe, same scorer
    attention, dtype = model_plan(recipe.model)
    args = trl_config(recipe, attention=attention.implementation, dtype=dtype)  # first: ZeRO-3 / FSDP loading
    with timer("load_model"):
        lm = load_model(recipe.model, kind="seq_cls", num_labels=1)
    batch = 16
    before = None
    if is_main_process() and sharding(lm.model) == "none":  # ZeRO-3 partitions weights at load: no "before"
        with timer("accuracy_before"):
            to_accelerator(lm.model)  # the trainer would move it anyway; scoring on CPU would take hours
            before = pairwise_accuracy(Scorer("(in memory)", model=lm.model, tokenizer=lm.tokenizer,
                                              batch_size=batch), held)
    with_margin = recipe.margin_scale > 0 or any(p.margin for p in train)
    trainer = RewardTrainer(
        model=lm.model,
        args=args,
        train_dataset=Dataset.from_list([p.as_row(with_margin) for p in train]),
        processing_class=lm.tokenizer,
        peft_config=peft_config(recipe.model, "SEQ_CLS"),
        callbacks=callbacks(),
    )
    with timer("train"):
        trainer.train()
    with timer("save"):  # a plain model folder is what every consumer of a scorer loads
        if recipe.model.lora is not None:
            merge_lora(trainer_model(trainer), recipe.output_dir)  # gathered, merged and saved on the main process
        else:
            save_full_model(trainer, recipe.output_dir)  # collective when sharded
        if is_main_process():
            lm.tokenizer.save_pretrained(recipe.output_dir)
        barrier()
    return trainer, before


def predict_file(spec: PredictSpec, default_model: str, *, key: str = "predict", scorer=None) -> dict[str, Any]:
    """Add ``score`` to every row of a lyrics file (batched, with a progress bar); returns a small summary."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from lyrictool.data import load_records, write_jsonl
    from lyrictool.rewards import Scorer

    records = load_records(spec.input, what=f"{key}.input")
    prompts, texts = [], []
    for rec in records:
        prompts.append(row_prompt(rec.data, rec.where))
        texts.append(row_text(rec.data, "lyrics", rec.where, hint=""))
    if scorer is None:
        scorer = Scorer(spec.model or default_model, key=f"{key}.model" if spec.model else "output_dir",
                        batch_size=spec.batch_size)
    with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("score", total=len(texts))
        scores = scorer.score(prompts, texts, progress=lambda n: bar.advance(task, n))
    write_jsonl(spec.output, [{**rec.data, "score": round(s, 6)} for rec, s in zip(records, scores)])
    console.print(f"[bold green]scored[/] {len(scores)} rows -> {spec.output}")
    return {"rows": len(scores), "output": spec.output, "mean_score": sum(scores) / len(scores)}


def run_score(recipe: ScoreRecipe, *, dry_run: bool = False, predict: Path | None = None,
              output: Path | None = None) -> dict:
    if output is not None and predict is None:
        raise UserError("--output goes with --predict FILE (the lyrics file to score)")
    if predict is not None:  # score a file with an already trained scorer; no training
        if output is None and recipe.predict is None:
            raise UserError("--predict needs --output FILE (where the scored rows go)")
        base = recipe.predict or PredictSpec(input=str(predict), output=str(output))
        spec = base.model_copy(update={"input": str(predict), **({"output": str(output)} if output else {})})
        if dry_run:
            print_dry_run(recipe, {"predict": spec.input, "output": spec.output,
                                   "scorer": spec.model or recipe.output_dir})
            return {}
        return predict_file(spec, recipe.output_dir, key="--predict")

    timer = Timer()
    with timer("data"):
        train, held, stats = load_pairs(recipe.data, seed=recipe.seed, where=recipe_source(recipe),
                                        aspects=recipe.aspects, margin_scale=recipe.margin_scale,
                                        min_gap=recipe.min_gap, max_pairs_per_prompt=recipe.max_pairs_per_prompt)
    if dry_run:
        print_dry_run(recipe, {**stats, "aspects": recipe.aspects, "margin_scale": recipe.margin_scale})
        return {}
    from lyrictool.rewards import Scorer

    trainer, before = train_scorer(recipe, train, held, timer)
    scorer = after = on_train = None
    if is_main_process():  # the saved folder, loaded as rejection sampling and RL will load it
        with timer("accuracy"):
            scorer = Scorer(recipe.output_dir, batch_size=16)
            after = pairwise_accuracy(scorer, held)
            on_train = pairwise_accuracy(scorer, train[:512])
    metrics = {"pairwise_accuracy": after, "pairwise_accuracy_before": before,
               "train_pairwise_accuracy": on_train, **loss_summary(trainer)}
    summary: dict[str, Any] = {"metrics": metrics, "data": stats, "timings_s": timer.times,
                               "aspects": recipe.aspects, "margin_scale": recipe.margin_scale}
    if recipe.predict is not None and is_main_process():
        with timer("predict"):
            summary["predict"] = predict_file(recipe.predict, recipe.output_dir, scorer=scorer)
    if is_main_process():
        path = write_run_files(recipe, "score", summary)
        held_txt = "n/a (no held-out prompts)" if after is None else f"{after:.3f}" + (
            f" (before {before:.3f})" if before is not None else "")
        console.print(f"[bold green]score done[/]: held-out pairwise accuracy {held_txt} on {len(held)} pairs; "
                      f"scorer and {path.name} in {recipe.output_dir}")
    return summary
