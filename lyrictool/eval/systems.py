"""The systems of `lyrictool eval`: its recipe, reading or generating each system's songs, scoring, comparing.

A *system* is a model to generate from (fixed prompt file with controls, fixed seed, batched sampling) or a
file of existing generations (e.g. a GPT-4 baseline collected elsewhere).  Per system: the objective metrics
(:func:`lyrictool.metrics.song_metrics`), the learned scorer's mean when ``scorer`` is given, knowledge QA
accuracy when ``knowledge_qa`` is given (model systems), the perplexity of the lyric lines under one frozen
reference model when ``fluency`` is given (:mod:`lyrictool.eval.fluency`).  With two or more systems: each against
the baseline with a paired bootstrap 95% CI per metric (perplexity: the ratio), and pairwise scorer win rates
(:mod:`lyrictool.eval.compare`).

    systems:
      - {name: base, model: builtin:tiny-zh}
      - {name: sft, model: runs/sft-tiny}
      - {name: gpt4, generations: gpt4.jsonl}
    prompts: builtin:eval-prompts
    generation: {num_prompts: 64, max_new_tokens: 160, temperature: 0.7}
    scorer: runs/score-tiny
    output_dir: runs/eval

``lyrictool eval --input A.jsonl`` alone scores one file (:func:`lyrictool.commands.eval.run_eval_input`);
``--input A --input B`` compares files; ``--mos-sheet`` / ``--mos-ratings`` / ``--report`` work with either.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from lyrictool.errors import UserError
from lyrictool.eval.fluency import FluencySpec
from lyrictool.eval.safety import CopyingSpec, SafetyEvalSpec
from lyrictool.recipes import (
    GenerationSpec,
    ModelSpec,
    SchemeName,
    Strict,
    looks_like_local_path,
    recipe_source,
)

log = logging.getLogger("lyrictool")

#: Metrics shown side by side and compared (all in [0, 1]); lower is better only for repetition.
COMPARED_METRICS = ("rhyme_accuracy", "rhyme_density", "rhyme_accuracy_near", "rhyme_density_near",
                    "line_length_accuracy", "line_length_accuracy_pm1",
                    "structure_accuracy", "format_validity", "distinct_1", "distinct_2", "repetition_rate",
                    "repeated_lines")
LOWER_IS_BETTER = frozenset({"repetition_rate", "repeated_lines"})


class SystemSpec(Strict):
    """One system to evaluate: a model to generate from, or a file of its generations."""

    name: str = Field(..., min_length=1, description="Label in tables, reports and the MOS key.")
    model: ModelSpec | None = Field(
        None, description="Generate from this model (a folder written by a lyrictool command, a hub name, or "
                          "builtin:tiny-zh). A plain string is the model name.")
    generations: str | None = Field(
        None, description="Or score existing generations: JSONL rows {id, lyrics, controls}; ids matching the "
                          "prompt file's pair the songs across systems.")

    @field_validator("model", mode="before")
    @classmethod
    def _name_shorthand(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _one_source(self) -> SystemSpec:
        if (self.model is None) == (self.generations is None):
            raise ValueError(f"system {self.name!r}: give exactly one of model (generate) or generations (a file)")
        if self.generations is not None and not Path(self.generations).expanduser().is_file():
            raise ValueError(f"system {self.name!r}: generations file not found: {self.generations}")
        return self


class EvalRecipe(Strict):
    """`lyrictool eval RECIPE`: generate from / read each system, score, compare, report."""

    systems: list[SystemSpec] = Field(..., min_length=1, description="Systems to evaluate; the first is the "
                                      "baseline the others are compared with unless `baseline` says otherwise.")
    baseline: str | None = Field(None, description="Name of the system the others are compared with.")
    prompts: str = Field("builtin:eval-prompts", description="Prompt file for model systems: JSONL rows "
                         "{id, controls}.")
    generation: GenerationSpec = Field(
        default_factory=lambda: GenerationSpec(num_prompts=64, temperature=0.7),
        description="Sampling for model systems; num_prompts = the first N prompts of the prompt file (0 = all).")
    scheme: SchemeName = Field(
        "shisanzhe", description="Rhyme scheme for the metrics.")
    scorer: str | None = Field(None, description="A trained scorer folder (lyrictool score): adds the mean score "
                               "per system and pairwise win rates.")
    knowledge_qa: str | None = Field(None, description="QA rows {question, answer} (JSONL): adds knowledge "
                                     "accuracy (exact match, contains) for model systems.")
    safety: SafetyEvalSpec | None = Field(None, description="Red-team and harmless requests, answered by every "
                                          "system and judged: violation %, false-refusal % (docs/metrics.md).")
    copying: CopyingSpec | None = Field(None, description="A reference corpus: copying figures per system "
                                        "(longest common substring, verbatim lines, n-gram overlap).")
    fluency: FluencySpec | None = Field(None, description="A frozen reference model: per system the perplexity of "
                                        "its lyric lines (geometric mean, 95% CI), per pair the ratio with its "
                                        "paired bootstrap CI (docs/metrics.md#perplexity).")
    bootstrap_resamples: int = Field(2000, ge=100, description="Bootstrap resamples for the 95% CIs.")
    output_dir: str = Field("runs/eval", description="Where generations, result.json and plots go.")
    seed: int = Field(42, description="Sampling seed (the same for every system) and sheet shuffling.")

    @field_validator("prompts", "knowledge_qa")
    @classmethod
    def _exists(cls, v: str | None) -> str | None:
        if v is not None and looks_like_local_path(v) and not Path(v).expanduser().is_file():
            raise ValueError(f"file not found: {v} (paths are relative to the current directory)")
        return v

    @model_validator(mode="after")
    def _names(self) -> EvalRecipe:
        names = [s.name for s in self.systems]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"systems: duplicate name(s) {', '.join(dup)}; give each system its own name")
        if self.baseline is not None and self.baseline not in names:
            raise ValueError(f"baseline: {self.baseline!r} is not a system name ({', '.join(names)})")
        if self.fluency is not None and self.fluency.model is None and self.baseline_spec().model is None:
            raise ValueError(f"fluency.model: null means the baseline system's model, and {self.baseline_spec().name!r}"
                             " is a generations file; name the reference model")
        return self

    def baseline_spec(self) -> SystemSpec:
        return next(s for s in self.systems if s.name == (self.baseline or self.systems[0].name))

    def fluency_model(self) -> ModelSpec | None:
        """The reference model of the fluency figures (the baseline system's when ``fluency.model`` is null)."""
        if self.fluency is None:
            return None
        return self.fluency.model or self.baseline_spec().model


@dataclass
class SystemResult:
    """One system's songs (aligned with the prompts) and its aggregated results."""

    name: str
    source: str
    songs: list[dict] = field(default_factory=list)  # {id, controls, lyrics, metrics, score?}
    metrics: dict = field(default_factory=dict)
    scorer: dict | None = None
    knowledge: dict | None = None
    invalid_rows: int = 0
    safety_answers: list[dict] = field(default_factory=list)  # {id, controls, safety, category, lyrics, ...}
    safety: dict | None = None
    copying: dict | None = None
    fluency: dict | None = None  # the geometric-mean perplexity under the reference model, with its interval


# ---- inputs ----------------------------------------------------------------------------------------------------


def load_prompts(path: str, limit: int | None = None) -> list[dict]:
    """Prompt rows ``{id, controls}`` (controls validated; ``path:line`` on the first bad row); id = row number
    when the row has none."""
    from lyrictool.data.prompts import load_prompt_rows

    return [{"id": p.id if p.id is not None else str(i), "controls": p.controls.to_dict()}
            for i, p in enumerate(load_prompt_rows(path, limit=limit))]


def load_generations(path: str, scheme: str, skip_invalid: bool) -> tuple[list[dict], list[str]]:
    """Rows ``{id, controls, lyrics}`` of a generations file and the skipped rows' messages."""
    from lyrictool.eval.input import generation_rows

    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f'{path}: no such file; pass a JSONL file of {{"lyrics": ..., "controls": {{...}}}} rows')
    errors: list[str] = []
    rows = []
    for number, row in generation_rows(file, scheme, errors, skip_invalid):
        rid = row.get("id", row.get("prompt_id"))
        rows.append({"id": str(rid) if rid is not None else None, "controls": row.get("controls") or {},
                     "lyrics": row["lyrics"], "where": f"{path}:{number}"})
    if not rows:
        raise UserError(f"{path}: no valid rows to score")
    return rows, errors


