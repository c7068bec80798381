"""`lyrictool inject`: three-stage knowledge injection, each stage a TRL SFTTrainer run.

    memorize    continued pre-training on knowledge texts (plain language-modelling loss)
    understand  question answering on that knowledge (prompt/completion, completion-only loss)
    utilize     the real task: lyrics SFT, usually with phonetic hints (the `sft` command's data pipeline)

Stages run in the recipe's order (skip one with ``skip: true``, repeat one by listing it twice); stage *i*
loads the model stage *i-1* saved in ``output_dir/stage-<i-1>-<name>`` and saves its own there; the last
stage's model is also saved in ``output_dir``, with the knowledge questions (``qa_train.jsonl``, and the
held-out ``qa_eval.jsonl`` that ``lyrictool eval``'s ``knowledge_qa`` reads).  A LoRA adapter is merged after each stage so the next stage
starts from full weights.  After each stage the model answers held-out knowledge questions (subjects never
seen in the understand stage, the out-of-distribution test of "Physics of Language Models 3.1") so the
summary shows what each stage added and whether the task stage kept it.

``mix_qa: true`` on a memorize stage trains it on the understand stage's questions too, mixed with the texts
(rendered by the chat template, plain language-modelling loss): the "mixed training" that Physics of Language
Models 3.1 found makes stored facts extractable for the held-out subjects; skip the understand stage then.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from lyrictool.errors import UserError
from lyrictool.knowledge import Augmentation, KnowledgeSource
from lyrictool.recipes import (
    TRL_DEFAULTS,
    DataSpec,
    GenerationSpec,
    ModelSpec,
    SFTRecipe,
    Strict,
    derived_recipe,
    recipe_source,
    with_train_defaults,
)

log = logging.getLogger("lyrictool")

STAGES = ("memorize", "understand", "utilize")


class InjectStage(Strict):
    """One TRL run. memorize/understand train on the recipe's knowledge; utilize on its own lyrics data."""

    name: Literal["memorize", "understand", "utilize"] = Field(..., description="Which stage this is.")
    train: dict[str, Any] = Field(default_factory=dict, validate_default=True, description="SFTConfig keys for this stage "
                                  "(max_steps, learning_rate, ...).")
    data: DataSpec | None = Field(None, description="utilize only: the lyrics data (as in `sft`).")
    skip: bool = Field(False, description="Leave this stage out of the run.")
    mix_qa: bool = Field(False, description="memorize only: also train on the understand stage's questions "
                         "(never the held-out ones), rendered by the chat template and mixed with the knowledge "
                         "texts (the mixed training of Physics of Language Models 3.1).")
    eval_generation: GenerationSpec = Field(
        default_factory=lambda: GenerationSpec(num_prompts=8),
        description="utilize only: generate for this many eval prompts at the end and score them.")

    @field_validator("train")
    @classmethod
    def _resolve_train_defaults(cls, v: dict[str, Any]) -> dict[str, Any]:
        return with_train_defaults(v, TRL_DEFAULTS)

    @model_validator(mode="after")
    def _data_matches_stage(self) -> InjectStage:
        if self.name == "utilize" and self.data is None:
            raise ValueError("the utilize stage needs data: (lyrics rows, as in the sft recipe)")
        if self.name != "utilize" and self.data is not None:
            raise ValueError(f"the {self.name} stage trains on the recipe's knowledge:, not on data:; "
                             "remove data: here")
        if self.eval_generation.backend != "transformers":
            raise ValueError("eval_generation.backend: inject samples from the model it has just trained, in "
                             "memory (with its knowledge QA); only backend: transformers")
        if self.mix_qa and self.name != "memorize":
            raise ValueError(f"mix_qa: only the memorize stage mixes the questions into its texts, not "
                             f"{self.name}; remove mix_qa here")
        return self


