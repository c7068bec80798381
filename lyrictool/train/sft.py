"""`lyrictool sft`: supervised fine-tuning with control prompts on TRL's SFTTrainer.

Lyrics rows -> conversational prompt/completion rows (prompt = the controls, one template; completion =
the lyrics, with phonetic hints if the recipe asks) -> SFTTrainer with completion-only loss, LoRA/QLoRA
optional -> model, resolved recipe and summary.json (train/eval loss, objective metrics of generations on
the eval split, timings) in output_dir.
"""

from __future__ import annotations

import logging
import random

from lyrictool.distributed import full_params, trainer_model
from lyrictool.recipes import SFTRecipe
from lyrictool.train.common import (
    Timer,
    callbacks,
    console,
    generates_here,
    generation_metrics,
    is_main_process,
    load_lyrics_examples,
    print_dry_run,
    resume_checkpoint,
    train_loss_curve,
    trl_config,
    write_run_files,
)

log = logging.getLogger("lyrictool")


def build_datasets(recipe: SFTRecipe):
    """Validated train/eval prompt-completion rows, and the eval controls for end-of-training generation."""
    from lyrictool.data.lyrics_rows import RowStats, prompt_controls, sft_rows

    train_ex, eval_ex = load_lyrics_examples(recipe.data, recipe.seed)
    stats = RowStats()
    train_rows = sft_rows(train_ex, recipe.data, seed=recipe.seed, stats=stats)
    eval_rows = sft_rows(eval_ex, recipe.data.model_copy(update={"control_dropout": 0.0}), seed=recipe.seed)
    rng = random.Random(recipe.seed)
    eval_spec = recipe.data.model_copy(update={"control_dropout": 0.0})
    eval_controls = [prompt_controls(ex, eval_spec, rng) for ex in eval_ex]
    return train_rows, eval_rows, eval_controls, stats


def train_sft(recipe: SFTRecipe, train_rows: list[dict], eval_rows: list[dict], *, resume: bool = False,
              timer: Timer | None = None, on_load=None):
    """Build the TRL config, load the model, run SFTTrainer, save. Returns (trainer, loaded model).

    The config comes first, so DeepSpeed ZeRO-3 (``zero.Init``) and FSDP's low-memory loading apply to the load.
    ``on_load(lm)`` runs on the loaded model before the trainer wraps it.  Rows are conversational
    prompt/completion rows (completion-only loss) or ``{"text"}`` rows (plain language-modelling loss, the
    memorize stage of ``inject``).
    """
    from datasets import Dataset
    from trl import SFTTrainer

    from lyrictool.distributed import save_full_model
    from lyrictool.modeling import load_model, model_plan, peft_config

    timer = timer or Timer()
    attention, dtype = model_plan(recipe.model)
    args = trl_config(recipe, attention=attention.implementation, dtype=dtype,
                      eval_strategy="epoch" if eval_rows else "no")
    with timer("load_model"):
        lm = load_model(recipe.model)
    if on_load is not None:
        on_load(lm)
    trainer = SFTTrainer(
        model=lm.model,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=Dataset.from_list(eval_rows) if eval_rows else None,
        processing_class=lm.tokenizer,
        peft_config=peft_config(recipe.model),
        callbacks=callbacks(),
    )
    with timer("train"):
        trainer.train(resume_from_checkpoint=resume_checkpoint(recipe, resume))
    with timer("save"):
        save_full_model(trainer, recipe.output_dir)
        if is_main_process():
            lm.tokenizer.save_pretrained(recipe.output_dir)
    return trainer, lm


def run_sft(recipe: SFTRecipe, *, dry_run: bool = False, resume: bool = False) -> dict:
    timer = Timer()
    with timer("data"):
        train_rows, eval_rows, eval_controls, stats = build_datasets(recipe)
    if dry_run:
        print_dry_run(recipe, {"train rows": len(train_rows), "eval rows": len(eval_rows),
                               "controls stated": dict(stats.stated), "hints": recipe.data.hints})
        return {}
    trainer, lm = train_sft(recipe, train_rows, eval_rows, resume=resume, timer=timer)
    losses = train_loss_curve(trainer)
    metrics: dict = {"train_loss_first": losses[0] if losses else None,
                     "train_loss_last": losses[-1] if losses else None,
                     "train_loss": trainer.state.log_history[-1].get("train_loss"),
                     "global_step": trainer.state.global_step}
    if eval_rows:
        with timer("eval_loss"):
            metrics["eval_loss"] = trainer.evaluate().get("eval_loss")
    samples = []
    if eval_controls and recipe.eval_generation.num_prompts:
        with timer("eval_generation"), full_params(trainer_model(trainer)) as model:
            if generates_here(trainer):
                metrics["generation"], samples = generation_metrics(model, lm.tokenizer, eval_controls,
                                                                    recipe.eval_generation, seed=recipe.seed,
                                                                    scheme=recipe.data.scheme)
    summary = {"metrics": metrics, "timings_s": timer.times, "data": stats.as_dict(),
               "model": {"attention": lm.attention.implementation, "attention_reason": lm.attention.reason,
                         "dtype": str(lm.dtype).removeprefix("torch."), "lora": recipe.model.lora is not None},
               "samples": samples[:5]}
    if is_main_process():
        path = write_run_files(recipe, "sft", summary)
        console.print(f"[bold green]sft done[/]: loss {metrics['train_loss_first']} -> {metrics['train_loss_last']}"
                      f" in {metrics['global_step']} steps; model and {path.name} in {recipe.output_dir}")
    return summary
