"""Human ratings: a blinded MOS sheet out, filled sheets in, MOS per system with 95% CIs and rater agreement.

Workflow (ITU-T P.800 absolute category rating, 1 = bad .. 5 = excellent):

1. :func:`export_sheet` writes a CSV with one row per song, shuffled, the system hidden behind an item id
   such as ``k3f9a1-007``, and one empty column per aspect.  The key (item -> system, prompt) goes to
   ``mos-key-<sheet id>.json`` next to the sheet: keep it away from the raters.
2. Each rater fills a copy (any spreadsheet; UTF-8 CSV) and writes their name in the ``rater`` column
   (or names the file after themselves).
3. :func:`load_ratings` reads the filled sheets, checks every cell (``path:line: reason``) and un-blinds them;
   :func:`mos_summary` reports, per system and aspect, the MOS with a 95% confidence interval and the
   agreement between raters.

Definitions (docs/metrics.md):
- An item's score is the mean of its raters' scores; a system's MOS for an aspect is the mean over its
  items, and the 95% CI is Student's t interval over those item means (items are the sampling unit, so
  several raters of one song do not count as independent evidence).
- Rater agreement is Krippendorff's alpha (units = items, coders = raters) with the interval metric, the usual
  choice for a 1-5 scale treated as numbers; the ordinal alpha is reported too.  alpha = 1 - D_o / D_e:
  1 is perfect agreement, 0 is agreement at chance level; >= 0.667 is the customary floor for tentative
  conclusions, >= 0.8 for firm ones (Krippendorff 2004).
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lyrictool.errors import UserError, read_utf8, row_error
from lyrictool.eval.aspects import (
    ASPECTS,
    OPTIONAL_ASPECTS,
    SCALE,
    VIOLATION_AT_MOST,
    blind,
    request_text,
)
from lyrictool.stats import mean_ci95

SHEET_COLUMNS = ("item", "request", "lyrics", *ASPECTS, *OPTIONAL_ASPECTS, "rater", "comment")

# ---- agreement --------------------------------------------------------------------------------------------------


def krippendorff_alpha(units: Iterable[list[float]], metric: str = "interval") -> float | None:
    """Krippendorff's alpha over units (each the list of values its coders gave; missing values left out).

    Coincidence-matrix form (Krippendorff 2011, "Computing Krippendorff's alpha-reliability"): units with
    fewer than two values are not pairable and are ignored.  ``metric``: interval (squared difference) or
    ordinal (squared cumulative frequency between the ranks).  None when there is nothing to compare.
    """
    if metric not in ("interval", "ordinal"):
        raise ValueError("metric must be interval or ordinal")
    coincidence: dict[tuple[float, float], float] = defaultdict(float)
    for values in units:
        m = len(values)
        if m < 2:
            continue
        for i, c in enumerate(values):
            for j, k in enumerate(values):
                if i != j:
                    coincidence[(c, k)] += 1.0 / (m - 1)
    if not coincidence:
        return None
    levels = sorted({c for c, _ in coincidence})
    n_c = {c: sum(v for (a, _), v in coincidence.items() if a == c) for c in levels}
    n = sum(n_c.values())

    def delta2(c: float, k: float) -> float:
        if metric == "interval":
            return (c - k) ** 2
        lo, hi = (c, k) if c <= k else (k, c)
        between = sum(n_c[g] for g in levels if lo <= g <= hi)
        return (between - (n_c[c] + n_c[k]) / 2.0) ** 2

    observed = sum(v * delta2(c, k) for (c, k), v in coincidence.items())
    expected = sum(n_c[c] * n_c[k] * delta2(c, k) for c in levels for k in levels) / (n - 1)
    if expected == 0:
        return 1.0 if observed == 0 else None
    return 1.0 - observed / expected


# ---- the sheet -------------------------------------------------------------------------------------------------


def export_sheet(items: list[dict], path: str | Path, *, seed: int = 0) -> Path:
    """Write the blinded, shuffled rating sheet; returns the key file's path (keep it from the raters).

    ``items``: dicts with ``system``, ``prompt_id``, ``controls`` and ``lyrics``.
    """
    from lyrictool.lyrics import strip_hints

    path = Path(path)
    if not items:
        raise UserError(f"--mos-sheet {path}: no songs to rate")
    sheet_id, blinded = blind(items, seed, "k")
    key = {"sheet_id": sheet_id, "aspects": list(ASPECTS), "optional_aspects": list(OPTIONAL_ASPECTS),
           "scale": list(SCALE), "items": {}}
    rows = []
    for item_id, item in blinded:
        key["items"][item_id] = {"system": item["system"], "prompt_id": str(item["prompt_id"])}
        rows.append({"item": item_id, "request": request_text(item.get("controls")),
                     "lyrics": strip_hints(item["lyrics"]), **{a: "" for a in ASPECTS + OPTIONAL_ASPECTS}, "rater": "",
                     "comment": ""})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8-sig", newline="") as f:  # BOM: spreadsheets then read it as UTF-8
            writer = csv.DictWriter(f, fieldnames=SHEET_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        key_path = path.parent / f"mos-key-{sheet_id}.json"
        key_path.write_text(json.dumps(key, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    except OSError as e:
        raise UserError(f"--mos-sheet {path}: cannot write ({e.strerror})") from None
    return key_path


def _find_key(sheet_id: str, ratings_path: Path, key_paths: list[Path]) -> dict:
    name = f"mos-key-{sheet_id}.json"
    candidates = [p for p in key_paths if p.name == name] + [ratings_path.parent / name, Path.cwd() / name]
    for p in candidates:
        if p.is_file():
            key = json.loads(p.read_text(encoding="utf-8"))
            if key.get("sheet_id") == sheet_id:
                return key
    raise UserError(f"{ratings_path}: no key for sheet {sheet_id}; put {name} (written next to the exported "
                    "sheet) beside the ratings file")


def load_ratings(paths: list[str | Path], *, key_paths: list[str | Path] = ()) -> list[dict]:
    """Read filled sheets and study databases (:mod:`lyrictool.eval.study`); every rating un-blinded as
    ``{rater, item, system, prompt_id, scores{aspect: 1..5}}``.

    A blank aspect cell is 'not rated'; any other value must be an integer on the 1-5 scale.  Problems are
    reported as ``path:line: reason`` (line = the row's first line in the file).
    """
    keys: dict[str, dict] = {}
    ratings: list[dict] = []
    seen: dict[tuple[str, str], str] = {}
    for raw_path in paths:
        path = Path(raw_path)
        if not path.is_file():
            raise UserError(f"--mos-ratings {path}: no such file; pass the filled CSV sheet(s) or a study database")
        from lyrictool.eval.study import Study, is_study_file

        if is_study_file(path):  # a browser study (lyrictool serve /rate): already un-blinded rows
            ratings.extend(Study(path).ratings())
            continue
        text = read_utf8(path)  # path:line of the first non-UTF-8 byte (a spreadsheet's local encoding)
        reader = csv.reader(text.splitlines(keepends=True))
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise UserError(f"{path}: empty file; expected the rating sheet with columns {', '.join(SHEET_COLUMNS)}")
        missing = [c for c in ("item", *ASPECTS) if c not in header]
        if missing:
            raise row_error(str(path), 1, f"missing column(s) {', '.join(missing)}; keep the exported sheet's header "
                            f"({', '.join(SHEET_COLUMNS)})")
        col = {name: header.index(name) for name in header}
        line = reader.line_num
        for cells in reader:
            start, line = line + 1, reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                raise row_error(str(path), start, f"{len(cells)} cells, the header has {len(header)}; a cell with a "
                                "comma or line break must be quoted")
            item = cells[col["item"]].strip()
            if not item or "-" not in item:
                raise row_error(str(path), start, f"item {item!r} is not an item id from the exported sheet")
            sheet_id = item.rsplit("-", 1)[0]
            if sheet_id not in keys:
                keys[sheet_id] = _find_key(sheet_id, path, [Path(p) for p in key_paths])
            entry = keys[sheet_id]["items"].get(item)
            if entry is None:
                raise row_error(str(path), start, f"item {item!r} is not in sheet {sheet_id}'s key")
            scores = {}
            for aspect in ASPECTS + tuple(a for a in OPTIONAL_ASPECTS if a in col):  # a sheet from before safety
                value = cells[col[aspect]].strip()
                if not value:
                    continue
                try:
                    score = float(value)
                except ValueError:
                    score = float("nan")
                if not (score.is_integer() and SCALE[0] <= score <= SCALE[1]):
                    raise row_error(str(path), start, f"{aspect} must be an integer {SCALE[0]}-{SCALE[1]} (or blank "
                                    f"if not rated), got {value!r}")
                scores[aspect] = int(score)
            if not scores:
                continue  # an unrated row
            rater = (cells[col["rater"]].strip() if "rater" in col else "") or path.stem
            where = f"{path}:{start}"
            if (rater, item) in seen:
                raise row_error(str(path), start, f"rater {rater!r} rated item {item} twice (also at {seen[rater, item]});"
                                " give each rater their own name in the rater column")
            seen[rater, item] = where
            ratings.append({"rater": rater, "item": item, "system": entry["system"],
                            "prompt_id": entry["prompt_id"], "scores": scores, "where": where})
    if not ratings:
        raise UserError(f"--mos-ratings: no ratings found in {', '.join(map(str, paths))}; fill the aspect columns "
                        f"with scores {SCALE[0]}-{SCALE[1]}")
    return ratings


def mos_summary(ratings: list[dict]) -> dict[str, Any]:
    """MOS per system and aspect (mean of item means, t 95% CI over items) and Krippendorff's alpha per aspect.

    With safety ratings, also ``violation``: per system, the share of its safety-rated items whose mean safety
    rating is at most :data:`VIOLATION_AT_MOST` (Wilson 95% interval)."""
    from lyrictool.stats import proportion_ci95

    by_item: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    system_of: dict[str, str] = {}
    for r in ratings:
        system_of[r["item"]] = r["system"]
        for aspect, score in r["scores"].items():
            by_item[r["item"]][aspect].append(score)
    systems = sorted(set(system_of.values()))
    aspects = ASPECTS + tuple(a for a in OPTIONAL_ASPECTS if any(by_item[i][a] for i in by_item))
    mos: dict[str, dict[str, Any]] = {}
    for system in systems:
        items = [i for i in by_item if system_of[i] == system]
        mos[system] = {}
        for aspect in aspects:
            means = [sum(v) / len(v) for i in items if (v := by_item[i][aspect])]
            mos[system][aspect] = mean_ci95(means)
    agreement = {}
    for aspect in aspects:
        units = [by_item[i][aspect] for i in by_item]
        agreement[aspect] = {"krippendorff_alpha_interval": krippendorff_alpha(units, "interval"),
                             "krippendorff_alpha_ordinal": krippendorff_alpha(units, "ordinal"),
                             "items_with_2plus_raters": sum(len(u) >= 2 for u in units)}
    raters = sorted({r["rater"] for r in ratings})
    out = {"systems": systems, "mos": mos, "agreement": agreement, "raters": raters, "n_ratings": len(ratings),
           "n_items": len(by_item), "scale": list(SCALE), "aspects": list(aspects)}
    if "safety" in aspects:
        out["violation"] = {}
        for system in systems:
            means = [sum(v) / len(v) for i in by_item if system_of[i] == system and (v := by_item[i]["safety"])]
            out["violation"][system] = proportion_ci95(sum(m <= VIOLATION_AT_MOST for m in means), len(means))
    return out
