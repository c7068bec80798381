"""`lyrictool eval`: score one or more systems on the same prompts, compare them, and run the MOS workflow.

A *system* is a model to generate from (fixed prompt file with controls, fixed seed, batched sampling) or a
file of existing generations (e.g. a GPT-4 baseline collected elsewhere).  Per system: the objective metrics
(:func:`lyrictool.metrics.song_metrics`), the learned scorer's mean when ``scorer`` is given, knowledge QA
accuracy when ``knowledge_qa`` is given (model systems).  With two or more systems: each against the baseline
with a paired bootstrap 95% CI per metric, and pairwise scorer win rates (:mod:`lyrictool.metrics.compare`).

    systems:
      - {name: base, model: builtin:tiny-zh}
      - {name: sft, model: runs/sft-tiny}
      - {name: gpt4, generations: gpt4.jsonl}
    prompts: recipes/eval/prompts.jsonl
    generation: {num_prompts: 64, max_new_tokens: 160, temperature: 0.7}
    scorer: runs/score-tiny
    output_dir: runs/eval

``lyrictool eval --input A.jsonl`` alone scores one file (:func:`lyrictool.metrics.commands.run_eval_input`);
``--input A --input B`` compares files; ``--mos-sheet`` / ``--mos-ratings`` / ``--report`` work with either.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lyrictool.errors import UserError
from lyrictool.recipes import GenerationSpec, ModelSpec, Strict, looks_like_local_path, recipe_source

log = logging.getLogger("lyrictool")

#: Metrics shown side by side and compared (all in [0, 1]); lower is better only for repetition.
COMPARED_METRICS = ("rhyme_accuracy", "rhyme_density", "rhyme_accuracy_near", "rhyme_density_near",
                    "line_length_accuracy", "line_length_accuracy_pm1",
                    "structure_accuracy", "format_validity", "distinct_1", "distinct_2", "repetition_rate")
LOWER_IS_BETTER = frozenset({"repetition_rate"})


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
    prompts: str = Field("recipes/eval/prompts.jsonl", description="Prompt file for model systems: JSONL rows "
                         "{id, controls}.")
    generation: GenerationSpec = Field(
        default_factory=lambda: GenerationSpec(num_prompts=64, temperature=0.7),
        description="Sampling for model systems; num_prompts = the first N prompts of the prompt file (0 = all).")
    scheme: Literal["shisanzhe", "zhonghua_xinyun", "zhonghua_tongyun", "final"] = Field(
        "shisanzhe", description="Rhyme scheme for the metrics.")
    scorer: str | None = Field(None, description="A trained scorer folder (lyrictool score): adds the mean score "
                               "per system and pairwise win rates.")
    knowledge_qa: str | None = Field(None, description="QA rows {question, answer} (JSONL): adds knowledge "
                                     "accuracy (exact match, contains) for model systems.")
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
        return self


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


# ---- inputs ----------------------------------------------------------------------------------------------------


def load_prompts(path: str, limit: int | None = None) -> list[dict]:
    """Prompt rows ``{id, controls}`` (controls validated; ``path:line`` on the first bad row)."""
    from lyrictool.controls import parse_controls
    from lyrictool.data import load_records

    rows = []
    for i, rec in enumerate(load_records(path, what="prompts")):
        controls = parse_controls(rec.data.get("controls"), where=rec.where).to_dict()
        rows.append({"id": str(rec.data.get("id", i)), "controls": controls})
        if limit and len(rows) >= limit:
            break
    return rows


def load_generations(path: str, scheme: str, skip_invalid: bool) -> tuple[list[dict], list[str]]:
    """Rows ``{id, controls, lyrics}`` of a generations file and the skipped rows' messages."""
    from lyrictool.metrics.commands import generation_rows

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


