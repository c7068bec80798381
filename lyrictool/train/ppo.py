"""`lyrictool ppo`: online RL on the policy's own samples, with a weighted list of rewards.

TRL removed its ``PPOTrainer`` in 1.13 (it had moved to ``trl.experimental`` in 1.10); toolkits that still offer
"PPO" pin an old TRL.  This command runs the PPO family that current TRL maintains instead:

- ``algorithm: grpo`` (default): TRL's ``GRPOTrainer``, the clipped PPO surrogate objective (``epsilon``,
  ``num_iterations``) with group-relative advantages: ``num_generations`` samples per prompt, each sample's
  reward compared with its group's mean, so no value model (critic) is trained;
- ``algorithm: rloo``: TRL's ``RLOOTrainer``, REINFORCE with a leave-one-out baseline over the same groups.

The rewards are the recipe's ``rewards`` list (:mod:`lyrictool.rewards`): the trained scorer, rule rewards
(rhyme, structure, line length, format) and harmlessness (a blocklist or a safety scorer), combined by weight;
with ``safety_rule``, LLaMA 2's rule chooses between the scorer and the safety scorer per sample (tau chosen on
labelled data, recorded in summary.json), or Safe RLHF's Lagrangian weighs the safety cost by a multiplier that
a trainer callback adapts.  Each component is handed to TRL as its own reward function
with weight 0 and the combination as ``total`` with weight 1, so TRL logs ``rewards/<component>/mean`` every step
while only the total drives the advantages.  The KL coefficient (``beta``, default 0.01 as in LLaMA 2), the group
size (``num_generations``) and the generation length (``max_completion_length``) are ``train`` keys of the TRL config.

Prompts are the controls of the ``data`` rows: lyrics rows give their controls (stated plus derived, as in SFT),
prompt rows ``{"controls": {...}}`` (e.g. builtin:eval-prompts) give theirs.  Before and after training the
policy writes one sample for each of ``eval_generation.num_prompts`` held-out prompts, scored with the same rewards
and the objective metrics: summary.json reports both, plus each reward component's per-step curve.
"""

from __future__ import annotations

import json
import logging
import random
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from lyrictool.console import console, print_dry_run
from lyrictool.recipes import TRL_DEFAULTS, BaseRecipe, GenerationSpec, recipe_source
from lyrictool.rewards import RewardSpec, SafetyRule, default_rule_specs
from lyrictool.training import (
    Timer,
    callbacks,
    is_main_process,
    report_sampler,
    save_trained,
    trl_config,
    write_run_files,
)

log = logging.getLogger("lyrictool")

TRAINERS = {"grpo": ("trl", "GRPOConfig", "GRPOTrainer"), "rloo": ("trl", "RLOOConfig", "RLOOTrainer")}


class PPORecipe(BaseRecipe):
    """`lyrictool ppo`: GRPO (default) or RLOO on the policy's samples, rewarded by a weighted reward list."""

    trl_config = ("trl", "GRPOConfig")
    train_defaults: ClassVar[dict[str, Any]] = {**TRL_DEFAULTS, "beta": 0.01}  # KL towards the starting policy, as in LLaMA 2

    algorithm: Literal["grpo", "rloo"] = Field(
        "grpo", description="grpo: clipped PPO objective, group-relative advantages, no critic (TRL GRPOTrainer); "
                            "rloo: REINFORCE leave-one-out (TRL RLOOTrainer). TRL has no PPOTrainer since 1.13.")
    rewards: list[RewardSpec] = Field(
        default_factory=default_rule_specs,
        description="Weighted rewards: scorer (path), rhyme, structure, line_length, format, safety (path, "
                    "override_below).",
    )
    safety_rule: SafetyRule | None = Field(
        None, description="LLaMA 2's rule between the scorer and a safety scorer (tau chosen on calibration data), "
                          "or Safe RLHF's Lagrangian; absent: the weighted sum (with override_below, if set).")
    eval_generation: GenerationSpec = Field(
        default_factory=GenerationSpec,
        description="Before and after training, one sample for each of this many held-out prompts, scored with "
                    "the rewards and the objective metrics.",
    )

    @field_validator("train")
    @classmethod
    def _weights_live_in_rewards(cls, v: dict) -> dict:
        if "reward_weights" in v:
            raise ValueError("reward_weights: give each reward its weight in the rewards list instead, e.g. "
                             "rewards: [{name: rhyme, weight: 0.5}]")
        n = v.get("num_generations")
        if isinstance(n, int) and not isinstance(n, bool) and n < 2:
            raise ValueError(f"num_generations: needs at least 2 samples per prompt, since advantages compare each "
                             f"sample with the rest of its group (got {n})")
        return v

    def trl_config_for(self) -> tuple[str, str]:
        """`train` keys are checked against the config of the chosen algorithm's trainer."""
        module, config, _ = TRAINERS[self.algorithm]
        return module, config


