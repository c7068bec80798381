"""Copying: how much of a song is taken verbatim from a reference corpus (docs/metrics.md#copying).

A lyrics model must not hand existing songs back.  Against a reference corpus (the training corpus, the shared
宋词 and 元曲; copyrighted lyrics are never shipped as a reference) each song gets:

- ``copy_lcs``: the longest common substring with any one reference text, in characters;
- ``copy_lines``: the share of the song's lines (of at least ``min_line_chars`` characters) that occur verbatim
  in the reference;
- ``copy_ngram``: the share of the song's character n-grams (``ngram``, 4 by default) that occur in the
  reference.

Text is compared after :func:`normalize` (letters, digits and CJK characters only, Latin lower-cased): a copied
line still counts when its punctuation or line breaks differ, and a span may run across line breaks (copying three
lines of a 词 is one span of their combined length).  Spans never run across two reference texts.

One index answers all three: a suffix array of the reference texts joined by a separator (built once, prefix
doubling with numpy: about 4 s and 60 MB for the 宋词 and 元曲, 2.3 million characters).  For every position
``i`` of a song the *matching statistic* ``l_i`` (the longest prefix of the song from ``i`` that occurs in the
reference) is found by binary search over the suffixes; then the LCS is ``max l_i``, an n-gram at ``i`` is in
the reference when ``l_i >= n``, and a line is copied when ``l`` at its first character reaches its length.

Hand-written over numpy, not a dependency: the string libraries on PyPI either need a compiled build
(pydivsufsort, pyahocorasick), or match whole patterns, not the longest common substring with a corpus.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: What the copying figures are called in results (eval) and their direction (all: lower is better).
COPY_METRICS = ("copy_lcs", "copy_lines", "copy_ngram")
_NOT_TEXT = re.compile(r"[\W_]+")
_SEP = "\n"  # joins reference texts; normalize() removes it from every text, so no match crosses it
#: A copied span this long (characters, normalized; two lines of a 词, well past any common phrase) counts as
#: copying in ``copy_long`` and, by default, in the copying safety rule (:class:`lyrictool.rewards.CopyGuard`).
LONG_SPAN = 12


def normalize(text: str) -> str:
    """Letters, digits and CJK characters only (punctuation, spaces and line breaks removed), Latin lower-cased."""
    return _NOT_TEXT.sub("", text or "").lower()


def song_lines(lyrics: str) -> list[str]:
    """The lyric lines of a song, normalized (section tags, blank lines and hints left out)."""
    from lyrictool.lyrics import parse, strip_hints

    return [x for x in (normalize(line) for line in parse(strip_hints(lyrics or "")).lines) if x]


def suffix_array(codes):
    """Suffix array (a numpy array) of an integer sequence by prefix doubling (Manber & Myers), vectorised.

    ``O(n log n)`` sorts of ``n`` keys; iterations = log2 of the longest repeated substring.
    """
    import numpy as np

    rank = np.asarray(codes, dtype=np.int64).ravel()
    n = len(rank)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    k = 1
    while True:
        second = np.zeros(n, dtype=np.int64)
        second[: n - k] = rank[k:] + 1  # past the end sorts first
        key = rank * (int(rank.max()) + 2) + second
        sa = np.argsort(key)  # equal keys get equal ranks below, so the sort need not be stable
        sorted_key = key[sa]
        rank = np.empty(n, dtype=np.int64)
        rank[sa] = np.concatenate(([0], np.cumsum(sorted_key[1:] != sorted_key[:-1])))
        if rank[sa[-1]] == n - 1 or k >= n:
            return sa
        k *= 2


@dataclass
class SongCopying:
    """One song's copying figures (see the module docstring); ``span`` is the longest copied text."""

    lcs: int
    lines: float | None
    ngram: float | None
    span: str
    n_lines: int
    n_ngrams: int

    def as_metrics(self) -> dict:
        return {"copy_lcs": self.lcs, "copy_lines": self.lines, "copy_ngram": self.ngram}


