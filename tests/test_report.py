"""The eval report: every plot renders, the HTML page is self-contained and says which system is better."""

from __future__ import annotations

import json
import re

from conftest import REPO

from lyrictool.eval.compare import compare_systems
from lyrictool.eval.mos import mos_summary
from lyrictool.eval.report import line_length_errors, rhyme_confusion, write_report
from lyrictool.eval.systems import COMPARED_METRICS, SystemResult, score_songs

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _systems():
    from lyrictool.controls import derive_controls

    rows = [json.loads(x) for x in (REPO / "lyrictool/data/demo/songs.jsonl").read_text(encoding="utf-8")
            .splitlines()[:30]]
    good, bad = [], []
    for i, r in enumerate(rows):
        controls = {**r["controls"], **derive_controls(r["lyrics"], ["structure", "line_lengths"])}
        good.append({"id": r["id"], "controls": controls, "lyrics": r["lyrics"], "score": 1.0 + i % 3})
        bad.append({"id": r["id"], "controls": controls, "lyrics": rows[(i + 7) % len(rows)]["lyrics"],
                    "score": -1.0 + i % 2})
    systems = [SystemResult("base", "a.jsonl", bad), SystemResult("最终", "b.jsonl", good)]
    score_songs(systems, "shisanzhe", None)
    return systems


def test_report_renders_every_plot_and_a_self_contained_page(tmp_path):
    systems = _systems()
    scores = {sr.name: [s["score"] for s in sr.songs] for sr in systems}
    result = {"scheme": "shisanzhe", "systems": {sr.name: {"source": sr.source, "n": len(sr.songs),
                                                           "metrics": sr.metrics, "scorer": None, "knowledge": None,
                                                           "invalid_rows": 0} for sr in systems},
              "comparison": compare_systems({sr.name: [s["metrics"] for s in sr.songs] for sr in systems},
                                            COMPARED_METRICS, scores=scores, resamples=300)}
    ratings = [{"rater": r, "item": f"i{k}", "system": sys_, "prompt_id": str(k),
                "scores": {"overall": base + (k + j) % 2, "language": base}}
               for j, r in enumerate(("ann", "bo")) for k, (sys_, base) in enumerate([("base", 2), ("最终", 4)] * 3)]
    result["mos"] = mos_summary(ratings)
    paths = write_report(result, systems, tmp_path / "report.html")
    for key in ("differences", "metrics", "rhyme_confusion", "line_lengths", "scores", "mos"):
        png = paths[f"png_{key}"]
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, key  # a real picture, not an empty canvas
    page = paths["html"].read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 6
    assert not re.search(r"""(src|href)=['"](?!data:)""", page)  # nothing to fetch: one file tells it all
    assert "<b>最终</b> vs <b>base</b>: significantly better on rhyme_accuracy" in page
    assert "Human ratings (MOS)" in page and "Scorer win rates" in page


def test_report_parts_compute_the_right_counts():
    songs = [{"controls": {"rhyme": "江阳", "line_lengths": [7, 7]}, "lyrics": "月光洒满小村庄\n晚风吹过稻花"}]
    names, cols, counts = rhyme_confusion(songs, "shisanzhe")
    row = counts[names.index("江阳")]
    assert row[cols.index("江阳")] == 1 and row[cols.index("发花")] == 1 and sum(map(sum, counts)) == 2
    assert line_length_errors(songs) == ([0, -1], True)
    assert line_length_errors([{"controls": {}, "lyrics": "一二三\n四五"}]) == ([3, 2], False)


def test_report_without_comparison_still_renders(tmp_path):
    systems = _systems()[:1]
    result = {"scheme": "shisanzhe", "systems": {"base": {"source": "a", "n": 30, "metrics": systems[0].metrics,
                                                          "scorer": None, "knowledge": None, "invalid_rows": 0}}}
    paths = write_report(result, systems, tmp_path / "one.html")
    assert "png_differences" not in paths and paths["png_metrics"].is_file()
    assert "<h2>Metrics</h2>" in paths["html"].read_text(encoding="utf-8")


def test_chart_labels_are_chinese_with_a_cjk_font_and_pinyin_without():
    """fonts-noto-cjk (.ci/install-browser) -> Chinese labels; no font -> pinyin, never empty boxes."""
    import shutil
    import subprocess
    import warnings

    import pytest

    from lyrictool.eval.report import _Labels, _setup_matplotlib

    assert _Labels(False)("江阳辙 rhyme") == "JiangYangZhe rhyme" and _Labels(True)("江阳") == "江阳"
    has_font = shutil.which("fc-list") and "CJK" in subprocess.run(["fc-list"], capture_output=True, text=True,
                                                                   check=False).stdout
    if not has_font:
        pytest.skip("no CJK font installed (apt-get install fonts-noto-cjk): charts use pinyin")
    assert _setup_matplotlib() is True
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.set_title("押韵 江阳")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" without a CJK font
        fig.canvas.draw()
    plt.close(fig)