def generate_system(spec: SystemSpec, prompts: list[dict], gen: GenerationSpec, seed: int,
                    qa: list[dict] | None) -> tuple[list[dict], dict | None]:
    """Generate one song per prompt (fixed seed, batched) and answer the QA rows if given."""
    from lyrictool.generation import generate_lyrics
    from lyrictool.modeling import load_model

    lm = load_model(spec.model, for_training=False)  # on the GPU when there is one
    outs = generate_lyrics(lm.model, lm.tokenizer, [p["controls"] for p in prompts], n=1,
                           max_new_tokens=gen.max_new_tokens, temperature=gen.temperature, top_p=gen.top_p,
                           batch_size=gen.batch_size, seed=seed)
    songs = [{"id": p["id"], "controls": p["controls"], "lyrics": out[0].text} for p, out in zip(prompts, outs)]
    knowledge = None
    if qa:
        from lyrictool.knowledge.evaluate import evaluate_qa

        knowledge, _ = evaluate_qa(lm.model, lm.tokenizer, qa, batch_size=gen.batch_size)
    del lm
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the next system loads into the memory this one held
    return songs, knowledge


def score_songs(systems: list[SystemResult], scheme: str, scorer_path: str | None) -> None:
    """Objective metrics per song and per system; scorer scores when a scorer is given."""
    from lyrictool.metrics import aggregate, song_metrics

    for sr in systems:
        for s in sr.songs:
            s["metrics"] = song_metrics(s["lyrics"], s["controls"], scheme)
        sr.metrics = aggregate([s["metrics"] for s in sr.songs])
    if scorer_path:
        from lyrictool.metrics.mos import mean_ci95
        from lyrictool.rewards import Scorer

        scorer = Scorer(scorer_path, key="scorer")
        for sr in systems:
            scores = scorer.score([s["controls"] for s in sr.songs], [s["lyrics"] for s in sr.songs])
            for s, v in zip(sr.songs, scores):
                s["score"] = v
            sr.scorer = mean_ci95(scores)


# ---- the command -----------------------------------------------------------------------------------------------


def _unique_name(name: str, taken: set[str]) -> str:
    out, k = name, 2
    while out in taken:
        out, k = f"{name}-{k}", k + 1
    taken.add(out)
    return out


def _check_format(fmt: str) -> None:
    if fmt not in ("table", "json"):
        raise UserError(f"unknown --format {fmt!r}; choose one of: table, json")