# --------------------------------------------------------------------------------------------------------------
# Prompts


def prompt_rows(recipe: PPORecipe) -> tuple[list[dict], list[dict]]:
    """Train and held-out prompt rows ``{"prompt": [user turn], "controls": JSON, "safety_prompt": bool}``; every
    data row validated (``safety_prompt`` is the row's ``safety`` tag, False when it has none).

    ``controls`` travels as a JSON string: Arrow would otherwise merge the rows' different control keys into one
    struct with nulls, and the reward functions read it back either way.
    """
    from lyrictool.data import split_records
    from lyrictool.data.prompts import load_prompt_rows

    spec = recipe.data
    rng = random.Random(recipe.seed)

    def rows(source: str, what: str) -> list[dict]:
        return [{"prompt": p.messages(), "controls": json.dumps(p.controls.to_dict(), ensure_ascii=False,
                                                                 sort_keys=True),
                 "safety_prompt": bool(p.safety)}
                for p in load_prompt_rows(source, data=spec, rng=rng, what=what, text_prompts=True)]

    train = rows(spec.train, "data.train")
    if spec.max_rows:
        train = rng.sample(train, min(spec.max_rows, len(train)))
    if spec.eval:
        return train, rows(spec.eval, "data.eval")
    return split_records(train, spec.eval_fraction, recipe.seed)


# --------------------------------------------------------------------------------------------------------------
# Before/after samples


def sample_and_score(sampler, prompts: list[dict], rewards, recipe: PPORecipe) -> dict:
    """One sample per held-out prompt (``sampler``: :mod:`lyrictool.generation`); mean of every reward component
    and of the objective metrics."""
    from lyrictool.generation import chat_prompt
    from lyrictool.metrics import aggregate, song_metrics

    spec = recipe.eval_generation
    prompts = prompts[: spec.num_prompts]
    if not prompts:
        return {}
    texts = [chat_prompt(sampler.tokenizer, p["prompt"][0]["content"]) for p in prompts]
    outs = sampler.sample(texts, n=1, max_new_tokens=spec.max_new_tokens, temperature=spec.temperature,
                          top_p=spec.top_p, seed=recipe.seed)
    controls = [json.loads(p["controls"]) for p in prompts]
    lyrics = [s.text for (s,) in outs]
    scored = rewards.score(controls, lyrics, [p.get("safety_prompt") for p in prompts], update=False)
    names = list(scored[0].components) if scored else []
    out = {"reward": sum(s.total for s in scored) / len(scored),
           "rewards": {n: sum(s.components[n] for s in scored) / len(scored) for n in names},
           "safety_overrides": sum(s.overridden for s in scored),
           **({"safety_rule_chose_safety": sum(s.chosen == "safety" for s in scored)}
              if rewards.rule is not None and rewards.rule.mode == "llama2" else {}),
           "metrics": aggregate([song_metrics(t, c, recipe.data.scheme) for c, t in zip(controls, lyrics)])}
    out["samples"] = [{"controls": c, "lyrics": t, **s.as_dict()} for c, t, s in list(zip(controls, lyrics, scored))[:3]]
    return out


def reward_curves(history: list[dict], names: list[str]) -> dict[str, list[float]]:
    """Per logged step, the batch mean of each reward component and of the total (as TRL logged them)."""
    return {n: [h[f"rewards/{n}/mean"] for h in history if f"rewards/{n}/mean" in h] for n in names}


def _window(values: list[float], first: bool, n: int = 5) -> float | None:
    part = values[:n] if first else values[-n:]
    return sum(part) / len(part) if part else None


# --------------------------------------------------------------------------------------------------------------
# The run


