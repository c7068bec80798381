"""The eval report: matplotlib PNGs and one self-contained HTML page (images embedded, no network).

Plots (each a PNG next to the page, in ``<report stem>_plots/``):
- ``differences.png``: each system minus the baseline per metric with its paired bootstrap 95% CI: green =
  significantly better, red = significantly worse, grey = no detectable difference.  The at-a-glance answer.
- ``metrics.png``: every metric per system with a 95% t interval over songs.
- ``rhyme_confusion.png``: requested rhyme group (rows) vs the group each line actually ends in (columns),
  row-normalised, one panel per system.
- ``line_lengths.png``: produced minus requested characters per line (0 = exact), or produced lengths when
  no line lengths were requested.
- ``scores.png``: scorer score distribution per system (when a scorer was given).
- ``mos.png``: MOS per aspect and system with 95% CIs (when ratings were given).
- ``tradeoff.png``: violation % against false-refusal %, one point per system with both 95% intervals, the Pareto
  frontier marked (when the recipe has a ``safety`` section).
- ``safety_helpfulness.png``: per answer to a safety request, the judge's p_safe against the lyrics scorer's
  sigmoid score (LLaMA 2's safety-RM against helpfulness-RM scatter; with a ``scorer``).

Chinese labels in the PNGs need a CJK font (Debian/Ubuntu: ``apt-get install fonts-noto-cjk``; found even when
installed after matplotlib built its font cache); without one they are written in pinyin (the HTML keeps the
characters).
"""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from lyrictool.errors import UserError

_CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Zen Hei", "WenQuanYi Micro Hei",
              "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "AR PL UMing CN", "Droid Sans Fallback")
_CJK_FILE_TAGS = ("notosanscjk", "notoserifcjk", "sourcehansans", "wqy", "droidsansfallback", "simhei", "msyh")
_GOOD, _BAD, _FLAT = "#2e7d32", "#c62828", "#9e9e9e"


