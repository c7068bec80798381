"""Write the whole 宋词 corpus as lyrics rows for ``lyrictool eval --input``.

Each poem becomes ``{"lyrics": ..., "controls": {...}, "rhythmic": ..., "author": ...}`` with one
lyric line per clause (split at punctuation).  The controls ask for the line lengths of the
tune's (词牌's) most common shape, when the tune has at least 5 poems, so line-length accuracy
measures how many poems follow their tune's usual form; rows of rarer tunes have no controls.
Poems of the four tunes in bench/rhyme_pairs.py that have the tune's shape also get the tune's
rhyme ``scheme`` (e.g. 浣溪沙 "AAAXAA"), so rhyme accuracy measures how many of the 词谱's rhyme
positions still rhyme in modern Mandarin.

    .venv/bin/python bench/songci_rows.py /tmp/songci_rows.jsonl
    /usr/bin/time -f "%e s" .venv/bin/lyrictool eval --input /tmp/songci_rows.jsonl
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from rhyme_pairs import TUNES  # the 词谱 rhyme positions

SONGCI = ROOT / ".." / "shared" / "data" / "chinese-poetry" / "songci"
_SPLIT = re.compile(r"[，。、；：？！]+")


def main(out_path: str) -> None:
    poems = []
    for path in sorted(SONGCI.glob("ci.song.*.json")):
        for poem in json.loads(path.read_text(encoding="utf-8")):
            lines = [x.strip() for p in poem["paragraphs"] for x in _SPLIT.split(p) if x.strip()]
            poems.append((poem.get("rhythmic", ""), poem.get("author", ""), lines))
    shapes: dict[str, Counter] = defaultdict(Counter)
    for tune, _, lines in poems:
        shapes[tune][tuple(len(x) for x in lines)] += 1
    with open(out_path, "w", encoding="utf-8") as out:
        for tune, author, lines in poems:
            row = {"lyrics": "\n".join(lines), "rhythmic": tune, "author": author}
            if sum(shapes[tune].values()) >= 5:
                shape = shapes[tune].most_common(1)[0][0]
                if shape and all(1 <= n <= 64 for n in shape):
                    row["controls"] = {"line_lengths": list(shape)}
            if tune in TUNES and tuple(len(x) for x in lines) == TUNES[tune][0]:
                rhyme_at = TUNES[tune][1]
                pattern = "".join("A" if i + 1 in rhyme_at else "X" for i in range(len(lines)))
                row.setdefault("controls", {})["scheme"] = pattern
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(poems):,} rows to {out_path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/songci_rows.jsonl")
