"""`lyrictool rejection-sample`: LLaMA-2-style rejection sampling (arXiv 2307.09288).

For every prompt, sample K candidates from the policy (prompts batched, K per prompt via
``num_return_sequences``, KV cache), score each with the recipe's rewards (learned scorer, rule rewards,
harmlessness; :mod:`lyrictool.rewards`), keep the best and the worst.  Hints are stripped from what is kept.

Each prompt's result is appended as one JSON line to ``output_dir/samples.jsonl`` as soon as it is scored::

    {"id", "round", "controls", "prompt", "candidates": [{"lyrics", "reward", "rewards", "new_tokens"}],
     "best", "worst", "chosen", "rejected", "reward_gap"}

``chosen``/``rejected`` are the best and worst candidates, so the file is also a preference file for
``lyrictool dpo`` and ``lyrictool score``.  A re-run of the same recipe skips the (round, prompt) pairs already in
the file and repairs a line torn by a kill: nothing is duplicated, nothing lost.

Under N processes (``torchrun`` / ``accelerate launch``) every rank samples: rank r takes the round's to-do prompts
``todo[r::N]`` on its own device and appends its rows to its own part file ``samples.rank<r>.jsonl``; after all
ranks are done the main process merges the parts into ``samples.jsonl`` (one writer, prompt order, no duplicates)
and each rank removes its part.  Part files left by a kill are folded into ``samples.jsonl`` by the main process
at the next start, before the to-do list is computed, so what any rank finished is kept.

``finetune: true`` then runs SFT on the winners (the same SFTTrainer path as ``lyrictool sft``); ``rounds: N``
repeats sample -> select -> SFT, each round sampling from the previous round's model and fine-tuning on the best
candidate per prompt seen in ANY round so far (LLaMA 2 found that keeping only the latest round's winners
regressed).  Intermediate models go to ``output_dir/round-R``, the last one to ``output_dir`` itself.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from lyrictool.console import console, print_dry_run
from lyrictool.distributed import barrier, gather_object, rank, world_size
from lyrictool.errors import UserError
from lyrictool.recipes import BaseRecipe, EngineSpec, SFTRecipe, derived_recipe, recipe_source
from lyrictool.rewards import RewardSpec, SafetyRule, default_rule_specs
from lyrictool.training import Timer, is_main_process, write_run_files

log = logging.getLogger("lyrictool")

SAMPLES_FILE = "samples.jsonl"


class SamplingSpec(EngineSpec):
    """How candidates are sampled from the policy (backend: transformers or vllm)."""

    k: int = Field(4, ge=1, description="Candidates per prompt (LLaMA 2 studied 1..100; gains grow with K).")
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature (LLaMA 2's best drifted to ~1.2).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    max_new_tokens: int = Field(160, gt=0, description="Maximum new tokens per candidate.")
    batch_size: int = Field(8, gt=0, description="Prompts per generate() call (each with k candidates).")


class RejectionSampleRecipe(BaseRecipe):
    """`lyrictool rejection-sample`: K candidates per prompt, keep the best by the rewards, optionally SFT on them."""

    trl_config = ("trl", "SFTConfig")  # `train` configures the SFT on the winners

    sampling: SamplingSpec = Field(default_factory=SamplingSpec, description="K, temperature, top-p, lengths.")
    rewards: list[RewardSpec] = Field(default_factory=default_rule_specs,
                                      description="Weighted rewards that rank the candidates (lyrictool.rewards).")
    safety_rule: SafetyRule | None = Field(
        None, description="LLaMA 2's rule between the scorer and a safety scorer (tau chosen on calibration data), "
                          "or Safe RLHF's Lagrangian; absent: the weighted sum (with override_below, if set).")
    finetune: bool = Field(False, description="SFT the policy on the best candidates after sampling.")
    rounds: int = Field(1, ge=1, description="Repeat sample -> select -> SFT; needs finetune: true when > 1.")

    @model_validator(mode="after")
    def _rounds_need_finetune(self) -> RejectionSampleRecipe:
        if self.rounds > 1 and not self.finetune:
            raise ValueError(f"rounds: {self.rounds} needs finetune: true (each round samples from the model the "
                             "previous round fine-tuned)")
        return self


# --------------------------------------------------------------------------------------------------------------
# Prompts and the resumable samples file


@dataclass
class Prompt:
    id: str
    where: str
    controls: dict
    safety: bool | None = None  # the row's safety tag (a red-team request)


def load_prompts(recipe: RejectionSampleRecipe) -> list[Prompt]:
    """Prompt rows {id?, controls?, lyrics?}: stated controls, plus those the recipe derives from lyrics."""
    from lyrictool.data.prompts import load_prompt_rows

    data = recipe.data.model_copy(update={"control_dropout": 0.0})
    rows = load_prompt_rows(data.train, data=data, rng=random.Random(recipe.seed), what="data.train")
    if data.max_rows:
        rows = random.Random(recipe.seed).sample(rows, min(data.max_rows, len(rows)))
    prompts: list[Prompt] = []
    seen: dict[str, str] = {}
    for row in rows:
        pid = row.id if row.id is not None else row.where
        if pid in seen:
            raise UserError(f"duplicate id {pid!r} (first at {seen[pid]}); ids name prompts in samples.jsonl",
                            where=row.where)
        seen[pid] = row.where
        prompts.append(Prompt(pid, row.where, row.controls.to_dict(), row.safety))
    return prompts


def read_samples(path: Path, *, repair: bool = True) -> list[dict]:
    """The rows already written; a last line torn by a kill is cut off (``repair``) so appending continues cleanly."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    good_end = raw.rfind(b"\n") + 1
    rows = []
    for i, line in enumerate(raw[:good_end].decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise UserError("not valid JSON; it is not a line this command wrote (move the file away to start "
                            "over)", where=f"{path}:{i}") from None
    if good_end < len(raw) and repair:
        log.warning("%s: dropping a torn last line (interrupted write); that prompt is sampled again", path)
        with path.open("r+b") as f:
            f.truncate(good_end)
    return rows


def part_file(samples_path: Path, rank_: int) -> Path:
    """Where rank ``rank_`` of a multi-process run appends its rows: ``samples.rank<r>.jsonl`` beside the file."""
    return samples_path.with_name(f"{samples_path.stem}.rank{rank_}{samples_path.suffix}")


def part_files(samples_path: Path) -> list[Path]:
    """The rank part files beside ``samples_path``, in rank order (any number of ranks, e.g. a killed 8-GPU run)."""
    prefix, suffix = f"{samples_path.stem}.rank", samples_path.suffix
    found = [(int(p.name[len(prefix):-len(suffix)]), p) for p in samples_path.parent.glob(f"{prefix}*{suffix}")
             if p.name[len(prefix):-len(suffix)].isdigit()]
    return [p for _, p in sorted(found)]


def fold_parts(samples_path: Path, order: Sequence[str] = (), *, remove: bool = True) -> int:
    """Append to ``samples_path`` the rows of the rank part files that it lacks; returns how many were added.

    One writer (the main process).  A (round, id) already in the file, or seen in an earlier part, is skipped, so
    folding again after a kill between the append and the removal duplicates nothing.  New rows go in (round,
    prompt) order, ``order`` being the prompt ids in prompt order.  A torn last line in the file or a part is cut
    off (:func:`read_samples`): that prompt is sampled again.  ``remove``: delete the parts once folded (else
    each rank removes its own).
    """
    parts = part_files(samples_path)
    if not parts:
        return 0
    have = {(row.get("round"), row.get("id")) for row in read_samples(samples_path)}
    new: list[dict] = []
    for part in parts:
        for row in read_samples(part, repair=remove):
            key = (row.get("round"), row.get("id"))
            if key not in have:
                have.add(key)
                new.append(row)
    pos = {pid: i for i, pid in enumerate(order)}
    new.sort(key=lambda row: (row.get("round", 0), pos.get(row.get("id"), len(pos))))  # stable: unknown ids last
    if new:
        with samples_path.open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in new)
            f.flush()
            os.fsync(f.fileno())  # on disk before any part is removed
    if remove:
        for part in parts:
            part.unlink()
    return len(new)