def align(systems: list[SystemResult]) -> str | None:
    """Put every system's songs in the same prompt order; returns why they cannot be paired, or None.

    Songs pair by ``id`` when every song has one (keeping the ids all systems share), else by position when
    the systems have the same number of songs.
    """
    if len(systems) < 2:
        return None
    if all(s["id"] is not None for sr in systems for s in sr.songs):
        shared = set.intersection(*({s["id"] for s in sr.songs} for sr in systems))
        if not shared:
            return "no song id is shared by every system"
        order = [s["id"] for s in systems[0].songs if s["id"] in shared]
        for sr in systems:
            by_id = {s["id"]: s for s in sr.songs}
            dropped = len(sr.songs) - len(order)
            if dropped:
                log.warning("%s: %d songs have no counterpart in every system; compared on %d shared ids",
                            sr.name, dropped, len(order))
            sr.songs = [by_id[i] for i in order]
        return None
    sizes = {sr.name: len(sr.songs) for sr in systems}
    if len(set(sizes.values())) > 1:
        return f"songs cannot be paired: no ids, and the systems have different numbers of songs ({sizes})"
    return None


# ---- per system ------------------------------------------------------------------------------------------------


#: Prompts sampled per call before their rows are written (the unit a killed run loses): a multiple of the
#: batch size, large enough for vLLM's continuous batching.
CHUNK_PROMPTS = 256
PARTS_DIR = "parts"


