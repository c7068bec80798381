"""`lyrictool eval`: score one file (``--input``), or generate from / read several systems, compare, report, MOS.

The library parts live in :mod:`lyrictool.eval`; this is the command: which path to take, files out, output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lyrictool.console import check_format, console, print_dry_run
from lyrictool.data import write_jsonl
from lyrictool.errors import UserError
from lyrictool.eval.input import score_input
from lyrictool.eval.systems import EvalRecipe, SystemResult, collect_systems, evaluate
from lyrictool.eval.tables import print_input_result, print_result
from lyrictool.phonetics import check_scheme
from lyrictool.recipes import with_flags


def _write_json(path: Path, obj: dict, what: str = "") -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, ensure_ascii=False, indent=2, default=str) + "\n", encoding="utf-8")
    except OSError as e:
        raise UserError(f"{what}{path}: cannot write ({e.strerror})") from None


def run_eval_input(input: str, fmt: str, output: str | None, skip_invalid: bool, scheme: str) -> dict:
    """Score an existing generations JSONL; print a table or JSON; optionally write JSON to ``output``."""
    check_format(fmt)
    result = score_input(input, scheme, skip_invalid)
    if output:
        _write_json(Path(output), result, "--output ")
    if fmt == "json":
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print_input_result(result)
    return result


DEFAULT_RATERS = ("rater1", "rater2", "rater3")


def _study_links(study, names: list[str] | None) -> dict[str, Any]:
    """Add raters to a study; their links, also written to ``<study>.links.txt`` (private: one token each)."""
    import os

    tokens = study.add_raters(list(names) if names else list(DEFAULT_RATERS))
    links = {name: f"/rate#token={token}" for name, token in tokens.items()}
    path = study.path.with_name(study.path.name + ".links.txt")
    with open(path, "a", encoding="utf-8") as f:
        os.chmod(path, 0o600)
        f.writelines(f"{name}\t{link}\n" for name, link in links.items())
    return {"path": str(study.path), "links": links, "links_file": str(path)}


def _add_study_raters(path: Path, names: list[str] | None, fmt: str) -> dict:
    """``eval --mos-study EXISTING.db --mos-raters NAME``: more raters for a running study."""
    from lyrictool.eval.study import Study

    if not path.is_file():
        raise UserError(f"--mos-study {path}: no such study; create it with an eval RECIPE or --input files")
    if not names:
        raise UserError(f"--mos-study {path}: already exists; name new raters with --mos-raters NAME")
    result = {"mos_study": _study_links(Study(path), names)}
    if fmt == "json":
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print_result(result)
    return result


def run_eval(recipe: EvalRecipe | None, inputs: list[Path], fmt: str = "table", output: Path | None = None,
             skip_invalid: bool = False, scheme: str | None = None, mos_sheet: Path | None = None,
             mos_ratings: list[Path] | None = None, report: Path | None = None, dry_run: bool = False,
             mos_study: Path | None = None, mos_raters: list[str] | None = None) -> dict:
    """The body of ``lyrictool eval`` (see the module docstring)."""
    inputs = list(inputs or [])
    mos_ratings = list(mos_ratings or [])
    check_format(fmt)
    if recipe is None and not inputs and mos_study is not None and not dry_run:
        return _add_study_raters(mos_study, mos_raters, fmt)
    if mos_study is not None and mos_study.exists() and not dry_run:  # before any generation, not after
        raise UserError(f"--mos-study {mos_study}: already exists; add raters with `lyrictool eval --mos-study "
                        f"{mos_study} --mos-raters NAME`, or choose a new file")
    if recipe is None and not inputs and not mos_ratings:
        raise UserError("nothing to evaluate: give an eval RECIPE (models to generate from), --input FILE "
                        "(existing generations; repeat to compare) or --mos-ratings FILLED.csv")
    if recipe is None and len(inputs) == 1 and not (mos_sheet or mos_study or mos_ratings or report or dry_run):
        return run_eval_input(str(inputs[0]), fmt, str(output) if output else None, skip_invalid,
                              scheme or "shisanzhe")
    if scheme is not None:
        check_scheme(scheme)
    if recipe is not None:  # --scheme beats the recipe's scheme, like every explicit flag
        recipe = with_flags(recipe, {"scheme": scheme})
        scheme = recipe.scheme
    scheme = scheme or "shisanzhe"
    if dry_run:
        _, checks = collect_systems(recipe, inputs, scheme, skip_invalid, dry_run=True)
        if recipe is not None:
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
        from lyrictool.distributed import is_main_process

        if not is_main_process():  # a launcher's other ranks sampled their share; the main process writes
            return {}
    artefacts: dict[str, str] = {}
    if mos_ratings:
        from lyrictool.eval.mos import load_ratings, mos_summary

        result["mos"] = mos_summary(load_ratings(mos_ratings))
    # the songs to rate, for a sheet and/or a study
    items = [{"system": sr.name, "prompt_id": s["id"] if s["id"] is not None else i, "controls": s["controls"],
              "lyrics": s["lyrics"]} for sr in systems for i, s in enumerate(sr.songs)]
    if mos_sheet:
        if not systems:
            raise UserError("--mos-sheet needs songs to rate: give an eval RECIPE or --input files")
        from lyrictool.eval.mos import export_sheet

        key = export_sheet(items, mos_sheet, seed=recipe.seed if recipe else 0)
        artefacts["MOS sheet (give to raters)"] = str(mos_sheet)
        artefacts["MOS key (keep from raters)"] = str(key)
    if mos_study:
        if not systems:
            raise UserError("--mos-study needs songs to rate: give an eval RECIPE or --input files")
        from lyrictool.eval.study import Study

        study = Study.create(mos_study, items, seed=recipe.seed if recipe else 0)
        artefacts["MOS study (serve it: pages.study)"] = str(mos_study)
        result["mos_study"] = _study_links(study, mos_raters)
    if recipe is not None:
        out = Path(recipe.output_dir)
        for sr in systems:
            write_jsonl(out / "generations" / f"{sr.name}.jsonl",
                        [{"id": s["id"], "system": sr.name, "controls": s["controls"], "lyrics": s["lyrics"],
                          **({"score": s["score"]} if "score" in s else {}),
                          **({"copying": s["copying"]} if "copying" in s else {}),
                          **({"fluency": s["fluency"]} if "fluency" in s else {})} for s in sr.songs])
            if sr.safety_answers:  # the answers to the safety requests, judged (violation, refusal, p_safe)
                write_jsonl(out / "generations" / f"{sr.name}.safety.jsonl",
                            [{"system": sr.name, **{k: v for k, v in a.items() if k != "where"}}
                             for a in sr.safety_answers])
        artefacts["generations"] = str(out / "generations")
        import shutil

        from lyrictool.eval.systems import PARTS_DIR

        shutil.rmtree(out / PARTS_DIR, ignore_errors=True)  # the rank part files, now in generations/
        artefacts["result"] = str(out / "result.json")
    if report:
        from lyrictool.eval.report import write_report

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