def scored_row(prompt: Prompt, round_: int, user_text: str, samples: list, scored: list) -> dict[str, Any]:
    cands = [{"lyrics": s.text, **sc.as_dict(), "new_tokens": s.new_tokens} for s, sc in zip(samples, scored)]
    totals = [sc.total for sc in scored]
    best = max(range(len(totals)), key=lambda i: totals[i])   # first of equals
    worst = min(range(len(totals)), key=lambda i: totals[i])
    return {"id": prompt.id, "round": round_, "controls": prompt.controls, "prompt": user_text,
            **({"safety": prompt.safety} if prompt.safety is not None else {}),
            "candidates": cands, "best": best, "worst": worst, "chosen": cands[best]["lyrics"],
            "rejected": cands[worst]["lyrics"], "reward_gap": round(totals[best] - totals[worst], 6)}


def sample_round(recipe: RejectionSampleRecipe, policy: str, prompts: list[Prompt], round_: int, rewards,
                 out_file: Path, timer: Timer, *, first: int = 0, stride: int = 1) -> dict[str, Any]:
    """Sample, score and append one row per prompt; returns throughput numbers.

    ``prompts`` is ``todo[first::stride]`` of the round's to-do list (one rank's share; all of it in one process);
    seeds follow each prompt's to-do index (:mod:`lyrictool.generation`: per prompt on vLLM, per batch on
    transformers), so no two draws, on any rank, share a seed, and one process draws what it always drew."""
    from lyrictool.controls import build_prompt
    from lyrictool.generation import open_sampler, sample_lyrics

    s = recipe.sampling
    with timer("load_policy"):
        sampler = open_sampler(recipe.model.model_copy(update={"name": policy, "lora": None, "quantization": "none"})
                               if policy != recipe.model.name else recipe.model, s, seed=recipe.seed,
                               batch_size=s.batch_size)
    n_cands = n_tokens = 0
    t0 = time.perf_counter()
    with out_file.open("a", encoding="utf-8") as f:
        for start in range(0, len(prompts), s.batch_size):
            chunk = prompts[start:start + s.batch_size]
            with timer("generate"):
                outs = sample_lyrics(sampler, [p.controls for p in chunk], n=s.k, max_new_tokens=s.max_new_tokens,
                                     temperature=s.temperature, top_p=s.top_p, seed=recipe.seed + 100_003 * round_,
                                     first_index=first + start * stride, stride=stride)
            with timer("score"):
                scored = rewards.score([p.controls for p in chunk for _ in range(s.k)],
                                       [x.text for samples in outs for x in samples],
                                       [p.safety for p in chunk for _ in range(s.k)])
                rewards.end_step()  # the lagrangian's multiplier: one step per batch of prompts
            for i, (p, samples) in enumerate(zip(chunk, outs)):
                row = scored_row(p, round_, build_prompt(p.controls), samples, scored[i * s.k:(i + 1) * s.k])
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
                f.flush()  # one complete line per prompt: a kill loses at most the line being written
                n_cands += len(samples)
                n_tokens += sum(x.new_tokens for x in samples)
            who = f"rank {first}: " if stride > 1 else ""
            console.print(f"  {who}round {round_}: {min(start + s.batch_size, len(prompts))}/{len(prompts)} prompts")
    elapsed = time.perf_counter() - t0
    sampler.close()  # a vLLM engine's memory back before the fine-tuning that may follow
    return {"prompts": len(prompts), "candidates": n_cands, "seconds": round(elapsed, 3),
            "candidates_per_s": round(n_cands / elapsed, 3) if elapsed else None, "new_tokens": n_tokens}


