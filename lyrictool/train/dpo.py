"""`lyrictool dpo`: direct preference optimisation on chosen/rejected lyrics with TRL's DPOTrainer.

Pairs come from one data source, any of these row kinds (mixed is fine); they are built by the scorer's own
pairing code (:func:`lyrictool.data.pairs.load_pairs`), so ``score`` and ``dpo`` read a ratings file the same way:

- preference rows ``{"controls" | "prompt", "chosen", "rejected"}`` (e.g. ``builtin:demo-preferences``, or the
  best-vs-worst rows ``lyrictool rejection-sample`` writes);
- ratings rows ``{"controls" | "prompt", "lyrics", "ratings": {...}}``: lyrics of the same prompt are paired,
  the higher weighted rating (recipe ``aspects``) is chosen.

Rows become TRL's conversational preference format: the prompt is the controls through the one prompt template
(:func:`lyrictool.controls.build_messages`), chosen/rejected are assistant turns (with phonetic hints when
``data.hints`` asks, so a policy trained with hints is optimised in the form it writes).  The reference model is
TRL's choice: with LoRA none is loaded (the adapter is disabled to get reference log-probs), otherwise a frozen
copy of the starting model.

summary.json reports the chosen-minus-rejected log-probability margin on (up to ``margin_pairs``) training pairs
and on the held-out pairs, before and after training, both from the trainer's own evaluation pass after training
(see :func:`logprob_margins`: no evaluation before training, which DeepSpeed ZeRO-2 refuses), and TRL's reward
accuracies/margins.
"""

from __future__ import annotations

import logging

from pydantic import Field, field_validator

from lyrictool.console import console, print_dry_run
from lyrictool.errors import UserError
from lyrictool.recipes import AspectWeights, BaseRecipe, recipe_source
from lyrictool.training import (
    Timer,
    callbacks,
    is_main_process,
    loss_summary,
    save_trained,
    trl_config,
    write_run_files,
)

log = logging.getLogger("lyrictool")


class DPORecipe(BaseRecipe):
    """`lyrictool dpo`: TRL DPOTrainer on preference pairs (from preference rows, ratings, or rejection sampling)."""

    trl_config = ("trl", "DPOConfig")

    aspects: AspectWeights = Field(
        default_factory=lambda: {"language": 1.0, "genre": 1.0, "content": 1.0},
        description="Ratings rows only: rated aspects and weights; the higher weighted mean is chosen.",
    )
    min_gap: float = Field(0.0, ge=0.0, description="Ratings rows only: pair two lyrics only if their ratings differ "
                                                    "by more than this.")
    max_pairs_per_prompt: int | None = Field(None, gt=0, description="Ratings rows only: at most this many pairs per "
                                                                     "prompt (the largest rating gaps first).")
    margin_pairs: int = Field(256, ge=0, description="Training pairs on which the log-prob margin is measured before "
                                                     "and after training (0 = skip).")

    @field_validator("train")
    @classmethod
    def _beta_positive(cls, v: dict) -> dict:
        beta = v.get("beta")
        if isinstance(beta, (int, float)) and not isinstance(beta, bool) and not beta > 0:
            raise ValueError(f"beta: must be > 0; it scales the log-ratio and 0 leaves nothing to learn (got {beta})")
        return v



def build_datasets(recipe: DPORecipe) -> tuple[list[dict], list[dict], dict]:
    """Conversational preference rows (train, eval) and pair statistics; every row validated."""
    from lyrictool.data.lyrics_rows import target_text
    from lyrictool.data.pairs import load_pairs

    # DPO's loss has no per-pair margin: pairs come with margin 0
    train_pairs, eval_pairs, stats = load_pairs(recipe.data, seed=recipe.seed, where=recipe_source(recipe),
                                                aspects=recipe.aspects, min_gap=recipe.min_gap,
                                                max_pairs_per_prompt=recipe.max_pairs_per_prompt)

    def rows(pairs) -> list[dict]:
        out = []
        for p in pairs:
            if p.chosen.strip() == p.rejected.strip():
                # e.g. a rejection-sampling prompt whose candidates all tied: nothing to prefer
                stats["identical_pairs_dropped"] = stats.get("identical_pairs_dropped", 0) + 1
                continue
            p.chosen = target_text(p.chosen, recipe.data.hints, recipe.data.scheme)
            p.rejected = target_text(p.rejected, recipe.data.hints, recipe.data.scheme)
            out.append(p.as_row(with_margin=False))
        return out

    train_rows, eval_rows = rows(train_pairs), rows(eval_pairs)
    if not train_rows:
        raise UserError(f"data.train: every pair in {recipe.data.train} has identical chosen and rejected lyrics; "
                        "nothing to prefer", where=recipe_source(recipe))
    return train_rows, eval_rows, stats


def reference_kind(recipe: DPORecipe) -> str:
    """How TRL gets the reference log-probs for this recipe (its choice, reported in the summary)."""
    if recipe.model.lora is not None:
        return "adapter disabled"
    if recipe.train.get("precompute_ref_log_probs"):
        return "precomputed from the starting model"
    return "frozen copy"