class InjectRecipe(Strict):
    """`lyrictool inject`: knowledge sources, augmentation, and the stages in order."""

    model: ModelSpec = Field(default_factory=ModelSpec, description="The model the first stage starts from.")
    knowledge: list[KnowledgeSource] = Field(default_factory=list, description="builtin:phonetic, "
                                             "{triples: FILE}, {documents: FILE}.")
    augment: Augmentation = Field(default_factory=Augmentation, description="Paraphrase augmentation of "
                                  "knowledge texts.")
    qa_eval_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="Share of subjects whose questions are "
                                    "held out of the understand stage and used to test extraction.")
    qa_eval_max: int = Field(64, ge=0, description="Ask at most this many questions per evaluation (0 = none).")
    stages: list[InjectStage] = Field(..., min_length=1, description="Stages in the order they run.")
    output_dir: str = Field(..., description="Stage folders, the final model, recipe.yaml and summary.json.")
    seed: int = Field(42, description="Random seed.")

    trl_config: ClassVar[tuple[str, str]] = ("trl", "SFTConfig")

    @model_validator(mode="after")
    def _knowledge_for_knowledge_stages(self) -> InjectRecipe:
        needs = [s.name for s in self.stages if not s.skip and s.name != "utilize"]
        if needs and not self.knowledge:
            raise ValueError(f"stages {', '.join(needs)} train on knowledge, but knowledge: is empty; add e.g. "
                             "knowledge: [builtin:phonetic]")
        if all(s.skip for s in self.stages):
            raise ValueError("every stage has skip: true; nothing to run")
        if self.model.quantization != "none":
            raise ValueError("model.quantization: inject merges each stage's LoRA into the weights before the "
                             "next stage, which 4/8-bit weights do not allow; use quantization: none")
        return self


def knowledge_rows(recipe: InjectRecipe):
    """Memorize texts, understand QA rows, and held-out QA for evaluation."""
    from lyrictool.knowledge import split_qa_by_subject
    from lyrictool.knowledge.build import build_knowledge

    ks = build_knowledge(recipe.knowledge, recipe.augment, seed=recipe.seed)
    qa_train, qa_eval = split_qa_by_subject(ks.qa, recipe.qa_eval_fraction, recipe.seed)
    return ks, qa_train, qa_eval


def qa_messages(rows: list[dict]) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": r["question"]}],
             "completion": [{"role": "assistant", "content": r["answer"]}]} for r in rows]


def params_fingerprint(model_or_state_dict) -> str:
    """A short digest of every weight: equal digests = same weights (to show each stage starts from the last)."""
    import hashlib

    import torch

    sd = model_or_state_dict if isinstance(model_or_state_dict, dict) else model_or_state_dict.state_dict()
    h = hashlib.sha1()
    with torch.no_grad():
        for name, p in sorted(sd.items()):
            h.update(name.encode())
            h.update(f"{float(p.double().sum()):.10e}|{float(p.double().abs().sum()):.10e}".encode())
    return h.hexdigest()[:16]


def _stage_recipe(recipe: InjectRecipe, stage: InjectStage, model_name: str, out_dir: str) -> SFTRecipe:
    data = stage.data or DataSpec(train="builtin:knowledge")  # knowledge stages train on the knowledge, not data
    return derived_recipe(SFTRecipe, recipe_source(recipe), model=recipe.model.model_copy(update={"name": model_name}),
                          data=data, train=stage.train, output_dir=out_dir, seed=recipe.seed,
                          eval_generation=stage.eval_generation)


def _validate_stage_train(recipe: InjectRecipe) -> None:
    from lyrictool.recipes import load_config_class, recipe_source, validate_train_keys

    config_cls = load_config_class(InjectRecipe)
    for i, stage in enumerate(recipe.stages):
        checked = validate_train_keys(stage.train, config_cls,
                                      where=f"{recipe_source(recipe)}: stages[{i}] ({stage.name})")
        if isinstance(checked, dict):
            stage.train = checked