def sample_on_every_rank(recipe: RejectionSampleRecipe, policy: str, todo: list[Prompt], round_: int, rewards,
                         samples_path: Path, prompts: list[Prompt], timer: Timer) -> dict[str, Any]:
    """Every rank samples its share ``todo[rank::world]`` into its part file; the main process merges the parts into
    ``samples_path`` and each rank removes its own.  In one process the rows go straight to ``samples_path``.
    Returns the round's sampling numbers: totals, ``seconds`` of the slowest rank (they run at once) and per rank."""
    world, me = world_size(), rank()
    target = samples_path if world == 1 else part_file(samples_path, me)
    mine = todo[me::world]
    if mine:
        done = sample_round(recipe, policy, mine, round_, rewards, target, timer, first=me, stride=world)
    else:  # fewer to-do prompts than ranks: this one has none (and loads no model)
        done = {"prompts": 0, "candidates": 0, "seconds": 0.0, "new_tokens": 0}
    ranks = gather_object({"rank": me, **{k: done[k] for k in ("prompts", "candidates", "seconds", "new_tokens")}})
    if world > 1:  # every part is complete and closed once all ranks reached the gather
        if is_main_process():
            fold_parts(samples_path, [p.id for p in prompts], remove=False)
        barrier()
        target.unlink(missing_ok=True)  # merged: each rank removes its own part (a kill before this: folded again)
    n_cands, seconds = sum(x["candidates"] for x in ranks), max(x["seconds"] for x in ranks)
    return {"prompts": sum(x["prompts"] for x in ranks), "candidates": n_cands, "seconds": seconds,
            "candidates_per_s": round(n_cands / seconds, 3) if seconds else None,
            "new_tokens": sum(x["new_tokens"] for x in ranks), "ranks": ranks}


