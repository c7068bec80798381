"""`lyrictool sft`: supervised fine-tuning with control prompts on TRL's SFTTrainer.

Lyrics rows -> conversational prompt/completion rows (prompt = the controls, one template; completion =
the lyrics, with phonetic hints if the recipe asks) -> SFTTrainer with completion-only loss, LoRA/QLoRA
optional -> model, resolved recipe and summary.json (train/eval loss, objective metrics of generations on
the eval split, timings) in output_dir.
"""

from __future__ import annotations

import logging

from lyrictool.console import console, print_dry_run
from lyrictool.data.lyrics_rows import sft_datasets
from lyrictool.recipes import SFTRecipe
from lyrictool.training import (
    Timer,
    generation_metrics,
    is_main_process,
    loss_summary,
    report_sampler,
    train_sft,
    write_run_files,
)

log = logging.getLogger("lyrictool")


def run_sft(recipe: SFTRecipe, *, dry_run: bool = False, resume: bool = False) -> dict:
    timer = Timer()
    with timer("data"):
        train_rows, eval_rows, eval_controls, stats = sft_datasets(recipe.data, recipe.seed)
    if dry_run:
        print_dry_run(recipe, {"train rows": len(train_rows), "eval rows": len(eval_rows),
                               "controls stated": dict(stats.stated), "hints": recipe.data.hints})
        return {}
    trainer, lm = train_sft(recipe, train_rows, eval_rows, resume=resume, timer=timer)
    metrics: dict = {**loss_summary(trainer), "train_loss": trainer.state.log_history[-1].get("train_loss")}
    if eval_rows:
        with timer("eval_loss"):
            metrics["eval_loss"] = trainer.evaluate().get("eval_loss")
    samples = []
    if eval_controls and recipe.eval_generation.num_prompts:
        with timer("eval_generation"), report_sampler(trainer, lm.tokenizer, recipe.eval_generation,
                                                       recipe) as sampler:
            if sampler is not None:
                metrics["generation"], samples = generation_metrics(sampler, eval_controls, recipe.eval_generation,
                                                                    seed=recipe.seed, scheme=recipe.data.scheme)
    summary = {"metrics": metrics, "timings_s": timer.times, "cpu_s": timer.cpu, "data": stats.as_dict(),
               "model": {"attention": lm.attention.implementation, "attention_reason": lm.attention.reason,
                         "dtype": str(lm.dtype).removeprefix("torch."), "lora": recipe.model.lora is not None},
               "samples": samples[:5]}
    if is_main_process():
        path = write_run_files(recipe, "sft", summary)
        console.print(f"[bold green]sft done[/]: loss {metrics['train_loss_first']} -> {metrics['train_loss_last']}"
                      f" in {metrics['global_step']} steps; model and {path.name} in {recipe.output_dir}")
    return summary
