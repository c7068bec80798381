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
    return table


def print_result(result: dict) -> None:
    from rich.table import Table

    if result.get("systems"):
        console.print(comparison_table(result))
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
        from lyrictool.eval.mos import ASPECTS

        table = Table(title=f"MOS (1-5, 95% CI over items; {len(mos['raters'])} raters, {mos['n_ratings']} "
                            "ratings)", title_justify="left")
        table.add_column("aspect")
        for s in mos["systems"]:
            table.add_column(s, justify="right")
        table.add_column("agreement α (interval / ordinal)", justify="right")
        for aspect in ASPECTS:
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
    study = result.get("mos_study")
    if study:
        console.print(f"MOS study {study['path']}: rater links (append to the server's address, e.g. "
                      f"http://127.0.0.1:8000; each link is that rater's password, also in {study['links_file']})")
        for name, link in study["links"].items():
            console.print(f"  {name}: {link}", soft_wrap=True)
    for what, path in (result.get("artefacts") or {}).items():
        console.print(f"{what}: {path}")