def run_inject(recipe: InjectRecipe, *, dry_run: bool = False) -> dict:
    from pathlib import Path

    from lyrictool.console import console, print_dry_run
    from lyrictool.data.lyrics_rows import sft_datasets
    from lyrictool.training import Timer, write_run_files

    _validate_stage_train(recipe)
    timer = Timer()
    with timer("data"):
        ks, qa_train, qa_eval = knowledge_rows(recipe)
        plan = []
        for i, stage in enumerate(recipe.stages):
            if stage.skip:
                continue
            if stage.name == "memorize":  # mix_qa: the questions are rendered when the tokenizer is at hand
                rows, eval_rows = [{"text": t} for t in ks.texts], []
                extra = {"mix_qa": qa_train} if stage.mix_qa else {}
                if stage.mix_qa and not qa_train:
                    raise UserError(f"stages[{i}] (memorize): mix_qa: true, but the knowledge gave no questions "
                                    "to mix in")
            elif stage.name == "understand":
                rows, eval_rows, extra = qa_messages(qa_train), qa_messages(qa_eval), {}
            else:
                stage_recipe = _stage_recipe(recipe, stage, recipe.model.name, recipe.output_dir)
                train_rows, eval_rows, eval_controls, stats = sft_datasets(stage_recipe.data, stage_recipe.seed)
                rows, extra = train_rows, {"eval_controls": eval_controls, "stats": stats.as_dict()}
            if not rows:
                raise UserError(f"stages[{i}] ({stage.name}): no training rows (the knowledge gave "
                                f"{len(ks.texts)} texts and {len(qa_train)} questions)")
            plan.append((i, stage, rows, eval_rows, extra))
    if dry_run:
        print_dry_run(recipe, {"knowledge texts": len(ks.texts), "knowledge questions (train / held out)":
                               f"{len(qa_train)} / {len(qa_eval)}",
                               "stages": ", ".join(f"{i}:{s.name} ({len(r)} rows"
                                                   + (f" + {len(x['mix_qa'])} questions mixed in" if x.get("mix_qa")
                                                      else "") + ")" for i, s, r, _, x in plan)})
        return {}

    from lyrictool.distributed import full_params, full_state_dict, save_full_model, trainer_model
    from lyrictool.generation import TransformersSampler
    from lyrictool.knowledge import qa_chat_texts
    from lyrictool.knowledge.evaluate import evaluate_qa
    from lyrictool.modeling import load_tokenizer, merge_lora, to_accelerator
    from lyrictool.training import (
        generates_here,
        generation_metrics,
        is_main_process,
        loss_summary,
        train_sft,
    )

    def knowledge_scores(model, tokenizer) -> dict:
        if not recipe.qa_eval_max or not ks.qa:
            return {}
        out = {}
        for split, rows in (("held_out", qa_eval), ("seen", qa_train)):
            if rows:
                out[split], _ = evaluate_qa(model, tokenizer, rows[: recipe.qa_eval_max])
        return out

    if is_main_process() and ks.qa:  # the questions, for `lyrictool eval` (knowledge_qa: OUTPUT_DIR/qa_eval.jsonl)
        from lyrictool.data import write_jsonl

        write_jsonl(Path(recipe.output_dir) / "qa_train.jsonl", qa_train)
        if qa_eval:
            write_jsonl(Path(recipe.output_dir) / "qa_eval.jsonl", qa_eval)
    model_name = recipe.model.name
    stages_summary = []
    trainer = lm = None
    for i, stage, rows, eval_rows, extra in plan:
        out_dir = str(Path(recipe.output_dir) / f"stage-{i}-{stage.name}")
        sft = _stage_recipe(recipe, stage, model_name, out_dir)
        stage_timer = Timer()
        start: dict[str, str] = {}

        def fingerprint_start(lm, start=start) -> None:
            if is_main_process():  # under FSDP low-memory loading only the main process holds the weights
                start["fp"] = params_fingerprint(lm.model)

        if extra.get("mix_qa"):  # every stage keeps the first one's tokenizer
            rows = rows + [{"text": t} for t in qa_chat_texts(extra["mix_qa"], load_tokenizer(
                model_name, recipe.model.trust_remote_code))]
        console.print(f"[bold]stage {i}: {stage.name}[/] from {model_name} ({len(rows)} rows)")
        trainer, lm = train_sft(sft, rows, eval_rows, timer=stage_timer, on_load=fingerprint_start)
        merged = None
        if recipe.model.lora is not None:  # merge, so the next stage (and serve) load plain weights
            merged = merge_lora(trainer_model(trainer), out_dir)  # every rank; merged and saved on the main one
            if merged is not None:
                to_accelerator(merged)
            end = params_fingerprint(merged) if is_main_process() else None
        else:  # gathered from the shards when sharded (collective)
            weights = full_state_dict(trainer_model(trainer))
            end = params_fingerprint(weights) if is_main_process() else None
            del weights
        losses = loss_summary(trainer)
        info: dict[str, Any] = {"index": i, "name": stage.name, "dir": out_dir, "rows": len(rows),
                                "eval_rows": len(eval_rows), "steps": losses.pop("global_step"), **losses,
                                "started_from": model_name, "start_fingerprint": start.get("fp"),
                                "end_fingerprint": end}
        if eval_rows:
            info["eval_loss"] = trainer.evaluate().get("eval_loss")
        # evaluate the merged model on the main process, or the trained one (gathered if sharded)
        with (nullcontext(merged) if recipe.model.lora is not None else full_params(trainer_model(trainer))) as model:
            here = is_main_process() if recipe.model.lora is not None else generates_here(trainer)
            with stage_timer("knowledge_eval"):
                info["knowledge_qa"] = knowledge_scores(model, lm.tokenizer) if here else {}
            if stage.name == "utilize" and here and extra.get("eval_controls"):
                with stage_timer("eval_generation"):
                    info["generation"], _ = generation_metrics(
                        TransformersSampler(model, lm.tokenizer, batch_size=stage.eval_generation.batch_size,
                                            rhyme_guard=stage.eval_generation.rhyme_guard),
                        extra["eval_controls"], stage.eval_generation, seed=recipe.seed, scheme=stage.data.scheme)
                info["data"] = extra["stats"]
        info["time_s"] = round(sum(stage_timer.times.values()), 3)
        info["timings_s"], info["cpu_s"] = stage_timer.times, stage_timer.cpu
        for k, v in stage_timer.times.items():
            timer.times[f"stage-{i}-{k}"] = v
            timer.cpu[f"stage-{i}-{k}"] = stage_timer.cpu.get(k, 0.0)
        stages_summary.append(info)
        held = info["knowledge_qa"].get("held_out", {})
        console.print(f"  loss {info['train_loss_first']} -> {info['train_loss_last']} in {info['steps']} steps, "
                      f"{info['time_s']} s" + (f"; held-out knowledge QA exact {held['exact_match']:.2f} "
                                               f"contains {held['contains']:.2f}" if held else ""))
        model_name = out_dir

    if merged is not None:
        merged.save_pretrained(recipe.output_dir)  # the main process holds the merged model
    elif recipe.model.lora is None:
        save_full_model(trainer, recipe.output_dir)  # collective when sharded
    if is_main_process():
        lm.tokenizer.save_pretrained(recipe.output_dir)
    summary = {"stages": stages_summary, "timings_s": timer.times, "cpu_s": timer.cpu,
               "knowledge": {"texts": len(ks.texts), "facts": len(ks.facts), "questions_train": len(qa_train),
                             "questions_held_out": len(qa_eval)},
               "metrics": {"knowledge_qa": stages_summary[-1]["knowledge_qa"],
                           "generation": stages_summary[-1].get("generation")}}
    if is_main_process():
        path = write_run_files(recipe, "inject", summary)
        console.print(f"[bold green]inject done[/]: {len(stages_summary)} stages; final model and {path.name} in "
                      f"{recipe.output_dir}")
    return summary