def train_ppo(recipe: PPORecipe, train_rows: list[dict], eval_rows: list[dict], *, timer: Timer | None = None,
              reward_funcs=None, reward_weights=None):
    """Load the policy, run GRPOTrainer/RLOOTrainer, save. Returns (trainer, lm, rewards, before/after samples).

    ``reward_funcs``/``reward_weights`` replace the recipe's rewards (for callers with their own TRL reward
    callables); by default they come from :func:`lyrictool.rewards.reward_funcs` over ``recipe.rewards``.
    """
    import importlib

    from datasets import Dataset

    from lyrictool import rewards as rw
    from lyrictool.distributed import sharding
    from lyrictool.generation import TransformersSampler, open_sampler
    from lyrictool.modeling import load_model, model_plan, peft_config, to_accelerator

    timer = timer or Timer()
    rewards = rw.Rewards.from_specs(recipe.rewards, scheme=recipe.data.scheme,
                                    strictness=recipe.data.rhyme_strictness, rule=recipe.safety_rule)
    if reward_funcs is None:
        reward_funcs, reward_weights = rw.reward_funcs(rewards)
    module, _, trainer_name = TRAINERS[recipe.algorithm]
    trainer_cls = getattr(importlib.import_module(module), trainer_name)
    attention, dtype = model_plan(recipe.model)
    args = trl_config(recipe, attention=attention.implementation, dtype=dtype,  # first: ZeRO-3 / FSDP loading
                      reward_weights=reward_weights)
    with timer("load_model"):
        lm = load_model(recipe.model)
    held = eval_rows or train_rows
    evals: dict = {}
    # "before" samples on the main process from the loaded weights (ZeRO-3 has partitioned them already)
    if is_main_process() and recipe.eval_generation.num_prompts and sharding(lm.model) == "none":
        with timer("eval_generation"):
            spec = recipe.eval_generation
            if spec.backend == "vllm":  # an engine on the starting model, closed before training
                sampler = open_sampler(recipe.model.model_copy(update={"lora": None, "quantization": "none"}),
                                       spec, seed=recipe.seed)
            else:
                to_accelerator(lm.model)  # the trainer would move it anyway; sampling a 7B model on CPU: hours
                sampler = TransformersSampler(lm.model, lm.tokenizer, batch_size=spec.batch_size,
                                              rhyme_guard=spec.rhyme_guard)
            try:
                evals["before"] = sample_and_score(sampler, held, rewards, recipe)
            finally:
                if spec.backend == "vllm":
                    sampler.close()
    trainer = trainer_cls(
        model=lm.model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=Dataset.from_list(train_rows),
        processing_class=lm.tokenizer,
        peft_config=peft_config(recipe.model),
        callbacks=callbacks() + rw.lagrangian_callbacks(rewards),
    )
    with timer("train"):
        trainer.train()
    with timer("save"):
        save_trained(trainer, lm.tokenizer, recipe.output_dir)
    if recipe.eval_generation.num_prompts:
        with timer("eval_generation"), report_sampler(trainer, lm.tokenizer, recipe.eval_generation,
                                                       recipe) as sampler:
            if sampler is not None:
                evals["after"] = sample_and_score(sampler, held, rewards, recipe)
    return trainer, lm, rewards, evals


def run_ppo(recipe: PPORecipe, *, dry_run: bool = False) -> dict:
    from lyrictool.rewards import check_reward_specs

    timer = Timer()
    check_reward_specs(recipe.rewards, where=recipe_source(recipe), rule=recipe.safety_rule)
    with timer("data"):
        train_rows, eval_rows = prompt_rows(recipe)
    if dry_run:
        print_dry_run(recipe, {"algorithm": f"{recipe.algorithm} (TRL {TRAINERS[recipe.algorithm][2]})",
                               "train prompts": len(train_rows), "held-out prompts": len(eval_rows),
                               "rewards": ", ".join(f"{s.name}×{s.weight:g}" for s in recipe.rewards)})
        return {}
    trainer, lm, rewards, evals = train_ppo(recipe, train_rows, eval_rows, timer=timer)
    names = [*rewards.names, "total"]
    curves = reward_curves(trainer.state.log_history, names)
    kl = [h["kl"] for h in trainer.state.log_history if "kl" in h]
    metrics = {
        "algorithm": recipe.algorithm,
        "global_step": trainer.state.global_step,
        "reward_first5": {n: _window(v, True) for n, v in curves.items()},
        "reward_last5": {n: _window(v, False) for n, v in curves.items()},
        "kl_last5": _window(kl, False),
        "generation": evals,
    }
    summary = {"metrics": metrics, "reward_curves": curves, "timings_s": timer.times, "cpu_s": timer.cpu,
               "data": {"train_prompts": len(train_rows), "heldout_prompts": len(eval_rows)},
               "rewards": [s.model_dump(exclude_none=True) for s in recipe.rewards],
               "safety_rule": rewards.rule_report(),
               "model": {"attention": lm.attention.implementation, "dtype": str(lm.dtype).removeprefix("torch."),
                         "lora": recipe.model.lora is not None}}
    if is_main_process():
        path = write_run_files(recipe, "ppo", summary)
        first, last = metrics["reward_first5"].get("total"), metrics["reward_last5"].get("total")
        shown = f"total reward {first:.3f} -> {last:.3f} (first vs last 5 steps); " if first is not None and \
            last is not None else ""
        console.print(f"[bold green]ppo ({recipe.algorithm}) done[/]: {shown}{metrics['global_step']} steps; "
                      f"model and {path.name} in {recipe.output_dir}")
    return summary