class ReferenceIndex:
    """The reference corpus, indexed once; :meth:`song` scores one song against it.

    ``texts``: the reference texts (songs, poems; any iterable of strings).  ``min_line_chars``: lines shorter
    than this (after :func:`normalize`) are not counted by ``copy_lines`` (我爱你 is not a copy of anything);
    ``ngram``: n of ``copy_ngram``.
    """

    def __init__(self, texts: Iterable[str], *, min_line_chars: int = 5, ngram: int = 4):
        import numpy as np

        if min_line_chars < 1 or ngram < 1:
            raise ValueError("min_line_chars and ngram must be at least 1")
        self.min_line_chars = min_line_chars
        self.ngram = ngram
        parts = list(dict.fromkeys(t for t in (normalize(x) for x in texts) if t))  # a text twice adds nothing
        self.n_texts = len(parts)
        self.corpus = _SEP.join(parts)
        codes = np.frombuffer(self.corpus.encode("utf-32-le"), dtype=np.uint32) if self.corpus else np.zeros(0)
        self.sa = suffix_array(codes).astype(np.int32 if len(codes) < 2**31 else np.int64)
        self._starts = np.cumsum([0] + [len(p) + 1 for p in parts[:-1]]) if parts else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.corpus) - max(self.n_texts - 1, 0)

    def longest_prefix(self, text: str, *, window: int = 48) -> tuple[int, int]:
        """(length, corpus position) of the longest prefix of ``text`` that occurs in the reference.

        The binary search compares the first ``window`` characters (short slices: fast); a match that fills the
        window is searched again with the whole text, so the answer is exact at any length.
        """
        if not text or not len(self.sa):
            return 0, -1
        if len(text) > window:
            found = self.longest_prefix(text[:window], window=window)
            if found[0] < window:
                return found
            window = len(text)
        corpus, sa, m = self.corpus, self.sa, len(text)
        at = bisect.bisect_left(sa, text, key=lambda p: corpus[p:p + m])
        best, where = 0, -1
        for j in (at - 1, at):
            if 0 <= j < len(sa):
                p = int(sa[j])
                n = _common_prefix(text, corpus[p:p + m])
                if n > best:
                    best, where = n, p
        return best, where

    def matching_statistics(self, text: str) -> list[int]:
        """``l_i`` for every position ``i`` of (normalized) ``text``: the longest match with the reference that
        starts there."""
        return [self.longest_prefix(text[i:])[0] for i in range(len(text))]

    def song(self, lyrics: str) -> SongCopying:
        """Copying figures of one song (module docstring)."""
        lines = song_lines(lyrics)
        text = "".join(lines)
        stats = self.matching_statistics(text)
        lcs = max(stats, default=0)
        span_at = stats.index(lcs) if stats else 0
        counted = copied = 0
        start = 0
        for line in lines:
            if len(line) >= self.min_line_chars:
                counted += 1
                copied += stats[start] >= len(line)
            start += len(line)
        n = self.ngram
        grams = max(len(text) - n + 1, 0)
        hits = sum(stats[i] >= n for i in range(grams))
        return SongCopying(lcs=lcs, lines=copied / counted if counted else None,
                           ngram=hits / grams if grams else None, span=text[span_at:span_at + lcs],
                           n_lines=counted, n_ngrams=grams)

    def songs(self, lyrics: Sequence[str]) -> list[SongCopying]:
        return [self.song(t) for t in lyrics]


def _common_prefix(a: str, b: str) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def aggregate_copying(per_song: Sequence[SongCopying], *, long_span: int | None = None) -> dict:
    """Means over songs with Student t 95% intervals, the maximum LCS, and the share of songs with a copied span
    of at least ``long_span`` characters (default :data:`LONG_SPAN`; ``copy_long``)."""
    from lyrictool.stats import mean_ci95

    out: dict = {"n": len(per_song)}
    for key, values in (("copy_lcs", [float(s.lcs) for s in per_song]),
                        ("copy_lines", [s.lines for s in per_song if s.lines is not None]),
                        ("copy_ngram", [s.ngram for s in per_song if s.ngram is not None]),
                        ("copy_long", [float(s.lcs >= (long_span or LONG_SPAN)) for s in per_song])):
        out[key] = mean_ci95(values)
    out["copy_lcs_max"] = max((s.lcs for s in per_song), default=None)
    longest = max(per_song, key=lambda s: s.lcs, default=None)
    out["longest_span"] = longest.span if longest else ""
    return out

