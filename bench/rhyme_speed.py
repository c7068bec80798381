"""Line-final rhyme group: lyrictool's engine vs the naive whole-line pypinyin baseline.

Reads every 宋词 in ../shared/data/chinese-poetry/songci/, splits each verse into lines at
punctuation (the unit a lyric line is), and classifies the last sung syllable of every line:

* baseline: ``pypinyin.lazy_pinyin(line, style=Style.FINALS)`` on the whole line, last
  syllable, mapped through the same rhyme table (and the same 儿化 rule);
* engine: ``lyrictool.phonetics.line_groups(lines)``.

Importing the engine adds its phrase fixes to pypinyin's own dictionary, so the baseline reads
those phrases the same way; for lines whose last character has a line-final rule (了 着 还 地 长
...) the baseline applies the same rule to pypinyin's tone-marked reading of the whole line.
It asserts that both give the same group on every line (and the same tone-marked syllable,
a stricter check), then prints lines/s of each and the ratio, and how many lines the rules
read differently from pypinyin.  Timings are CPU seconds, best
of ``--repeat`` runs per chunk of 10,000 lines, the two sides interleaved.  The engine caches
per character and per reading (bounded tables), never per line, so repeats do not flatter it.

Then the per-line API (issue 19): ``lyrictool.phonetics.rhyme_group(line)`` called line by line on
the first 60,000 lines of the 宋词 files (``ci.song.0.json`` onwards in sorted name order, verses
split at ，。？！、 only) against the naive ``lazy_pinyin(line, style=Style.FINALS)`` on each line,
both in CPU seconds of this process, 5 runs of both; it prints each run's ratio (naive time over
ours) and the median.  Before timing it asserts that every line's ``rhyme_group`` equals
``line_groups`` and the whole-line baseline above.

    .venv/bin/python bench/rhyme_speed.py [--repeat 2] [--scheme shisanzhe] [--runs 5]
    .venv/bin/python bench/rhyme_speed.py --quick    # smoke: 1 file, 6,000 per-line lines (tests/)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SONGCI = ROOT / ".." / "shared" / "data" / "chinese-poetry" / "songci"
sys.path.insert(0, str(ROOT))

_SPLIT = re.compile(r"[，。、；：？！,.;:?!\s]+")
_SPLIT_PER_LINE = re.compile(r"[，。？！、]+")  # issue 19's per-line measurement splits at these only


def songci_lines(split: re.Pattern = _SPLIT, limit: int | None = None, files: int | None = None) -> list[str]:
    """Lines of the 宋词 files in sorted name order (the first ``files``), at most ``limit`` of them."""
    lines: list[str] = []
    for path in sorted(SONGCI.glob("ci.song.*.json"))[:files]:
        for poem in json.loads(path.read_text(encoding="utf-8")):
            for paragraph in poem["paragraphs"]:
                lines.extend(x for x in split.split(paragraph) if x)
        if limit is not None and len(lines) >= limit:
            break
    return lines[:limit]


def baseline(lines: list[str], scheme: str) -> list[str | None]:
    """The group of each line from pypinyin on the whole line, with the engine's line-final rules."""
    from pypinyin import Style, lazy_pinyin
    from pypinyin.contrib.tone_convert import to_finals

    from lyrictool.phonetics import engine
    from lyrictool.phonetics.tables import final_to_group

    # The apical -i needs the initial, which FINALS drops; the two schemes offered here do not
    # separate -i from i, so the FINALS baseline is exact for them.
    out = []
    for line in lines:
        core = engine.sung_core(line)
        if not core or engine.char_kind(core[-1]) != engine._HAN:
            out.append(None)
            continue
        if engine._is_erhua(core):
            final = lazy_pinyin(core, style=Style.FINALS)[-2]
        elif core[-1] in engine.LINE_FINAL_RULES:
            whole = lazy_pinyin(core)[-1]
            reading = engine.line_final_reading(core, whole)
            final = to_finals(reading, strict=True) if reading else ""
        else:
            final = lazy_pinyin(core, style=Style.FINALS)[-1]
        out.append(final_to_group(final, scheme))
    return out