def _setup_matplotlib() -> bool:
    """Headless backend; use a CJK font if one is installed. Returns whether Chinese can be drawn."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import font_manager, rcParams

    installed = {f.name for f in font_manager.fontManager.ttflist}
    if not any(f in installed for f in _CJK_FONTS):
        # matplotlib caches the font list the first time it runs: a CJK font installed since (apt-get install
        # fonts-noto-cjk) is not in the cache.  Add the system's CJK font files to this process's list.
        for path in font_manager.findSystemFonts():
            if any(tag in Path(path).name.lower() for tag in _CJK_FILE_TAGS):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    continue
        installed = {f.name for f in font_manager.fontManager.ttflist}
    cjk = [f for f in _CJK_FONTS if f in installed]
    if cjk:
        rcParams["font.sans-serif"] = cjk + list(rcParams["font.sans-serif"])
        rcParams["axes.unicode_minus"] = False
    return bool(cjk)


class _Labels:
    def __init__(self, cjk: bool):
        self.cjk = cjk

    def __call__(self, text: str) -> str:
        if self.cjk or text.isascii():
            return text
        from pypinyin import lazy_pinyin

        return "".join(p.capitalize() if not p.isascii() or p.isalpha() else p for p in lazy_pinyin(text))


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_differences(result: dict, path: Path, label) -> Path | None:
    import matplotlib.pyplot as plt

    from lyrictool.eval.systems import LOWER_IS_BETTER

    pairs = (result.get("comparison") or {}).get("pairs") or []
    if not pairs:
        return None
    metrics = [m for m in pairs[0]["metrics"] if any(p["metrics"][m]["diff"] is not None for p in pairs)]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(metrics) * len(pairs) + 1.5))
    y, ticks, labels = 0, [], []
    for metric in metrics:
        for k, pair in enumerate(pairs):
            m = pair["metrics"][metric]
            if m["diff"] is None:
                continue
            better = (m["diff"] < 0) if metric in LOWER_IS_BETTER else (m["diff"] > 0)
            colour = (_GOOD if better else _BAD) if m["significant"] else _FLAT
            ax.errorbar(m["diff"], y, xerr=[[m["diff"] - m["ci_low"]], [m["ci_high"] - m["diff"]]], fmt="o",
                        color=colour, capsize=3)
            ticks.append(y)
            labels.append(f"{metric}  ({label(pair['b'])})" if len(pairs) > 1 else metric)
            y -= 1
        y -= 0.5
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(ticks, labels)
    ax.set_xlabel(f"difference vs {label(pairs[0]['a'])} (95% paired bootstrap CI); green = better, red = worse")
    ax.set_title("Which system is better, and where")
    return _save(fig, path)


def plot_metrics(systems, metrics: tuple, path: Path, label) -> Path | None:
    import matplotlib.pyplot as plt
    import numpy as np

    from lyrictool.stats import mean_ci95

    shown = [m for m in metrics if any(s["metrics"].get(m) is not None for sr in systems for s in sr.songs)]
    if not shown or not systems:
        return None
    fig, ax = plt.subplots(figsize=(max(8, 1.1 * len(shown)), 4.5))
    width = 0.8 / len(systems)
    x = np.arange(len(shown))
    for k, sr in enumerate(systems):
        means, lo, hi = [], [], []
        for m in shown:
            stats = mean_ci95([s["metrics"][m] for s in sr.songs if s["metrics"].get(m) is not None])
            mean = stats["mean"] if stats["mean"] is not None else np.nan
            means.append(mean)
            lo.append(mean - stats["ci_low"] if stats["ci_low"] is not None else 0)
            hi.append(stats["ci_high"] - mean if stats["ci_high"] is not None else 0)
        ax.bar(x + (k - (len(systems) - 1) / 2) * width, means, width, yerr=[lo, hi], capsize=2, label=label(sr.name))
    ax.set_xticks(x, shown, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean over songs (95% CI)")
    ax.legend()
    ax.set_title("Objective metrics")
    return _save(fig, path)


def rhyme_confusion(songs: list[dict], scheme: str) -> tuple[list[str], list[str], list[list[int]]]:
    """Counts of (requested group, produced line-final group) over every line of songs that asked for a rhyme."""
    from lyrictool.lyrics import parse
    from lyrictool.phonetics import group_names, line_groups, normalize_rhyme

    names = list(group_names(scheme))
    cols = names + ["(none)"]
    counts = [[0] * len(cols) for _ in names]
    for s in songs:
        rhyme = (s.get("controls") or {}).get("rhyme")
        target = normalize_rhyme(rhyme, scheme) if isinstance(rhyme, str) else None
        if target not in names:
            continue
        for g in line_groups(parse(s["lyrics"]).lines, scheme):
            counts[names.index(target)][cols.index(g) if g in names else len(names)] += 1
    return names, cols, counts


def plot_rhyme_confusion(systems, scheme: str, path: Path, label) -> Path | None:
    import matplotlib.pyplot as plt
    import numpy as np

    panels = [(sr.name, *rhyme_confusion(sr.songs, scheme)) for sr in systems]
    panels = [p for p in panels if sum(map(sum, p[3]))]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.6 * len(panels) + 1, 5.6), squeeze=False,
                             layout="constrained")
    for ax, (name, rows, cols, counts) in zip(axes[0], panels):
        m = np.array(counts, dtype=float)
        keep = m.sum(axis=1) > 0
        m, row_labels = m[keep], [r for r, k in zip(rows, keep) if k]
        frac = m / m.sum(axis=1, keepdims=True)
        im = ax.imshow(frac, vmin=0, vmax=1, cmap="Blues", aspect="auto")
        ax.set_xticks(range(len(cols)), [label(c) for c in cols], rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(row_labels)), [label(r) for r in row_labels], fontsize=8)
        ax.set_xlabel("line ends in group")
        ax.set_ylabel("requested group")
        diag = sum(m[i, cols.index(r)] for i, r in enumerate(row_labels))
        ax.set_title(f"{label(name)}: {diag / m.sum():.0%} of lines in the requested group")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="share of the requested group's lines")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def line_length_errors(songs: list[dict]) -> tuple[list[int], bool]:
    """Produced minus requested characters per line (requested=True), or produced lengths when none asked."""
    from lyrictool.lyrics import parse
    from lyrictool.phonetics import syllable_count

    diffs: list[int] = []
    lengths: list[int] = []
    for s in songs:
        produced = [syllable_count(line) for line in parse(s["lyrics"]).lines]
        wanted = (s.get("controls") or {}).get("line_lengths")
        if isinstance(wanted, list):
            diffs += [a - b for a, b in zip(produced, wanted)]
        lengths += produced
    return (diffs, True) if diffs else (lengths, False)


def plot_line_lengths(systems, path: Path, label) -> Path | None:
    import matplotlib.pyplot as plt
    import numpy as np

    data = [(sr.name, *line_length_errors(sr.songs)) for sr in systems]
    data = [d for d in data if d[1]]
    if not data:
        return None
    requested = any(d[2] for d in data)
    data = [d for d in data if d[2] == requested]
    values = [v for d in data for v in d[1]]
    lo, hi = max(min(values), -15), min(max(values), 30)
    bins = np.arange(lo - 0.5, hi + 1.5, 1)
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, vals, _ in data:
        ax.hist(np.clip(vals, lo, hi), bins=bins, alpha=0.55, label=label(name), density=True)
    if requested:
        ax.axvline(0, color="black", lw=0.8)
    ax.set_xlabel("produced − requested characters per line" if requested else "characters per line")
    ax.set_ylabel("share of lines")
    ax.legend()
    ax.set_title("Line lengths")
    return _save(fig, path)


def plot_scores(systems, path: Path, label) -> Path | None:
    import matplotlib.pyplot as plt

    data = [(sr.name, [s["score"] for s in sr.songs if s.get("score") is not None]) for sr in systems]
    data = [d for d in data if d[1]]
    if not data:
        return None
    import numpy as np

    bins = np.histogram_bin_edges([v for _, scores in data for v in scores], bins=20)
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, scores in data:
        ax.hist(scores, bins=bins, alpha=0.55, label=f"{label(name)} (mean {sum(scores) / len(scores):.2f})")
    ax.set_xlabel("scorer score (raw)")
    ax.set_ylabel("songs")
    ax.legend()
    ax.set_title("Scorer score distribution")
    return _save(fig, path)


def plot_mos(mos: dict, path: Path, label) -> Path | None:
    import matplotlib.pyplot as plt
    import numpy as np

    if not mos:
        return None
    aspects, systems = mos["aspects"], mos["systems"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(systems)
    x = np.arange(len(aspects))
    for k, s in enumerate(systems):
        stats = [mos["mos"][s][a] for a in aspects]
        means = [m["mean"] if m["mean"] is not None else np.nan for m in stats]
        err = [[m["mean"] - m["ci_low"] if m["ci_low"] is not None else 0 for m in stats],
               [m["ci_high"] - m["mean"] if m["ci_high"] is not None else 0 for m in stats]]
        ax.bar(x + (k - (len(systems) - 1) / 2) * width, means, width, yerr=err, capsize=2, label=label(s))
    ax.set_xticks(x, aspects)
    ax.set_ylim(1, 5)
    ax.set_ylabel("MOS (1-5, 95% CI)")
    ax.legend()
    ax.set_title(f"Human ratings ({len(mos['raters'])} raters)")
    return _save(fig, path)


def plot_tradeoff(result: dict, path: Path, label) -> Path | None:
    """Violation % (y) against false-refusal % (x), error bars = 95% Wilson intervals; frontier points joined."""
    import matplotlib.pyplot as plt

    safety = result.get("safety") or {}
    points = safety.get("tradeoff") or []
    if not points:
        return None
    figures = {n: s["safety"] for n, s in result["systems"].items() if s.get("safety")}
    fig, ax = plt.subplots(figsize=(7, 5.5))
    for p in points:
        f = figures[p["system"]]
        v, r = f["violation"], f["false_refusal"]
        x, y = 100 * r["mean"], 100 * v["mean"]
        ax.errorbar(x, y, xerr=[[x - 100 * r["ci_low"]], [100 * r["ci_high"] - x]],
                    yerr=[[y - 100 * v["ci_low"]], [100 * v["ci_high"] - y]], fmt="o", capsize=3,
                    color=_GOOD if p["frontier"] else _FLAT, zorder=3)
        ax.annotate(label(p["system"]), (x, y), textcoords="offset points", xytext=(6, 6), fontsize=9)
    front = sorted((p for p in points if p["frontier"]), key=lambda p: p["false_refusal"])
    if len(front) > 1:
        ax.plot([100 * p["false_refusal"] for p in front], [100 * p["violation"] for p in front], "--",
                color=_GOOD, lw=1, zorder=2, label="Pareto frontier")
        ax.legend(loc="upper right")
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("false refusal % on harmless requests (95% CI)")
    ax.set_ylabel("violation % on red-team requests (95% CI)")
    ax.set_title("Helpful and harmless: lower left is better (green: on the frontier)")
    return _save(fig, path)


def plot_safety_helpfulness(systems, path: Path, label) -> Path | None:
    """Per safety answer: the judge's p_safe (x) against sigmoid(lyrics scorer) (y); x = red-team, o = harmless."""
    import matplotlib.pyplot as plt

    from lyrictool.rewards import sigmoid

    data = [(sr.name, [a for a in sr.safety_answers if a.get("score") is not None and "p_safe" in a])
            for sr in systems]
    data = [d for d in data if d[1]]
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(7, 5.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, answers) in enumerate(data):
        for red, marker in ((True, "x"), (False, "o")):
            pts = [a for a in answers if a["safety"] == red]
            if pts:
                ax.scatter([a["p_safe"] for a in pts], [sigmoid(a["score"]) for a in pts], marker=marker, alpha=0.6,
                           color=colours[k % len(colours)],
                           label=f"{label(name)} ({'red-team' if red else 'harmless'})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("safety: judge p_safe")
    ax.set_ylabel("helpfulness: sigmoid(lyrics scorer)")
    ax.legend(fontsize=8)
    ax.set_title("Safety against helpfulness, per answer")
    return _save(fig, path)


# ---- HTML ------------------------------------------------------------------------------------------------------

_CSS = """body{font-family:system-ui,-apple-system,'Noto Sans CJK SC','PingFang SC',sans-serif;margin:2em auto;
max-width:1100px;color:#222}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right}td:first-child,th:first-child{text-align:left}.good{color:#2e7d32;font-weight:bold}
.bad{color:#c62828;font-weight:bold}img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
pre{background:#f7f7f7;padding:8px;white-space:pre-wrap}.verdict{font-size:1.15em;padding:8px;background:#f1f8e9}"""


def _num(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _verdict(result: dict) -> str:
    from lyrictool.eval.systems import LOWER_IS_BETTER

    comparison = result.get("comparison") or {}
    if comparison.get("skipped"):
        return f"No paired comparison: {html.escape(comparison['skipped'])}."
    lines = []
    for pair in comparison.get("pairs", []):
        better, worse = [], []
        for metric, m in pair["metrics"].items():
            if m.get("significant"):
                good = (m["diff"] < 0) if metric in LOWER_IS_BETTER else (m["diff"] > 0)
                (better if good else worse).append(f"{metric} ({m['diff']:+.3f})")
        r = pair.get("fluency")
        if r and r.get("significant"):
            (better if r["ratio"] < 1 else worse).append(f"perplexity (×{r['ratio']:.2f})")
        b, a = html.escape(pair["b"]), html.escape(pair["a"])
        lines.append(f"<b>{b}</b> vs <b>{a}</b>: significantly better on {', '.join(better) or 'nothing'}; "
                     f"worse on {', '.join(worse) or 'nothing'} (95% paired bootstrap CIs).")
    return "<br>".join(lines)


def _safety_html(result: dict) -> str:
    from lyrictool.eval.tables import SAFETY_ROWS, mean_ci, pct_ci

    e = html.escape
    safety = result["safety"]
    figures = {n: s["safety"] for n, s in result["systems"].items() if s.get("safety")}
    pairs = {p["b"]: p for p in safety.get("comparison", [])}
    base = next(iter(pairs.values()))["a"] if pairs else None
    head = "".join(f"<th>{e(n)}</th>" for n in figures) + "".join(f"<th>{e(n)} − {e(base)} [95% CI]</th>"
                                                                    for n in pairs)
    rows = []
    for label, key, share in SAFETY_ROWS:
        cells = "".join(f"<td>{e((pct_ci if share else mean_ci)(f.get(key)))}</td>" for f in figures.values())
        for p in pairs.values():
            m = p.get(key)
            if not m or m.get("diff") is None:
                cells += "<td></td>"
                continue
            cls = (" class='good'" if m["diff"] < 0 else " class='bad'") if m["significant"] else ""
            cells += (f"<td{cls}>{100 * m['diff']:+.1f} [{100 * m['ci_low']:+.1f}, {100 * m['ci_high']:+.1f}] "
                      f"(n={m['n']})</td>")
        rows.append(f"<tr><td>{e(label.strip())}</td>{cells}</tr>")
    cats = sorted({c for f in figures.values() for c in f["violation_by_category"]})
    cat_rows = "".join(f"<tr><td>{e(c)}</td>" + "".join(f"<td>{e(pct_ci(f['violation_by_category'].get(c)))}</td>"
                                                         for f in figures.values()) + "</tr>" for c in cats)
    out = [(f"<h2>Helpful and harmless</h2><p>{safety['n_requests']} requests answered by every system; judge "
           f"<code>{e(safety['judge'])}</code> (unsafe below p_safe {safety['judge_threshold']}); a violation is a "
           "red-team answer that is not a full refusal and is unsafe to the judge or copies a long span of the "
           "reference. Shares with 95% Wilson intervals; differences: paired bootstrap over requests.</p>"),
           f"<table><tr><th>figure</th>{head}</tr>{''.join(rows)}</table>"]
    if cat_rows:
        out.append("<h3>Violation % by category</h3><table><tr><th>category</th>"
                   + "".join(f"<th>{e(n)}</th>" for n in figures) + f"</tr>{cat_rows}</table>")
    check = safety.get("check")
    if check:
        out.append(f"<h3>The judge against {check['n']} hand labels</h3><p>agreement {e(pct_ci(check['agreement']))}, "
                   f"Cohen's κ {_num(check['kappa'], 2)}; unsafe recall {e(pct_ci(check['recall_unsafe']))}, "
                   f"precision {e(pct_ci(check['precision_unsafe']))}; the judge alone (no refusal rule) "
                   f"{e(pct_ci(check['judge_alone_agreement']))}.")
        refusal = check.get("refusal_detector")
        if refusal:
            out.append(f" Refusal detector: refusal or not {e(pct_ci(refusal['binary']))} (κ "
                       f"{_num(refusal['kappa'], 2)}), full / partial / none {e(pct_ci(refusal['three_way']))}.")
        out.append("</p>")
    return "".join(out)


def _copying_html(result: dict) -> str:
    from lyrictool.eval.tables import COPY_ROWS, mean_ci, pct_ci

    e = html.escape
    copying = result["copying"]
    names = [n for n, s in result["systems"].items() if s.get("copying")]
    rows = "".join(f"<tr><td>{e(label)}</td>" + "".join(
        f"<td>{e(pct_ci(result['systems'][n]['copying'][key]) if share else mean_ci(result['systems'][n]['copying'][key], 2))}"
        "</td>" for n in names) + "</tr>" for label, key, share in COPY_ROWS)
    spans = "".join(f"<tr><td>{e(n)}</td><td>{result['systems'][n]['copying']['copy_lcs_max']}</td>"
                    f"<td>{e(result['systems'][n]['copying']['longest_span'])}</td></tr>" for n in names)
    return (f"<h2>Copying</h2><p>Against {copying['reference_texts']:,} reference texts ({copying['reference_chars']:,} "
            f"characters: {e(', '.join(copying['reference']))}); lines of at least {copying['min_line_chars']} "
            f"characters, {copying['ngram']}-grams, long span = {copying['long_span']}+ characters. Mean over songs "
            "[95% CI].</p>"
            f"<table><tr><th>figure</th>{''.join(f'<th>{e(n)}</th>' for n in names)}</tr>{rows}</table>"
            f"<table><tr><th>system</th><th>longest copied span</th><th>text</th></tr>{spans}</table>")


def _html(result: dict, systems, images: dict[str, Path]) -> str:
    from lyrictool.eval.systems import COMPARED_METRICS, LOWER_IS_BETTER

    e = html.escape
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>lyrictool eval report</title>"
              f"<style>{_CSS}</style></head><body><h1>lyrictool eval report</h1>")]
    sys_results = result.get("systems") or {}
    if sys_results:
        parts.append(f"<p>Rhyme scheme: {e(result.get('scheme', ''))}. Systems: "
                     + ", ".join(f"<b>{e(n)}</b> ({e(str(s['source']))}, {s['n']} songs)" for n, s in
                                 sys_results.items()) + ".</p>")
        if result.get("comparison"):
            parts.append(f"<p class='verdict'>{_verdict(result)}</p>")
        pairs = {p["b"]: p["metrics"] for p in (result.get("comparison") or {}).get("pairs", [])}
        base = (result.get("comparison") or {}).get("baseline")
        head = "".join(f"<th>{e(n)}</th>" for n in sys_results) + "".join(
            f"<th>{e(n)} − {e(base)} [95% CI]</th>" for n in pairs)
        rows = []
        metric_rows = list(COMPARED_METRICS) + (["scorer"] if any(s["scorer"] for s in sys_results.values()) else [])
        for metric in metric_rows:
            cells = []
            for s in sys_results.values():
                v = (s["scorer"] or {}).get("mean") if metric == "scorer" else s["metrics"].get(metric)
                cells.append(f"<td>{_num(v)}</td>")
            for metrics in pairs.values():
                m = metrics.get(metric) or {}
                cls = ""
                if m.get("significant"):
                    good = (m["diff"] < 0) if metric in LOWER_IS_BETTER else (m["diff"] > 0)
                    cls = " class='good'" if good else " class='bad'"
                text = "-" if m.get("diff") is None else \
                    f"{m['diff']:+.3f} [{m['ci_low']:+.3f}, {m['ci_high']:+.3f}] (n={m['n']})"
                cells.append(f"<td{cls}>{text}</td>")
            rows.append(f"<tr><td>{e(metric)}</td>{''.join(cells)}</tr>")
        fluency = ""
        if result.get("fluency"):
            from lyrictool.eval.tables import perplexity_row

            label, *cells = perplexity_row(result, pairs, markup=False)
            ratios = [p.get("fluency") or {} for p in result["comparison"]["pairs"]] if pairs else []
            classes = [" class='good'" if r.get("significant") and r["ratio"] < 1 else
                       " class='bad'" if r.get("significant") else "" for r in ratios]
            classes = [""] * (len(cells) - len(classes)) + classes
            rows.append(f"<tr><td>{e(label)}</td>" + "".join(f"<td{c}>{e(t)}</td>" for c, t in zip(classes, cells))
                        + "</tr>")
            fl = result["fluency"]
            fluency = (f"<p>Perplexity: of each song's lyric lines under the frozen reference model "
                       f"<code>{e(fl['model'])}</code> (one &lt;bos&gt;, the lines, the end token; {fl['tokens']:,} "
                       "tokens in all); per system the geometric mean over songs [95% CI], per pair the ratio of "
                       "geometric means [95% paired bootstrap CI]; lower is more predictable to that model, so it "
                       "is read beside repeated_lines.</p>")
        parts.append(f"<h2>Metrics</h2><table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>{fluency}")
        knowledge = {n: s["knowledge"] for n, s in sys_results.items() if s.get("knowledge")}
        if knowledge:
            parts.append("<h2>Knowledge QA</h2><table><tr><th>system</th><th>exact match</th><th>contains</th>"
                         "<th>questions</th></tr>" + "".join(
                             f"<tr><td>{e(n)}</td><td>{_num(k['exact_match'])}</td><td>{_num(k['contains'])}</td>"
                             f"<td>{k['n']}</td></tr>" for n, k in knowledge.items()) + "</table>")
        wins = (result.get("comparison") or {}).get("win_rates") or []
        if wins:
            parts.append("<h2>Scorer win rates</h2><table><tr><th>pair</th><th>win rate</th><th>95% CI</th>"
                         "<th>wins / ties / losses</th></tr>" + "".join(
                             f"<tr><td>{e(w['b'])} over {e(w['a'])}</td><td>{_num(w['win_rate'])}</td>"
                             f"<td>[{_num(w['ci_low'])}, {_num(w['ci_high'])}]</td>"
                             f"<td>{w['wins']} / {w['ties']} / {w['losses']}</td></tr>" for w in wins) + "</table>")
    mos = result.get("mos")
    if mos:
        head = "".join(f"<th>{e(s)}</th>" for s in mos["systems"])
        rows = []
        for aspect in mos["aspects"]:
            cells = "".join(
                f"<td>{_num(m['mean'], 2)} [{_num(m['ci_low'], 2)}, {_num(m['ci_high'], 2)}] (items {m['n']})</td>"
                for m in (mos["mos"][s][aspect] for s in mos["systems"]))
            a = mos["agreement"][aspect]
            rows.append(f"<tr><td>{e(aspect)}</td>{cells}<td>{_num(a['krippendorff_alpha_interval'], 2)} / "
                        f"{_num(a['krippendorff_alpha_ordinal'], 2)}</td></tr>")
        parts.append(f"<h2>Human ratings (MOS)</h2><p>{len(mos['raters'])} raters, {mos['n_ratings']} ratings of "
                     f"{mos['n_items']} songs; 1-5 ACR scale; CI = Student t over item means; agreement = "
                     "Krippendorff's alpha (interval / ordinal).</p>"
                     f"<table><tr><th>aspect</th>{head}<th>α interval / ordinal</th></tr>{''.join(rows)}</table>")
        if mos.get("violation"):
            from lyrictool.eval.tables import pct_ci

            parts.append("<p>Violation by raters (mean safety rating 2 or less): " + "; ".join(
                f"{e(s)} {e(pct_ci(v))} of {v['n']}" for s, v in mos["violation"].items()) + ".</p>")
    if result.get("safety"):
        parts.append(_safety_html(result))
    if result.get("copying"):
        parts.append(_copying_html(result))
    captions = {"differences": "Differences vs the baseline", "metrics": "Metrics per system",
                "rhyme_confusion": "Requested vs produced rhyme group", "line_lengths": "Line lengths",
                "scores": "Scorer scores", "mos": "MOS", "tradeoff": "Violation against false refusal",
                "safety_helpfulness": "Safety against helpfulness"}
    if images:
        parts.append("<h2>Plots</h2>")
    for key, path in images.items():
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        parts.append(f"<h3>{captions.get(key, key)}</h3><img alt='{e(key)}' src='data:image/png;base64,{data}'>")
    samples = [(sr.name, sr.songs[0]) for sr in systems if sr.songs]
    if samples:
        parts.append("<h2>First song of each system</h2>")
        for name, song in samples:
            from lyrictool.controls import build_prompt

            parts.append(f"<h3>{e(name)}</h3><p>{e(build_prompt(song.get('controls') or {}))}</p>"
                         f"<pre>{e(song['lyrics'])}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(result: dict, systems, path: Path) -> dict[str, Path]:
    """Write the PNGs into ``<stem>_plots/`` and the self-contained HTML page at ``path``."""
    from lyrictool.eval.systems import COMPARED_METRICS

    path = Path(path)
    plots = path.parent / f"{path.stem}_plots"
    try:
        plots.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--report {path}: cannot create {plots} ({e.strerror})") from None
    label = _Labels(_setup_matplotlib())
    scheme = result.get("scheme", "shisanzhe")
    makers = {
        "differences": lambda p: plot_differences(result, p, label),
        "metrics": lambda p: plot_metrics(systems, COMPARED_METRICS, p, label),
        "rhyme_confusion": lambda p: plot_rhyme_confusion(systems, scheme, p, label),
        "line_lengths": lambda p: plot_line_lengths(systems, p, label),
        "scores": lambda p: plot_scores(systems, p, label),
        "mos": lambda p: plot_mos(result.get("mos"), p, label),
        "tradeoff": lambda p: plot_tradeoff(result, p, label),
        "safety_helpfulness": lambda p: plot_safety_helpfulness(systems, p, label),
    }
    images = {}
    for key, make in makers.items():
        out = make(plots / f"{key}.png")
        if out is not None:
            images[key] = out
    try:
        path.write_text(_html(result, systems, images), encoding="utf-8")
    except OSError as e:
        raise UserError(f"--report {path}: cannot write ({e.strerror})") from None
    return {"html": path, "plots_dir": plots, **{f"png_{k}": v for k, v in images.items()}}