# --------------------------------------------------------------------------------------------------------------
# Selection and fine-tuning


def best_across_rounds(rows: list[dict], upto: int) -> dict[str, dict]:
    """Per prompt id, the best candidate of rounds 1..upto (with its row's controls)."""
    best: dict[str, dict] = {}
    for row in rows:
        if row["round"] > upto:
            continue
        cand = row["candidates"][row["best"]]
        if row["id"] not in best or cand["reward"] > best[row["id"]]["reward"]:
            best[row["id"]] = {**cand, "controls": row["controls"], "round": row["round"]}
    return best


def round_model_dir(recipe: RejectionSampleRecipe, round_: int) -> Path:
    out = Path(recipe.output_dir)
    return out if round_ == recipe.rounds else out / f"round-{round_}"


def has_model(path: Path) -> bool:
    return (path / "config.json").exists() and any(path.glob("*.safetensors"))


def finetune_on_winners(recipe: RejectionSampleRecipe, policy: str, winners: dict[str, dict], model_dir: Path,
                        timer: Timer) -> dict[str, Any]:
    """SFT (the `lyrictool sft` trainer) from the current policy on the pooled winners; a full model in model_dir."""
    from lyrictool.controls import build_messages
    from lyrictool.data.lyrics_rows import target_text
    from lyrictool.distributed import trainer_model
    from lyrictool.modeling import merge_lora
    from lyrictool.training import loss_summary, train_sft

    rows = [build_messages(w["controls"], target_text(w["lyrics"], recipe.data.hints, recipe.data.scheme))
            for w in winners.values() if w["lyrics"].strip()]
    if not rows:
        raise UserError("no non-empty winner to fine-tune on; raise sampling.max_new_tokens or sampling.k",
                        where=recipe_source(recipe))
    model = recipe.model if policy == recipe.model.name else \
        recipe.model.model_copy(update={"name": policy, "quantization": "none"})
    sft = derived_recipe(SFTRecipe, recipe_source(recipe), model=model, data=recipe.data, train=recipe.train,
                         output_dir=str(model_dir), seed=recipe.seed)
    trainer, _ = train_sft(sft, rows, [], timer=timer)
    if recipe.model.lora is not None:  # next round and users load a plain model folder
        merge_lora(trainer_model(trainer), model_dir)  # every rank: gathered, merged and saved on the main one
    return {"rows": len(rows), **loss_summary(trainer)}


def full_model_policy(recipe: RejectionSampleRecipe) -> str:
    """The starting policy as a full model: a LoRA adapter folder (e.g. a LoRA `lyrictool sft` output) is merged
    once into output_dir/policy-merged, so every round loads, samples and fine-tunes one plain model."""
    src = Path(recipe.model.name).expanduser()
    if not (src / "adapter_config.json").exists():
        return recipe.model.name
    target = Path(recipe.output_dir) / "policy-merged"
    if not has_model(target) and is_main_process():
        from peft import AutoPeftModelForCausalLM

        from lyrictool.modeling import load_tokenizer, merge_lora, resolve_dtype

        console.print(f"merging the LoRA adapter {src} into {target}")
        adapter = AutoPeftModelForCausalLM.from_pretrained(src, dtype=resolve_dtype(recipe.model.dtype))
        merge_lora(adapter).save_pretrained(target)  # loaded here only: merged in place on the main process
        load_tokenizer(str(src)).save_pretrained(target)
    barrier()  # the other ranks read it once it is complete
    return str(target)


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 6) if xs else None


def round_stats(rows: list[dict], round_: int) -> dict[str, Any]:
    mine = [r for r in rows if r["round"] == round_]
    best = [r["candidates"][r["best"]] for r in mine]
    comps = sorted({k for b in best for k in b["rewards"]})
    return {"prompts": len(mine),
            "best_reward_mean": _mean([b["reward"] for b in best]),
            "worst_reward_mean": _mean([r["candidates"][r["worst"]]["reward"] for r in mine]),
            "candidate_reward_mean": _mean([c["reward"] for r in mine for c in r["candidates"]]),
            "best_components_mean": {k: _mean([b["rewards"][k] for b in best]) for k in comps}}