def per_line(lines: list[str], scheme: str, runs: int) -> list[tuple[float, float]]:
    """(naive CPU s, rhyme_group CPU s) of each run over ``lines``, one call per line on both sides."""
    from pypinyin import Style, lazy_pinyin

    from lyrictool.phonetics import line_groups, rhyme_group

    groups = [rhyme_group(line, scheme) for line in lines]
    assert groups == line_groups(lines, scheme), "rhyme_group differs from line_groups"
    expected = baseline(lines, scheme)
    diffs = [(ln, g, e) for ln, g, e in zip(lines, groups, expected) if g != e]
    assert not diffs, f"{len(diffs)} lines differ from the whole-line baseline, e.g. {diffs[:5]}"
    finals = Style.FINALS
    out = []
    for _ in range(runs):
        t = time.process_time()
        for line in lines:
            lazy_pinyin(line, style=finals)
        naive_s = time.process_time() - t
        t = time.process_time()
        for line in lines:
            rhyme_group(line, scheme)
        out.append((naive_s, time.process_time() - t))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--scheme", default="shisanzhe", choices=["shisanzhe", "zhonghua_tongyun"])
    parser.add_argument("--runs", type=int, default=5, help="runs of the per-line measurement (median ratio)")
    parser.add_argument("--per-line-lines", type=int, default=60_000)
    parser.add_argument("--quick", action="store_true", help="smoke test: first file only, 6,000 per-line lines")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.per_line_lines = 1, 6_000
    load_before = os.getloadavg()

    t0 = time.perf_counter()
    from pypinyin import Style, lazy_pinyin

    from lyrictool.phonetics import engine, line_groups

    import_s = time.perf_counter() - t0
    lines = songci_lines(files=1 if args.quick else None)

    # Both are timed in CPU seconds of this process (time.process_time), interleaved chunk by
    # chunk, so other work on a shared machine slows neither side more than the other.
    chunk = 10_000
    base_s = fast_s = 0.0
    base_groups: list = []
    fast_groups: list = []
    for start in range(0, len(lines), chunk):
        part = lines[start : start + chunk]
        b_best = f_best = float("inf")
        for _ in range(args.repeat):
            t = time.process_time()
            b = baseline(part, args.scheme)
            b_best = min(b_best, time.process_time() - t)
            t = time.process_time()
            f = line_groups(part, args.scheme)
            f_best = min(f_best, time.process_time() - t)
        base_s += b_best
        fast_s += f_best
        base_groups += b
        fast_groups += f
    mismatches = [(ln, b, f) for ln, b, f in zip(lines, base_groups, fast_groups) if b != f]
    assert not mismatches, f"{len(mismatches)} lines differ, e.g. {mismatches[:5]}"

    # Stricter: the exact syllable (tone marks included) equals the whole-line reading.
    syllable_diffs = 0
    by_rule: dict[str, int] = {}
    for line in lines:
        core = engine.sung_core(line)
        if core and engine.char_kind(core[-1]) == engine._HAN and not engine._is_erhua(core):
            whole = lazy_pinyin(core, style=Style.TONE)[-1]
            whole = None if whole == core[-1] else whole  # a hanzi pypinyin has no reading for
            expected = engine.line_final_reading(core, whole)
            if expected != whole:
                key = f"{core[-1]} {whole}->{expected}"
                by_rule[key] = by_rule.get(key, 0) + 1
            if engine.last_reading(core) != expected:
                syllable_diffs += 1
    assert syllable_diffs == 0, f"{syllable_diffs} lines read differently"

    n = len(lines)
    print(f"宋词 lines: {n:,} (scheme {args.scheme}; pypinyin+engine import {import_s:.2f} s)")
    print(f"baseline lazy_pinyin(whole line, FINALS): {n / base_s:>12,.0f} lines/s ({base_s:.2f} CPU s)")
    print(f"lyrictool line_groups:                    {n / fast_s:>12,.0f} lines/s ({fast_s:.3f} CPU s)")
    print(f"speed-up: {base_s / fast_s:.1f}x; same group on all {n:,} lines; same syllable too")
    none = sum(g is None for g in fast_groups)
    print(f"lines without a group: {none:,} ({none / n:.2%})")
    changed = sum(by_rule.values())
    detail = ", ".join(f"{k}: {v}" for k, v in sorted(by_rule.items(), key=lambda kv: -kv[1]))
    print(f"line-final rules read {changed:,} lines differently from pypinyin ({detail})")

    # Issue 19: the per-line API, one call per line, against naive pypinyin on each line.
    pl_lines = songci_lines(_SPLIT_PER_LINE, limit=args.per_line_lines)
    timings = per_line(pl_lines, args.scheme, args.runs)
    ratios = [naive / ours for naive, ours in timings]
    median = statistics.median(ratios)
    m = len(pl_lines)
    print(f"per-line rhyme_group on the first {m:,} lines (split at ，。？！、), {args.runs} runs, CPU s:")
    for i, ((naive, ours), ratio) in enumerate(zip(timings, ratios)):
        print(f"  run {i + 1}: naive lazy_pinyin(line, FINALS) {naive:.3f} s ({naive / m * 1e6:.1f} µs/line), "
              f"rhyme_group {ours:.3f} s ({ours / m * 1e6:.2f} µs/line): {ratio:.1f}x")
    print(f"per-line median ratio (naive time / rhyme_group time): {median:.1f}x "
          f"(issue 19 target >= 20x: {'met' if median >= 20 else 'NOT met'}); same group as line_groups "
          f"and the whole-line baseline on all {m:,} lines")
    load_after = os.getloadavg()
    print(f"load average (1/5/15 min): before {' '.join(f'{x:.2f}' for x in load_before)}, "
          f"after {' '.join(f'{x:.2f}' for x in load_after)}")
    if not args.quick:
        from lyrictool.demo import torch_import_time

        probe = torch_import_time()
        print(f'box speed: python -c "import torch" {probe["wall_s"]} s wall, {probe["cpu_s"]} CPU s')


if __name__ == "__main__":
    main()
