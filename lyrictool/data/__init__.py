"""Data loading shared by every command: local jsonl / json / csv / parquet, a datasets-hub name, or a builtin.

Every row keeps where it came from (``path:line``), so a malformed row is reported as ``path:line: reason``.
"""

from __future__ import annotations

import csv
import io
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lyrictool.errors import BOM, UserError, not_utf8, read_utf8, row_error

DEMO_DIR = Path(__file__).resolve().parent / "demo"
BUILTIN_SOURCES = {
    "builtin:demo-songs": DEMO_DIR / "songs.jsonl",
    "builtin:demo-ratings": DEMO_DIR / "ratings.jsonl",
    "builtin:demo-preferences": DEMO_DIR / "preferences.jsonl",
    "builtin:eval-prompts": DEMO_DIR / "eval-prompts.jsonl",
    "builtin:demo-prompts": DEMO_DIR / "prompts.jsonl",
    **{f"builtin:safety-{name}": DEMO_DIR.parent / "safety" / f"{name}.jsonl"  # lyrictool/data/safety/README.md
       for name in ("prompts", "hand-labels", *(f"{kind}-{split}" for kind in ("prompts", "lyrics", "pairs")
                                                for split in ("scorer", "calibration", "judge")))},
}


@dataclass
class Record:
    """One data row and where it came from (``path:line`` or ``dataset[index]``)."""

    where: str
    data: dict[str, Any] = field(default_factory=dict)


def resolve_source(source: str) -> str:
    if source.startswith("builtin:"):
        if source not in BUILTIN_SOURCES:
            raise UserError(f"unknown builtin data {source!r}; builtins: {', '.join(BUILTIN_SOURCES)}")
        return str(BUILTIN_SOURCES[source])
    return source


def _iter_jsonl(path: Path) -> Iterator[Record]:
    with path.open("rb") as f:
        for i, raw in enumerate(f, 1):
            if i == 1:
                raw = raw.removeprefix(BOM)  # as Notepad and spreadsheets save "UTF-8"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise not_utf8(str(path), raw, e, first_line=i) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise row_error(str(path), i, f"not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise row_error(str(path), i, f"expected a JSON object, got {type(obj).__name__}")
            yield Record(f"{path}:{i}", obj)


def _iter_json(path: Path) -> Iterator[Record]:
    try:
        obj = json.loads(read_utf8(path))
    except json.JSONDecodeError as e:
        raise row_error(str(path), e.lineno, f"not valid JSON ({e.msg})") from None
    if isinstance(obj, dict) and isinstance(obj.get("data"), list):
        obj = obj["data"]
    if not isinstance(obj, list):
        raise UserError(f"{path}: expected a JSON list of objects (or JSON Lines in a .jsonl file)")
    for i, item in enumerate(obj):
        if not isinstance(item, dict):
            raise UserError(f"{path}[{i}]: expected a JSON object, got {type(item).__name__}")
        yield Record(f"{path}[{i}]", item)


def _maybe_json(value: str) -> Any:
    v = value.strip()
    if v[:1] in "[{":
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            return value
    return value


def _iter_csv(path: Path) -> Iterator[Record]:
    with io.StringIO(read_utf8(path), newline="") as f:
        reader = csv.DictReader(f)
        for row in reader:
            # reader.line_num is the physical line where this record ended (records may span lines)
            yield Record(f"{path}:{reader.line_num}", {k: _maybe_json(v) if isinstance(v, str) else v
                                                        for k, v in row.items() if k is not None})


def _iter_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    for i, row in enumerate(pq.read_table(path).to_pylist()):
        yield Record(f"{path}[{i}]", row)


def _iter_hub(name: str, split: str) -> Iterator[Record]:
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # noqa: BLE001 - datasets raises many types; the user needs the one line
        raise UserError(f"cannot load dataset {name!r} (split {split!r}): {str(e).splitlines()[0]}") from None
    for i, row in enumerate(ds):
        yield Record(f"{name}[{i}]", dict(row))


def iter_records(source: str, *, split: str = "train", fields: dict[str, str] | None = None) -> Iterator[Record]:
    """Rows of a data source, with field mapping applied (``fields``: our name -> the source's column)."""
    resolved = resolve_source(source)
    path = Path(resolved).expanduser()
    if path.exists():
        suffix = path.suffix.lower()
        if path.is_dir():
            raise UserError(f"{path} is a folder; give a .jsonl, .json, .csv or .parquet file")
        readers = {".jsonl": _iter_jsonl, ".json": _iter_json, ".csv": _iter_csv, ".parquet": _iter_parquet}
        if suffix not in readers:
            raise UserError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json, .csv or .parquet")
        it = readers[suffix](path)
    elif source.startswith("builtin:") or resolved.endswith((".jsonl", ".json", ".csv", ".parquet")):
        raise UserError(f"data file not found: {resolved}")
    else:
        it = _iter_hub(resolved, split)
    for rec in it:
        if fields:
            for ours, theirs in fields.items():
                if theirs not in rec.data:
                    raise UserError(f"column {theirs!r} (mapped to {ours!r} by data.fields) is missing; columns: "
                                    f"{', '.join(map(str, rec.data))}", where=rec.where)
                rec.data[ours] = rec.data[theirs]
        yield rec


def load_records(source: str, *, split: str = "train", fields: dict[str, str] | None = None,
                 what: str = "data") -> list[Record]:
    rows = list(iter_records(source, split=split, fields=fields))
    if not rows:
        raise UserError(f"{what}: {resolve_source(source)} has no rows")
    return rows


def write_jsonl(path: str | Path, rows: list[dict]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def write_or_check(outputs: dict[Path, list[dict]], *, check: bool, command: str) -> int:
    """The end of a data generator (``python -m lyrictool.data.synthetic`` / ``.redteam``): write every output
    file, or with ``check`` compare them with the files on disk and name the stale ones.  Returns the exit status
    (1: stale)."""
    import sys

    if check:
        stale = [str(path) for path, rows in outputs.items()
                 if not path.exists() or [r.data for r in load_records(str(path))] != rows]
        for path in stale:
            print(f"stale: {path} (regenerate with {command})", file=sys.stderr)
        return 1 if stale else 0
    for path, rows in outputs.items():
        write_jsonl(path, rows)
        print(f"wrote {len(rows)} rows to {path}")
    return 0


def split_records(records: list, eval_fraction: float, seed: int, *, what: str = "rows",
                  where: str | None = None) -> tuple[list, list]:
    """(train, held out): a seeded random ``eval_fraction`` of the records held out (at least one).

    ``what`` names the records in the error when too few are left to split; ``where`` is the recipe file.
    """
    if not eval_fraction:
        return records, []
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(records) * eval_fraction))
    if n_eval >= len(records):
        raise UserError(f"data.eval_fraction: {eval_fraction} of {len(records)} {what} leaves none to train on; "
                        "add more, or set data.eval_fraction: 0", where=where)
    held = set(order[:n_eval])
    return [r for i, r in enumerate(records) if i not in held], [r for i, r in enumerate(records) if i in held]