def run_rejection_sample(recipe: RejectionSampleRecipe, *, dry_run: bool = False) -> dict:
    from lyrictool.rewards import Rewards, check_reward_specs

    timer = Timer()
    where = recipe_source(recipe)
    check_reward_specs(recipe.rewards, where=where, rule=recipe.safety_rule)
    with timer("data"):
        prompts = load_prompts(recipe)
    out = Path(recipe.output_dir)
    samples_path = out / SAMPLES_FILE
    if dry_run:
        done = len({(row.get("round"), row.get("id")) for path in [samples_path, *part_files(samples_path)]
                    for row in read_samples(path, repair=False)})
        print_dry_run(recipe, {"prompts": len(prompts), "candidates per round": len(prompts) * recipe.sampling.k,
                               "rewards": ", ".join(f"{s.name}x{s.weight}" for s in recipe.rewards),
                               "rows already sampled (samples.jsonl and part files)": done})
        return {}
    out.mkdir(parents=True, exist_ok=True)
    rewards = Rewards(list(recipe.rewards), scheme=recipe.data.scheme, strictness=recipe.data.rhyme_strictness,
                      rule=recipe.safety_rule)
    if is_main_process():  # a torn last line is cut off; what any rank of a killed run finished counts as done
        read_samples(samples_path)
        folded = fold_parts(samples_path, [p.id for p in prompts])
        if folded:
            console.print(f"kept {folded} rows from the part files of an interrupted run")
    barrier()
    rows = read_samples(samples_path, repair=False)
    policy = full_model_policy(recipe)
    per_round = []
    for r in range(1, recipe.rounds + 1):
        done = {row["id"] for row in rows if row.get("round") == r}
        todo = [p for p in prompts if p.id not in done]
        info: dict[str, Any] = {"round": r, "policy": policy, "resumed_rows": len(prompts) - len(todo)}
        if todo:  # every rank samples its share; the main process merges the shares into samples.jsonl
            if is_main_process():
                console.print(f"round {r}: sampling {recipe.sampling.k} candidates for {len(todo)} prompts "
                              f"({len(prompts) - len(todo)} already done) from {policy}"
                              + (f" on {world_size()} processes" if world_size() > 1 else ""))
            info["sampling"] = sample_on_every_rank(recipe, policy, todo, r, rewards, samples_path, prompts, timer)
            rows = read_samples(samples_path, repair=False)
        ids = {p.id for p in prompts}
        info.update(round_stats([row for row in rows if row["id"] in ids], r))
        if recipe.finetune:
            model_dir = round_model_dir(recipe, r)
            winners = {k: v for k, v in best_across_rounds(rows, r).items() if k in ids}
            info["pooled_best_reward_mean"] = _mean([w["reward"] for w in winners.values()])
            if has_model(model_dir):
                console.print(f"round {r}: model already in {model_dir}; skipping its SFT")
            else:
                with timer(f"finetune_round_{r}"):
                    info["finetune"] = finetune_on_winners(recipe, policy, winners, model_dir, timer)
            policy = str(model_dir)
        per_round.append(info)
    last = per_round[-1]
    summary = {"metrics": {"best_reward_mean": last["best_reward_mean"],
                           "candidate_reward_mean": last["candidate_reward_mean"],
                           "pooled_best_reward_mean": last.get("pooled_best_reward_mean"),
                           "rounds": per_round},
               "samples": str(samples_path), "prompts": len(prompts), "k": recipe.sampling.k,
               "model": policy if recipe.finetune else None, "safety_rule": rewards.rule_report(),
               "timings_s": timer.times, "cpu_s": timer.cpu}
    if is_main_process():
        path = write_run_files(recipe, "rejection-sample", summary)
        console.print(f"[bold green]rejection-sample done[/]: best reward {last['best_reward_mean']} vs mean "
                      f"candidate {last['candidate_reward_mean']} over {len(prompts)} prompts x K="
                      f"{recipe.sampling.k}; {SAMPLES_FILE}{' and model' if recipe.finetune else ''} and "
                      f"{path.name} in {out}")
    return summary