def logprob_margins(trainer, split: str) -> dict[str, dict]:
    """Mean log p(chosen) - log p(rejected) on ``split`` before and after training, from one TRL evaluation
    pass after training.

    TRL's rewards are ``beta * (log p_policy - log p_reference)`` and the reference is the starting policy (a frozen
    copy, the base with the adapter disabled, or log-probs precomputed from it), so the starting log-probs are
    ``logps - rewards / beta``, averaged the same way.  No evaluation before training: under DeepSpeed ZeRO-1/2
    ``trainer.evaluate()`` before ``train()`` raises ("ZeRO inference only makes sense with ZeRO Stage 3").
    """
    m = trainer.evaluate(eval_dataset=split, metric_key_prefix="eval")
    chosen, rejected = m["eval_logps/chosen"], m["eval_logps/rejected"]
    after = {"logp_chosen": chosen, "logp_rejected": rejected, "margin": chosen - rejected,
             "reward_accuracy": m.get("eval_rewards/accuracies")}
    if getattr(trainer.args, "sync_ref_model", False):  # TR-DPO moves the reference: it is not the start any more
        log.warning("dpo: sync_ref_model moves the reference model, so the starting margin is not reported")
        return {"after": after}
    beta = trainer.args.beta
    c0, r0 = chosen - m["eval_rewards/chosen"] / beta, rejected - m["eval_rewards/rejected"] / beta
    return {"before": {"logp_chosen": c0, "logp_rejected": r0, "margin": c0 - r0}, "after": after}


def train_dpo(recipe: DPORecipe, train_rows: list[dict], eval_rows: list[dict], *, timer: Timer | None = None):
    """Load the policy, run DPOTrainer, save; measure the margin before and after. Returns (trainer, lm, margins)."""
    import random

    from datasets import Dataset
    from trl import DPOTrainer

    from lyrictool.modeling import load_model, model_plan, peft_config

    timer = timer or Timer()
    attention, dtype = model_plan(recipe.model)
    args = trl_config(recipe, attention=attention.implementation, dtype=dtype)  # first: ZeRO-3 / FSDP loading
    with timer("load_model"):
        lm = load_model(recipe.model)
    # Both measured sets are handed to TRL up front, so it prepares them (and, with precompute_ref_log_probs,
    # their reference log-probs) before training, when the reference is still the starting policy.
    eval_sets = {}
    if recipe.margin_pairs:
        margin_rows = random.Random(recipe.seed).sample(train_rows, min(recipe.margin_pairs, len(train_rows)))
        eval_sets["train_pairs"] = Dataset.from_list(margin_rows)
    if eval_rows:
        eval_sets["heldout"] = Dataset.from_list(eval_rows)
    trainer = DPOTrainer(
        model=lm.model,
        ref_model=None,  # TRL: a frozen copy of the policy, or (LoRA) the base with the adapter disabled
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        eval_dataset=eval_sets or None,
        processing_class=lm.tokenizer,
        peft_config=peft_config(recipe.model),
        callbacks=callbacks(),
    )
    margins: dict = {}
    with timer("train"):
        trainer.train()
    with timer("margin"):
        if recipe.margin_pairs:
            margins = logprob_margins(trainer, "train_pairs")
        if eval_rows:  # what generalises: pairs the policy never trained on
            margins["heldout"] = logprob_margins(trainer, "heldout")
    with timer("save"):
        save_trained(trainer, lm.tokenizer, recipe.output_dir)
    return trainer, lm, margins


def _tail_mean(history: list[dict], key: str, n: int = 10) -> float | None:
    """Mean of the last ``n`` logged values of ``key`` (one step's batch is too noisy to report alone)."""
    values = [h[key] for h in history if key in h][-n:]
    return sum(values) / len(values) if values else None


def run_dpo(recipe: DPORecipe, *, dry_run: bool = False) -> dict:
    timer = Timer()
    with timer("data"):
        train_rows, eval_rows, stats = build_datasets(recipe)
    if dry_run:
        print_dry_run(recipe, {"train pairs": len(train_rows), "eval pairs": len(eval_rows), "pairing": stats,
                               "hints": recipe.data.hints,
                               "reference model": reference_kind(recipe)})
        return {}
    trainer, lm, margins = train_dpo(recipe, train_rows, eval_rows, timer=timer)
    history = trainer.state.log_history
    metrics: dict = {
        **loss_summary(trainer),
        "rewards_accuracy_last10": _tail_mean(history, "rewards/accuracies"),
        "rewards_margin_last10": _tail_mean(history, "rewards/margins"),
        "logprob_margin": margins,
    }
    if eval_rows:
        with timer("eval"):
            m = trainer.evaluate(eval_dataset="heldout", metric_key_prefix="eval")
        metrics["eval"] = {k: m.get(f"eval_{k}") for k in ("loss", "rewards/accuracies", "rewards/margins",
                                                            "logps/chosen", "logps/rejected")}
    summary = {"metrics": metrics, "timings_s": timer.times, "cpu_s": timer.cpu, "data": stats,
               "model": {"attention": lm.attention.implementation, "dtype": str(lm.dtype).removeprefix("torch."),
                         "lora": recipe.model.lora is not None,
                         "reference": reference_kind(recipe)}}
    if is_main_process():
        path = write_run_files(recipe, "dpo", summary)
        before, after = margins.get("before", {}).get("margin"), margins.get("after", {}).get("margin")
        shown = f"log-prob margin {before:.3f} -> {after:.3f}; " if before is not None and after is not None else ""
        console.print(f"[bold green]dpo done[/]: {shown}{metrics['global_step']} steps; model and {path.name} in "
                      f"{recipe.output_dir}")
    return summary