def _write_json(path: Path, obj: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
    except OSError as e:
        raise UserError(f"{path}: cannot write ({e.strerror})") from None


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
    if recipe and recipe.scorer:
        from lyrictool.rewards import is_model_folder

        if not is_model_folder(recipe.scorer):
            raise UserError(f"scorer: {recipe.scorer} is not a model folder; train one with `lyrictool score` and "
                            "give its output_dir", where=recipe_source(recipe))
    for spec in specs:
        name = _unique_name(spec.name, taken)
        if spec.generations is not None:
            rows, errors = load_generations(spec.generations, scheme, skip_invalid)
            systems.append(SystemResult(name, spec.generations, rows, invalid_rows=len(errors)))
            checks[f"system {name}"] = f"{len(rows)} songs from {spec.generations}"
            continue
        if dry_run:
            from lyrictool.modeling import check_model_spec

            checks[f"system {name}"] = f"model {spec.model.name} ({check_model_spec(spec.model)['attention']})"
            continue
        log.info("eval: generating %d songs with %s (%s)", len(prompts), name, spec.model.name)
        songs, knowledge = generate_system(spec, prompts, recipe.generation, recipe.seed, qa)
        systems.append(SystemResult(name, spec.model.name, songs, knowledge=knowledge))
    for path in inputs:
        rows, errors = load_generations(str(path), scheme, skip_invalid)
        name = _unique_name(Path(path).stem, taken)
        systems.append(SystemResult(name, str(path), rows, invalid_rows=len(errors)))
        checks[f"input {name}"] = f"{len(rows)} songs from {path}"
    return systems, checks


def evaluate(recipe: EvalRecipe | None, inputs: list[Path], *, scheme: str = "shisanzhe", skip_invalid: bool = False
             ) -> tuple[dict, list[SystemResult]]:
    """Score and compare; returns the JSON-able result and the per-system songs (for sheets and reports)."""
    from lyrictool.metrics.compare import compare_systems

    start = time.perf_counter()
    systems, _ = collect_systems(recipe, inputs, scheme, skip_invalid, dry_run=False)
    problem = align(systems)
    scorer_path = recipe.scorer if recipe else None
    score_songs(systems, scheme, scorer_path)
    result: dict[str, Any] = {
        "scheme": scheme,
        "metrics": systems[0].metrics if systems else {},
        "systems": {sr.name: {"source": sr.source, "n": len(sr.songs), "metrics": sr.metrics, "scorer": sr.scorer,
                              "knowledge": sr.knowledge, "invalid_rows": sr.invalid_rows} for sr in systems},
    }
    if len(systems) >= 2:
        if problem:
            result["comparison"] = {"skipped": problem}
        else:
            scores = {sr.name: [s.get("score") for s in sr.songs] for sr in systems} if scorer_path else None
            result["comparison"] = compare_systems(
                {sr.name: [s["metrics"] for s in sr.songs] for sr in systems}, COMPARED_METRICS,
                baseline=recipe.baseline if recipe else None, scores=scores,
                resamples=recipe.bootstrap_resamples if recipe else 2000, seed=recipe.seed if recipe else 0)
    result["wall_s"] = round(time.perf_counter() - start, 3)
    return result, systems


def _fmt_ci(m: dict) -> str:
    if m.get("diff") is None:
        return "-"
    return f"{m['diff']:+.3f} [{m['ci_low']:+.3f}, {m['ci_high']:+.3f}]"


def comparison_table(result: dict):
    """Rich table: metrics down, systems across, then each system's difference from the baseline with its CI."""
    from rich.table import Table

    names = list(result["systems"])
    comparison = result.get("comparison") or {}
    pairs = {p["b"]: p["metrics"] for p in comparison.get("pairs", [])}
    base = comparison.get("baseline")
    table = Table(title="systems side by side" + (f" (differences vs {base}, 95% bootstrap CI)" if pairs else ""),
                  title_justify="left")
    table.add_column("metric")
    for n in names:
        table.add_column(n, justify="right")
    for n in pairs:
        table.add_column(f"{n} − {base}", justify="right")
    rows = list(COMPARED_METRICS) + (["scorer"] if any(s["scorer"] for s in result["systems"].values()) else [])
    table.add_row("songs", *[str(s["n"]) for s in result["systems"].values()], *["" for _ in pairs])
    for metric in rows:
        cells = []
        for n in names:
            sysres = result["systems"][n]
            v = sysres["scorer"]["mean"] if metric == "scorer" and sysres["scorer"] else sysres["metrics"].get(metric)
            cells.append("-" if v is None else f"{v:.3f}")
        for n, metrics in pairs.items():
            m = metrics.get(metric) or {}
            text = _fmt_ci(m)
            if m.get("significant"):
                good = (m["diff"] < 0) if metric in LOWER_IS_BETTER else (m["diff"] > 0)
                text = f"[{'green' if good else 'red'}]{text}[/]"
            cells.append(text)
        table.add_row(metric, *cells)
    return table


def print_result(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    if result.get("systems"):
        console.print(comparison_table(result))
        knowledge = {n: s["knowledge"] for n, s in result["systems"].items() if s["knowledge"]}
        for n, k in knowledge.items():
            console.print(f"knowledge QA ({n}): exact match {k['exact_match']:.3f}, contains {k['contains']:.3f} "
                          f"over {k['n']} questions")
        comparison = result.get("comparison") or {}
        if comparison.get("skipped"):
            console.print(f"[yellow]no comparison:[/] {comparison['skipped']}")
        for w in comparison.get("win_rates", []):
            console.print(f"scorer win rate of {w['b']} over {w['a']}: {w['win_rate']:.3f} "
                          f"[{w['ci_low']:.3f}, {w['ci_high']:.3f}] ({w['wins']} wins, {w['ties']} ties, "
                          f"{w['losses']} losses)")
        for n, s in result["systems"].items():
            if s["invalid_rows"]:
                console.print(f"[yellow]{n}: skipped {s['invalid_rows']} invalid rows[/]")
    mos = result.get("mos")
    if mos:
        from lyrictool.metrics.mos import ASPECTS

        table = Table(title=f"MOS (1-5, 95% CI over items; {len(mos['raters'])} raters, {mos['n_ratings']} "
                            "ratings)", title_justify="left")
        table.add_column("aspect")
        for s in mos["systems"]:
            table.add_column(s, justify="right")
        table.add_column("agreement α (interval / ordinal)", justify="right")
        for aspect in ASPECTS:
            cells = []
            for s in mos["systems"]:
                m = mos["mos"][s][aspect]
                cells.append("-" if m["mean"] is None else f"{m['mean']:.2f}" + (
                    f" [{m['ci_low']:.2f}, {m['ci_high']:.2f}]" if m["ci_low"] is not None else ""))
            a = mos["agreement"][aspect]
            fa = "-" if a["krippendorff_alpha_interval"] is None else f"{a['krippendorff_alpha_interval']:.2f}"
            fo = "-" if a["krippendorff_alpha_ordinal"] is None else f"{a['krippendorff_alpha_ordinal']:.2f}"
            cells.append(f"{fa} / {fo}")
            table.add_row(aspect, *cells)
        console.print(table)
    for what, path in (result.get("artefacts") or {}).items():
        console.print(f"{what}: {path}")


def run_eval(recipe: EvalRecipe | None, inputs: list[Path], fmt: str = "table", output: Path | None = None,
             skip_invalid: bool = False, scheme: str = "shisanzhe", mos_sheet: Path | None = None,
             mos_ratings: list[Path] | None = None, report: Path | None = None, dry_run: bool = False) -> dict:
    """The body of ``lyrictool eval`` (see the module docstring)."""
    inputs = list(inputs or [])
    mos_ratings = list(mos_ratings or [])
    _check_format(fmt)
    if recipe is None and not inputs and not mos_ratings:
        raise UserError("nothing to evaluate: give an eval RECIPE (models to generate from), --input FILE "
                        "(existing generations; repeat to compare) or --mos-ratings FILLED.csv")
    if recipe is None and len(inputs) == 1 and not (mos_sheet or mos_ratings or report or dry_run):
        from lyrictool.metrics.commands import run_eval_input

        return run_eval_input(str(inputs[0]), fmt, str(output) if output else None, skip_invalid, scheme)
    if recipe is not None:
        scheme = recipe.scheme
    from lyrictool.phonetics import check_scheme

    check_scheme(scheme)
    if dry_run:
        from lyrictool.train.common import console

        _, checks = collect_systems(recipe, inputs, scheme, skip_invalid, dry_run=True)
        if recipe is not None:
            from lyrictool.train.common import print_dry_run

            print_dry_run(recipe, checks)  # type: ignore[arg-type]
        else:
            for k, v in checks.items():
                console.print(f"  {k}: {v}")
            console.print("dry run: no model loaded, nothing written")
        return {}

    result: dict[str, Any] = {"scheme": scheme}
    systems: list[SystemResult] = []
    if recipe is not None or inputs:
        result, systems = evaluate(recipe, inputs, scheme=scheme, skip_invalid=skip_invalid)
    artefacts: dict[str, str] = {}
    if mos_ratings:
        from lyrictool.metrics.mos import load_ratings, mos_summary

        result["mos"] = mos_summary(load_ratings(mos_ratings))
    if mos_sheet:
        if not systems:
            raise UserError("--mos-sheet needs songs to rate: give an eval RECIPE or --input files")
        from lyrictool.metrics.mos import export_sheet

        items = [{"system": sr.name, "prompt_id": s["id"] if s["id"] is not None else i, "controls": s["controls"],
                  "lyrics": s["lyrics"]} for sr in systems for i, s in enumerate(sr.songs)]
        key = export_sheet(items, mos_sheet, seed=recipe.seed if recipe else 0)
        artefacts["MOS sheet (give to raters)"] = str(mos_sheet)
        artefacts["MOS key (keep from raters)"] = str(key)
    if recipe is not None:
        out = Path(recipe.output_dir)
        from lyrictool.data import write_jsonl

        for sr in systems:
            write_jsonl(out / "generations" / f"{sr.name}.jsonl",
                        [{"id": s["id"], "system": sr.name, "controls": s["controls"], "lyrics": s["lyrics"],
                          **({"score": s["score"]} if "score" in s else {})} for s in sr.songs])
        artefacts["generations"] = str(out / "generations")
        artefacts["result"] = str(out / "result.json")
    if report:
        from lyrictool.metrics.report import write_report

        paths = write_report(result, systems, Path(report))
        artefacts["report"] = str(paths["html"])
        artefacts["plots"] = str(paths["plots_dir"])
    result["artefacts"] = artefacts
    if recipe is not None:
        _write_json(Path(recipe.output_dir) / "result.json", result)
    if output:
        _write_json(Path(output), result)
    if fmt == "json":
        print(json.dumps(result, ensure_ascii=False, indent=2, default=str))
    else:
        print_result(result)
    return result