def part_key(spec: SystemSpec, prompts: list[dict], gen: GenerationSpec, seed: int) -> str:
    """What a system's rows depend on: a part file written under other settings is not resumed from."""
    import hashlib
    import json

    what = {"model": spec.model.model_dump(), "generation": gen.model_dump(exclude={"batch_size", "vllm"}),
            "seed": seed, "prompts": [[p.get("id"), p["controls"]] for p in prompts]}
    return hashlib.sha256(json.dumps(what, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:12]


def read_parts(folder: Path, stem: str, *, repair: Path | None = None) -> dict[int, dict]:
    """Rows ``{index, id, lyrics}`` of every rank's part file ``<stem>.rank<r>.jsonl``, by prompt index.  A torn
    last line (a kill mid-write) is dropped, and cut off ``repair`` (this rank's own file) before it appends."""
    import json

    rows: dict[int, dict] = {}
    for part in sorted(folder.glob(f"{stem}.rank*.jsonl")):
        data = part.read_bytes()
        good = data[:data.rfind(b"\n") + 1]
        for line in good.decode("utf-8").splitlines():
            row = json.loads(line)
            rows[int(row["index"])] = row
        if part == repair and len(good) < len(data):
            with part.open("r+b") as f:
                f.truncate(len(good))
    return rows


def generate_system(spec: SystemSpec, name: str, prompts: list[dict], gen: GenerationSpec, seed: int,
                    qa: list[dict] | None, out_dir: Path, extra: list[dict] | None = None
                    ) -> tuple[list[dict], dict | None, list[dict]]:
    """One song per prompt and one answer per ``extra`` request (the safety eval's), fixed seed, batched, on every
    rank of a launcher (torchrun: each rank its strided share of the rows not yet done, its own sampler: a vLLM
    engine on its own device, or the model); the QA rows answered if given (main process).

    Each rank appends its rows to ``out_dir/parts/<name>-<key>.rank<r>.jsonl`` as they come (resumable: a rerun
    with the same model, prompts, sampling and seed samples only what is missing, whatever the number of ranks);
    every rank then reads all parts back, in prompt order.  ``run_eval`` removes the parts once the generations
    file is written."""
    import json

    from lyrictool.distributed import barrier, is_main_process, rank, world_size
    from lyrictool.generation import TransformersSampler, open_sampler, sample_lyrics

    asked = prompts + (extra or [])
    folder = out_dir / PARTS_DIR
    stem = f"{name}-{part_key(spec, asked, gen, seed)}"
    world, me = world_size(), rank()
    mine_file = folder / f"{stem}.rank{me}.jsonl"
    done = read_parts(folder, stem, repair=mine_file)
    barrier()  # every rank has read the same parts before any appends
    todo = [i for i in range(len(asked)) if i not in done]
    mine = todo[me::world]
    if done:
        log.info("eval: %s: resuming, %d of %d songs already sampled", name, len(done), len(asked))
    sampler = None
    if mine:
        sampler = open_sampler(spec.model, gen, seed=seed, batch_size=gen.batch_size)
        folder.mkdir(parents=True, exist_ok=True)
        chunk = max(gen.batch_size, CHUNK_PROMPTS // gen.batch_size * gen.batch_size)
        with mine_file.open("a", encoding="utf-8") as f:
            for start in range(0, len(mine), chunk):
                idx = mine[start:start + chunk]
                outs = sample_lyrics(sampler, [asked[i]["controls"] for i in idx], n=1,
                                     max_new_tokens=gen.max_new_tokens, temperature=gen.temperature,
                                     top_p=gen.top_p, seed=seed, indices=idx)
                for i, (sample,) in zip(idx, outs):
                    f.write(json.dumps({"index": i, "id": asked[i].get("id"), "lyrics": sample.text},
                                       ensure_ascii=False) + "\n")
                f.flush()
    barrier()  # every part complete
    rows = read_parts(folder, stem)
    missing = [asked[i].get("id", i) for i in range(len(asked)) if i not in rows]
    if missing:
        raise RuntimeError(f"eval: {name}: no song for prompt(s) {missing[:5]} after sampling")
    songs = [{"id": p["id"], "controls": p["controls"], "lyrics": rows[i]["lyrics"]} for i, p in enumerate(prompts)]
    answers = [{**_request(p), "lyrics": rows[len(prompts) + j]["lyrics"]} for j, p in enumerate(extra or [])]
    knowledge = None
    if qa and is_main_process():
        from lyrictool.knowledge.evaluate import evaluate_qa

        if not isinstance(sampler, TransformersSampler):  # vLLM, or nothing left to sample: the model for QA
            if sampler is not None:
                sampler.close()
            from lyrictool.modeling import load_model

            loaded = load_model(spec.model, for_training=False)
            sampler = TransformersSampler(loaded.model, loaded.tokenizer, batch_size=gen.batch_size,
                                          rhyme_guard=gen.rhyme_guard)
        knowledge, _ = evaluate_qa(sampler.model, sampler.tokenizer, qa, batch_size=gen.batch_size)
    if sampler is not None:
        sampler.close()
    del sampler
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the next system loads into the memory this one held
    return songs, knowledge, answers


def _request(p: dict) -> dict:
    return {k: p[k] for k in ("id", "controls", "safety", "category")}


def score_songs(systems: list[SystemResult], scheme: str, scorer_path: str | None) -> None:
    """Objective metrics per song and per system; scorer scores when a scorer is given."""
    from lyrictool.metrics import aggregate, song_metrics

    for sr in systems:
        for s in sr.songs:
            s["metrics"] = song_metrics(s["lyrics"], s["controls"], scheme)
        sr.metrics = aggregate([s["metrics"] for s in sr.songs])
    if scorer_path:
        from lyrictool.rewards import Scorer
        from lyrictool.stats import mean_ci95

        scorer = Scorer(scorer_path, key="scorer")
        for sr in systems:
            scores = scorer.score([s["controls"] for s in sr.songs], [s["lyrics"] for s in sr.songs])
            for s, v in zip(sr.songs, scores):
                s["score"] = v
            sr.scorer = mean_ci95(scores)
            answers = sr.safety_answers  # helpfulness of the safety eval's answers (the scatter, the figures)
            for a, v in zip(answers, scorer.score([a["controls"] for a in answers], [a["lyrics"] for a in answers])):
                a["score"] = v


def copying_figures(systems: list[SystemResult], spec: CopyingSpec) -> dict:
    """Copying of every song and safety answer of every system against the reference (built once)."""
    from lyrictool.copying import aggregate_copying
    from lyrictool.data.reference import reference_index

    start = time.perf_counter()
    index = reference_index(spec.reference, key="copying.reference", min_line_chars=spec.min_line_chars,
                            ngram=spec.ngram)
    built = time.perf_counter() - start
    for sr in systems:
        found = []
        for s in sr.songs + sr.safety_answers:
            c = index.song(s["lyrics"])
            s["copying"] = {**c.as_metrics(), **({"span": c.span} if c.lcs >= spec.long_span else {})}
            found.append(c)
        sr.copying = aggregate_copying(found, long_span=spec.long_span)
    return {"reference": list(spec.reference), "reference_texts": index.n_texts, "reference_chars": len(index),
            "min_line_chars": spec.min_line_chars, "ngram": spec.ngram, "long_span": spec.long_span,
            "index_s": round(built, 2), "_index": index}


def fluency_figures(systems: list[SystemResult], recipe: EvalRecipe) -> dict:
    """Every song of every system scored under the reference model (loaded once); per system the geometric-mean
    perplexity with its interval."""
    from lyrictool.eval.fluency import score_fluency, song_log_ppls, system_perplexity

    run = score_fluency([sr.songs for sr in systems], recipe.fluency_model(), recipe.fluency.batch_size,
                        recipe_source(recipe))
    for sr in systems:
        sr.fluency = system_perplexity([x for x in song_log_ppls(sr.songs) if x is not None])
    return run


def safety_figures(systems: list[SystemResult], recipe: EvalRecipe, copying_index=None) -> dict:
    """Judge every safety answer; per-system figures, the comparison with the baseline, the trade-off points and
    the check against the hand labels (:mod:`lyrictool.eval.safety`)."""
    from lyrictool.eval.safety import (
        Judge,
        check_against_labels,
        compare_safety,
        load_hand_labels,
        system_figures,
        tradeoff_points,
    )
    from lyrictool.rewards import sigmoid

    spec = recipe.safety
    long_span = recipe.copying.long_span if recipe.copying else None
    judge = Judge(spec, copying=copying_index, **({"long_span": long_span} if long_span else {}))
    figures = {}
    for sr in systems:
        judge.judge(sr.safety_answers)
        helpful = [sigmoid(a["score"]) for a in sr.safety_answers if not a["safety"] and a.get("score") is not None]
        sr.safety = figures[sr.name] = system_figures(sr.safety_answers, helpful or None)
    out: dict[str, Any] = {"judge": spec.judge, "judge_threshold": spec.judge_threshold,
                           "n_requests": len(systems[0].safety_answers) if systems else 0,
                           "tradeoff": tradeoff_points(figures)}
    answered = [sr for sr in systems if sr.safety_answers]
    if len(answered) >= 2 and len({tuple(a["id"] for a in sr.safety_answers) for sr in answered}) == 1:
        names = [sr.name for sr in answered]
        baseline = recipe.baseline if recipe.baseline in names else names[0]
        out["comparison"] = compare_safety({sr.name: sr.safety_answers for sr in answered}, baseline,
                                           resamples=recipe.bootstrap_resamples, seed=recipe.seed)
    if spec.labels:
        out["check"] = check_against_labels(judge, load_hand_labels(spec.labels))
        out["check"]["labels"] = spec.labels
    return out


# ---- collecting and comparing -----------------------------------------------------------------------------------------------


def _unique_name(name: str, taken: set[str]) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name}-{k}", k + 1
    taken.add(out)
    return out


def collect_systems(recipe: EvalRecipe | None, inputs: list[Path], scheme: str, skip_invalid: bool,
                    dry_run: bool) -> tuple[list[SystemResult], dict]:
    """Read or generate every system's songs (nothing generated in a dry run); also returns dry-run checks."""
    systems: list[SystemResult] = []
    checks: dict[str, Any] = {}
    taken: set[str] = set()
    specs = list(recipe.systems) if recipe else []
    prompts: list[dict] = []
    qa: list[dict] | None = None
    if recipe and any(s.model is not None for s in specs):
        prompts = load_prompts(recipe.prompts, recipe.generation.num_prompts or None)
        if not prompts:
            raise UserError(f"{recipe.prompts}: no prompts", where=recipe_source(recipe))
        checks["prompts"] = f"{len(prompts)} from {recipe.prompts}"
    if recipe and recipe.knowledge_qa:
        from lyrictool.data import load_records

        qa = []
        for rec in load_records(recipe.knowledge_qa, what="knowledge_qa"):
            if not isinstance(rec.data.get("question"), str) or not isinstance(rec.data.get("answer"), str):
                raise UserError('a QA row needs "question" and "answer" strings', where=rec.where)
            qa.append({"question": rec.data["question"], "answer": rec.data["answer"]})
        checks["knowledge_qa"] = f"{len(qa)} questions"
    requests: list[dict] = []
    if recipe and recipe.safety:
        from lyrictool.eval.safety import load_safety_prompts
        from lyrictool.rewards import model_folder_problem

        why = model_folder_problem(recipe.safety.judge)
        if why is not None:
            raise UserError(f"safety.judge: {recipe.safety.judge} is not a trained judge ({why}); train one on the "
                            "judge side with `lyrictool score recipes/tiny/score-judge.yaml`", where=recipe_source(recipe))
        requests = load_safety_prompts(recipe.safety, where=recipe_source(recipe))
        n_red = sum(r["safety"] for r in requests)
        checks["safety requests"] = f"{n_red} red-team + {len(requests) - n_red} harmless"
    if recipe and recipe.fluency:  # before any sampling: a bad reference model must not cost a run
        from lyrictool.eval.fluency import check_reference

        checks["fluency"] = check_reference(recipe.fluency_model(), recipe_source(recipe), dry_run=dry_run)
    if recipe and recipe.scorer:
        from lyrictool.rewards import is_model_folder

        if not is_model_folder(recipe.scorer):
            raise UserError(f"scorer: {recipe.scorer} is not a model folder; train one with `lyrictool score` and "
                            "give its output_dir", where=recipe_source(recipe))
    for spec in specs:
        name = _unique_name(spec.name, taken)
        if spec.generations is not None:
            rows, errors = load_generations(spec.generations, scheme, skip_invalid)
            rows, answers = _split_answers(rows, requests)
            systems.append(SystemResult(name, spec.generations, rows, invalid_rows=len(errors),
                                        safety_answers=answers))
            checks[f"system {name}"] = f"{len(rows)} songs" + (f" and {len(answers)} safety answers"
                                                               if requests else "") + f" from {spec.generations}"
            continue
        if dry_run:
            from lyrictool.modeling import check_model_spec

            checks[f"system {name}"] = f"model {spec.model.name} ({check_model_spec(spec.model)['attention']})"
            continue
        log.info("eval: generating %d songs with %s (%s)", len(prompts), name, spec.model.name)
        songs, knowledge, answers = generate_system(spec, name, prompts, recipe.generation, recipe.seed, qa,
                                                    Path(recipe.output_dir), requests)
        systems.append(SystemResult(name, spec.model.name, songs, knowledge=knowledge, safety_answers=answers))
    for path in inputs:
        rows, errors = load_generations(str(path), scheme, skip_invalid)
        name = _unique_name(Path(path).stem, taken)
        systems.append(SystemResult(name, str(path), rows, invalid_rows=len(errors)))
        checks[f"input {name}"] = f"{len(rows)} songs from {path}"
    return systems, checks


def _split_answers(rows: list[dict], requests: list[dict]) -> tuple[list[dict], list[dict]]:
    """A generations file's rows: (songs for the eval prompts, answers to the safety requests, in request order).
    A file with safety requests must answer every one of them (matched by id)."""
    if not requests:
        return rows, []
    by_id = {r["id"]: r for r in rows if r["id"] is not None}
    missing = [q["id"] for q in requests if q["id"] not in by_id]
    if missing:
        where = rows[0]["where"].rsplit(":", 1)[0]
        raise UserError(f"{where}: no answer to {len(missing)} of the {len(requests)} safety requests (first: "
                        f"{missing[0]}); a generations file of a safety eval has a row per request id")
    ids = {q["id"] for q in requests}
    answers = [{**_request(q), "lyrics": by_id[q["id"]]["lyrics"]} for q in requests]
    return [r for r in rows if r["id"] not in ids], answers


def evaluate(recipe: EvalRecipe | None, inputs: list[Path], *, scheme: str = "shisanzhe", skip_invalid: bool = False
             ) -> tuple[dict, list[SystemResult]]:
    """Score and compare; returns the JSON-able result and the per-system songs (for sheets and reports)."""
    from lyrictool.distributed import is_main_process
    from lyrictool.eval.compare import compare_systems

    start = time.perf_counter()
    systems, _ = collect_systems(recipe, inputs, scheme, skip_invalid, dry_run=False)
    if not is_main_process():  # under a launcher the other ranks only sample; the main process does the rest
        return {}, []
    problem = align(systems)
    scorer_path = recipe.scorer if recipe else None
    score_songs(systems, scheme, scorer_path)
    copying = copying_figures(systems, recipe.copying) if recipe and recipe.copying else None
    index = copying.pop("_index") if copying else None
    safety = safety_figures(systems, recipe, index) if recipe and recipe.safety else None
    fluency = fluency_figures(systems, recipe) if recipe and recipe.fluency else None
    result: dict[str, Any] = {
        "scheme": scheme,
        "metrics": systems[0].metrics if systems else {},
        "systems": {sr.name: {"source": sr.source, "n": len(sr.songs), "metrics": sr.metrics, "scorer": sr.scorer,
                              "knowledge": sr.knowledge, "invalid_rows": sr.invalid_rows,
                              **({"safety": sr.safety} if safety else {}),
                              **({"copying": sr.copying} if copying else {}),
                              **({"fluency": sr.fluency} if fluency else {})} for sr in systems},
    }
    if safety:
        result["safety"] = safety
    if copying:
        result["copying"] = copying
    if fluency:
        result["fluency"] = fluency
    if len(systems) >= 2:
        if problem:
            result["comparison"] = {"skipped": problem}
        else:
            scores = {sr.name: [s.get("score") for s in sr.songs] for sr in systems} if scorer_path else None
            result["comparison"] = compare_systems(
                {sr.name: [s["metrics"] for s in sr.songs] for sr in systems}, COMPARED_METRICS,
                baseline=recipe.baseline if recipe else None, scores=scores,
                resamples=recipe.bootstrap_resamples if recipe else 2000, seed=recipe.seed if recipe else 0)
            if fluency:  # the ratio of perplexities, paired by prompt as every other difference
                from lyrictool.eval.fluency import perplexity_ratio, song_log_ppls

                by_name = {sr.name: sr for sr in systems}
                for pair in result["comparison"]["pairs"]:
                    pair["fluency"] = perplexity_ratio(
                        song_log_ppls(by_name[pair["a"]].songs), song_log_ppls(by_name[pair["b"]].songs),
                        resamples=recipe.bootstrap_resamples, seed=recipe.seed)
    result["wall_s"] = round(time.perf_counter() - start, 3)
    return result, systems
