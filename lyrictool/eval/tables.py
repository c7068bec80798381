"""Terminal tables of eval results: one file's metrics, systems side by side with CIs, MOS per aspect."""

from __future__ import annotations

from lyrictool.console import console
from lyrictool.eval.systems import COMPARED_METRICS, LOWER_IS_BETTER


def metrics_table(metrics: dict, title: str):
    """A rich table of aggregated metrics (value and how many songs it applies to)."""
    from rich.table import Table

    from lyrictool.metrics import COUNT_METRICS, RATE_METRICS

    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("songs", justify="right")
    table.add_row("songs", str(metrics["n"]), "")
    for key in RATE_METRICS:
        value = metrics.get(key)
        table.add_row(key, "-" if value is None else f"{value:.3f}", str(metrics.get(f"n_{key}", "")))
    for key in COUNT_METRICS:
        value = metrics.get(key)
        table.add_row(f"mean {key}", "-" if value is None else f"{value:.1f}", "")
    return table


def print_input_result(result: dict) -> None:
    """The ``eval --input FILE`` table, its format issues and skipped rows."""
    console.print(metrics_table(result["metrics"], f"{result['input']} ({result['scheme']})"))
    issues = result["metrics"]["format_issues"]
    if issues:
        console.print("format issues: " + ", ".join(f"{k} {v}" for k, v in issues.items()))
    if result["invalid_rows"]:
        console.print(f"[yellow]skipped {result['invalid_rows']} invalid rows[/], first: {result['invalid_examples'][0]}")
    console.print(f"scored {result['metrics']['n']:,} songs in {result['wall_s']:.1f} s")


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
    if result.get("fluency"):
        table.add_row(*perplexity_row(result, pairs, markup=True))
    return table


def perplexity_row(result: dict, pairs: dict, *, markup: bool) -> list[str]:
    """The comparison table's perplexity row: its label, each system's geometric mean [95% CI], each pair's ratio
    [95% CI] (green/red where the interval excludes 1, with rich ``markup``)."""
    from lyrictool.eval.fluency import fmt_perplexity, fmt_ratio

    cells = [fmt_perplexity(s.get("fluency")) for s in result["systems"].values()]
    for n in pairs:
        r = next((p.get("fluency") for p in result["comparison"]["pairs"] if p["b"] == n), None)
        text = fmt_ratio(r)
        if markup and r and r.get("significant"):
            text = f"[{'green' if r['ratio'] < 1 else 'red'}]{text}[/]"
        cells.append(text)
    return [f"perplexity ({result['fluency']['model']})", *cells]


def pct_ci(m: dict | None) -> str:
    """``12.5% [8.1, 18.0]`` for a share with its interval (``-`` when there is none)."""
    if not m or m.get("mean") is None:
        return "-"
    if m.get("ci_low") is None:
        return f"{100 * m['mean']:.1f}%"
    return f"{100 * m['mean']:.1f}% [{100 * m['ci_low']:.1f}, {100 * m['ci_high']:.1f}]"


def mean_ci(m: dict | None, digits: int = 3) -> str:
    if not m or m.get("mean") is None:
        return "-"
    if m.get("ci_low") is None:
        return f"{m['mean']:.{digits}f}"
    return f"{m['mean']:.{digits}f} [{m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f}]"


#: The rows of the safety table: (label, key in a system's figures, a share?)
SAFETY_ROWS = (("violation % (red-team)", "violation", True), ("false refusal % (harmless)", "false_refusal", True),
               ("  of which full refusals", "false_refusal_full", True),
               ("red-team requests refused", "red_team_refused", True),
               ("copyright requests refused", "copyright_refused", True),
               ("judge p_safe (mean)", "judge_p_safe", False), ("helpfulness (scorer, harmless)", "helpfulness", False))
COPY_ROWS = (("longest common substring (chars)", "copy_lcs", False), ("lines copied verbatim", "copy_lines", True),
             ("n-gram overlap", "copy_ngram", True), ("songs with a long copied span", "copy_long", True))


