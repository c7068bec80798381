"""Does ``rhymes`` agree with known rhyme positions in real 宋词?

Tunes (词牌) fix where the rhymes fall.  For four common regular tunes we take every poem
with the tune's usual line shape and compare, with ``lyrictool.phonetics.rhymes``:

* meant to rhyme: each rhyme position with the next rhyme position;
* not meant to rhyme: each non-rhyme line with the next rhyme position.

Rhyme positions (1-based), from the standard 词谱 (e.g. 《钦定词谱》, 龙榆生《唐宋词格律》):

    浣溪沙  7 7 7 / 7 7 7          1 2 3 5 6   (4 free)
    鹧鸪天  7 7 7 7 / 3 3 7 7 7    1 2 4 6 7 9 (3 5 8 free)
    玉楼春  7 7 7 7 / 7 7 7 7      1 2 4 5 6 8 (3 7 free)
    生查子  5 5 5 5 / 5 5 5 5      2 4 6 8     (1 3 5 7 free)

The poems rhyme by the Song-era 词韵 and are read here in modern Mandarin, so the first rate
cannot be 100%; what matters is the gap.  ``.venv/bin/python bench/rhyme_pairs.py``
"""

from __future__ import annotations

import json
import re
import sys
from itertools import pairwise
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SONGCI = ROOT / ".." / "shared" / "data" / "chinese-poetry" / "songci"
sys.path.insert(0, str(ROOT))

TUNES = {
    "浣溪沙": ((7, 7, 7, 7, 7, 7), (1, 2, 3, 5, 6)),
    "鹧鸪天": ((7, 7, 7, 7, 3, 3, 7, 7, 7), (1, 2, 4, 6, 7, 9)),
    "玉楼春": ((7, 7, 7, 7, 7, 7, 7, 7), (1, 2, 4, 5, 6, 8)),
    "生查子": ((5, 5, 5, 5, 5, 5, 5, 5), (2, 4, 6, 8)),
}
_SPLIT = re.compile(r"[，。、；：？！]+")


def tune_poems(directory: Path = SONGCI) -> dict[str, list[list[str]]]:
    """Lines of every poem of the tunes above that has the tune's usual shape."""
    out: dict[str, list[list[str]]] = {t: [] for t in TUNES}
    for path in sorted(directory.glob("ci.song.*.json")):
        for poem in json.loads(path.read_text(encoding="utf-8")):
            tune = TUNES.get(poem["rhythmic"])
            if tune is None:
                continue
            lines = [x for p in poem["paragraphs"] for x in _SPLIT.split(p) if x]
            if tuple(len(x) for x in lines) == tune[0]:
                out[poem["rhythmic"]].append(lines)
    return out


def pairs(lines: list[str], rhyme_at: tuple[int, ...]) -> tuple[list, list]:
    """(meant-to-rhyme pairs, not-meant pairs) of line texts."""
    at = [i - 1 for i in rhyme_at]
    meant = [(lines[a], lines[b]) for a, b in pairwise(at)]
    free = [i for i in range(len(lines)) if i not in at]
    not_meant = [(lines[i], lines[next(j for j in at if j > i)]) for i in free if any(j > i for j in at)]
    return meant, not_meant


def rates(poems: dict[str, list[list[str]]], scheme: str = "shisanzhe") -> dict[str, tuple[float, float, int]]:
    from lyrictool.phonetics import rhymes

    out = {}
    all_meant: list = []
    all_not: list = []
    for tune, group in poems.items():
        meant, not_meant = [], []
        for lines in group:
            m, n = pairs(lines, TUNES[tune][1])
            meant += m
            not_meant += n
        all_meant += meant
        all_not += not_meant
        out[tune] = (
            sum(rhymes(a, b, scheme) for a, b in meant) / len(meant),
            sum(rhymes(a, b, scheme) for a, b in not_meant) / len(not_meant),
            len(group),
        )
    out["all"] = (
        sum(rhymes(a, b, scheme) for a, b in all_meant) / len(all_meant),
        sum(rhymes(a, b, scheme) for a, b in all_not) / len(all_not),
        sum(len(g) for g in poems.values()),
    )
    return out


def main() -> None:
    poems = tune_poems()
    for scheme in ("shisanzhe", "zhonghua_xinyun", "zhonghua_tongyun", "final"):
        print(f"scheme {scheme}")
        for tune, (meant, not_meant, n) in rates(poems, scheme).items():
            print(f"  {tune:<4} poems {n:>4}: meant to rhyme {meant:6.1%}   not meant {not_meant:6.1%}")


if __name__ == "__main__":
    main()
