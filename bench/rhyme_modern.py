"""The rhyme engine on modern lyric lines of our own: tests/data/modern_lines.tsv.

Each line (written for this project, see the file's header) has the expected rhyme-bearing
character, reading and 十三辙 group.  A line is right when ``analyze_line`` finds that character
with that syllable and group (the tone is scored apart: a neutral tone written as a full one,
记得 jì dé for jì·de, does not change the rhyme); lines with no rhyme (a Latin word or digits at
the end) are right when the engine gives none.  Near-rhyme pairs are right when strict
``rhymes`` says no and ``strictness="near"`` says yes; control pairs when both say no.

    .venv/bin/python bench/rhyme_modern.py [--failures] [--skip-particles]
"""

from __future__ import annotations

import argparse
import sys
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "modern_lines.tsv"
sys.path.insert(0, str(ROOT))

_TONE_MARKS = {"\u0304", "\u0301", "\u030c", "\u0300"}  # macron, acute, caron, grave (not ü's diaeresis)


def toneless(pinyin: str) -> str:
    decomposed = unicodedata.normalize("NFD", pinyin)
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if c not in _TONE_MARKS))


@dataclass(frozen=True)
class Row:
    number: int  # line number in the file
    category: str
    line: str
    char: str | None
    pinyin: str | None
    group: str | None
    pair: str
    batch: int  # 1, or 2 for the lines written after batch 1 was scored and before the rules


def load(path: Path = DATA) -> list[Row]:
    rows = []
    header_seen = False
    batch = 1
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if text.startswith("# --- batch "):
            batch = int(text.split()[3].rstrip(":"))
        if not text.strip() or text.startswith("#"):
            continue
        fields = text.split("\t")
        if not header_seen:
            assert fields[:5] == ["category", "line", "char", "pinyin", "group"], fields
            header_seen = True
            continue
        fields += [""] * (6 - len(fields))
        cat, line, char, pinyin, group, pair = fields[:6]
        none = [None if v == "-" else v for v in (char, pinyin, group)]
        rows.append(Row(number, cat, line, *none, pair.strip(), batch))
    return rows


@dataclass
class Result:
    rows: int
    right: int  # character, syllable and group
    tone_right: int  # ... and the tone too
    group_right: int  # the group alone (what rhyme checks use)
    by_category: dict[str, tuple[int, int]]
    failures: list[str]
    pairs: int
    pairs_right: int
    pair_failures: list[str]

    @property
    def accuracy(self) -> float:
        return self.right / self.rows


def score(rows: list[Row], **options) -> Result:
    """Score ``analyze_line`` (with ``options``, e.g. skip_particles=True) on ``rows``."""
    from lyrictool.phonetics import analyze_line, rhymes

    right = tone_right = group_right = 0
    by_cat: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    failures = []
    for row in rows:
        sound = analyze_line(row.line, **options)
        if row.group is None:
            ok = tone_ok = sound is None
        else:
            ok = (
                sound is not None
                and sound.char == row.char
                and toneless(sound.pinyin) == toneless(row.pinyin)
                and sound.group == row.group
            )
            tone_ok = ok and sound.pinyin == row.pinyin
        right += ok
        group_right += (sound.group if sound else None) == row.group
        tone_right += tone_ok
        by_cat[row.category][0] += ok
        by_cat[row.category][1] += 1
        if not ok:
            got = "none" if sound is None else f"{sound.char} {sound.pinyin} {sound.group}"
            want = "none" if row.group is None else f"{row.char} {row.pinyin} {row.group}"
            failures.append(f"line {row.number}: {row.line}  got {got}, want {want}")

    pairs: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row.pair:
            pairs[row.pair].append(row)
    pair_failures = []
    for name, (a, b) in sorted(pairs.items()):
        strict = rhymes(a.line, b.line)
        try:
            near = rhymes(a.line, b.line, strictness="near")
        except TypeError:  # an engine without near rhymes
            near = None
        want_near = name.startswith("n")
        if strict or near != want_near:
            pair_failures.append(f"pair {name}: {a.line} / {b.line}  strict {strict}, near {near}, want near {want_near}")
    return Result(
        rows=len(rows),
        right=right,
        tone_right=tone_right,
        group_right=group_right,
        by_category={k: (v[0], v[1]) for k, v in by_cat.items()},
        failures=failures,
        pairs=len(pairs),
        pairs_right=len(pairs) - len(pair_failures),
        pair_failures=pair_failures,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failures", action="store_true", help="list every line read wrongly")
    parser.add_argument("--skip-particles", action="store_true", help="opt-in 虚字脚 rule")
    args = parser.parse_args()
    rows = load()
    options = {"skip_particles": True} if args.skip_particles else {}
    r = score(rows, **options)
    print(f"{DATA.relative_to(ROOT)}: {r.rows} lines, {Counter(x.category for x in rows)}")
    print(f"right (character, syllable, group): {r.right}/{r.rows} = {r.accuracy:.1%}")
    print(f"  ... tone too:                     {r.tone_right}/{r.rows} = {r.tone_right / r.rows:.1%}")
    print(f"group alone:                        {r.group_right}/{r.rows} = {r.group_right / r.rows:.1%}")
    for cat, (ok, n) in sorted(r.by_category.items()):
        print(f"  {cat:<9} {ok:>3}/{n:<3} {ok / n:6.1%}")
    for batch in sorted({x.batch for x in rows}):
        b = score([x for x in rows if x.batch == batch], **options)
        print(f"  batch {batch}: {b.right}/{b.rows} = {b.accuracy:.1%}")
    print(f"near-rhyme pairs right: {r.pairs_right}/{r.pairs}")
    if args.failures:
        for line in r.failures + r.pair_failures:
            print("  " + line)


if __name__ == "__main__":
    main()