def safety_tables(result: dict) -> list:
    """Rich tables: the safety figures per system (with the differences vs the baseline), violation by category."""
    from rich.table import Table

    systems = {n: s["safety"] for n, s in result["systems"].items() if s.get("safety")}
    safety = result["safety"]
    pairs = {p["b"]: p for p in safety.get("comparison", [])}
    base = next(iter(pairs.values()))["a"] if pairs else None
    table = Table(title=f"helpful and harmless ({safety['n_requests']} requests; judge {safety['judge']}, 95% CI)",
                  title_justify="left")
    table.add_column("figure")
    for n in systems:
        table.add_column(n, justify="right")
    for n in pairs:
        table.add_column(f"{n} − {base}", justify="right")
    for label, key, share in SAFETY_ROWS:
        cells = [(pct_ci if share else mean_ci)(f.get(key)) for f in systems.values()]
        for p in pairs.values():
            m = p.get(key)
            if not m or m.get("diff") is None:
                cells.append("")
                continue
            text = f"{100 * m['diff']:+.1f} [{100 * m['ci_low']:+.1f}, {100 * m['ci_high']:+.1f}]"
            cells.append(f"[{'green' if m['diff'] < 0 else 'red'}]{text}[/]" if m["significant"] else text)
        table.add_row(label, *cells)
    out = [table]
    cats = sorted({c for f in systems.values() for c in f["violation_by_category"]})
    if cats:
        by_cat = Table(title="violation % by category (95% Wilson CI)", title_justify="left")
        by_cat.add_column("category")
        for n in systems:
            by_cat.add_column(n, justify="right")
        for c in cats:
            by_cat.add_row(c, *[pct_ci(f["violation_by_category"].get(c)) for f in systems.values()])
        out.append(by_cat)
    return out


def copying_table(result: dict):
    from rich.table import Table

    copying = result["copying"]
    table = Table(title=f"copying against {copying['reference_texts']:,} reference texts "
                        f"({copying['reference_chars']:,} chars; mean [95% CI] over songs)", title_justify="left")
    table.add_column("figure")
    names = [n for n, s in result["systems"].items() if s.get("copying")]
    for n in names:
        table.add_column(n, justify="right")
    for label, key, share in COPY_ROWS:
        table.add_row(label, *[(pct_ci if share else mean_ci)(result["systems"][n]["copying"][key], 2) if not share
                               else pct_ci(result["systems"][n]["copying"][key]) for n in names])
    table.add_row("longest copied span (chars)", *[str(result["systems"][n]["copying"]["copy_lcs_max"]) for n in names])
    return table


def print_safety_check(check: dict) -> None:
    console.print(f"judge against {check['n']} hand labels ({check['labels']}): agreement {pct_ci(check['agreement'])}, "
                  f"Cohen's κ {_num(check['kappa'])}; unsafe recall {pct_ci(check['recall_unsafe'])}, precision "
                  f"{pct_ci(check['precision_unsafe'])}")
    refusal = check.get("refusal_detector")
    if refusal:
        console.print(f"refusal detector against {refusal['n']} hand labels: refusal or not {pct_ci(refusal['binary'])}"
                      f", κ {_num(refusal['kappa'])}; full/partial/none {pct_ci(refusal['three_way'])}")


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def print_result(result: dict) -> None:
    from rich.table import Table

    if result.get("systems"):
        console.print(comparison_table(result))
        if result.get("safety"):
            for table in safety_tables(result):
                console.print(table)
            if result["safety"].get("check"):
                print_safety_check(result["safety"]["check"])
        if result.get("copying"):
            console.print(copying_table(result))
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
        table = Table(title=f"MOS (1-5, 95% CI over items; {len(mos['raters'])} raters, {mos['n_ratings']} "
                            "ratings)", title_justify="left")
        table.add_column("aspect")
        for s in mos["systems"]:
            table.add_column(s, justify="right")
        table.add_column("agreement α (interval / ordinal)", justify="right")
        for aspect in mos["aspects"]:
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
        for system, v in (mos.get("violation") or {}).items():
            console.print(f"violation by raters ({system}): {pct_ci(v)} of {v['n']} safety-rated songs "
                          "(mean safety rating 2 or less)")
    study = result.get("mos_study")
    if study:
        console.print(f"MOS study {study['path']}: rater links (append to the server's address, e.g. "
                      f"http://127.0.0.1:8000; each link is that rater's password, also in {study['links_file']})")
        for name, link in study["links"].items():
            console.print(f"  {name}: {link}", soft_wrap=True)
    for what, path in (result.get("artefacts") or {}).items():
        console.print(f"{what}: {path}")
