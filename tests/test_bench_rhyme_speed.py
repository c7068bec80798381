"""bench/rhyme_speed.py --quick: the batch and per-line measurements run, agree with whole-line pypinyin on every
line, and report five per-line ratios whose median is the one printed."""

import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SONGCI = REPO.parent / "shared" / "data" / "chinese-poetry" / "songci"


@pytest.mark.skipif(not SONGCI.is_dir(), reason="needs the chinese-poetry corpus at ../shared/data")
def test_quick_mode_times_the_per_line_api_five_times():
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "rhyme_speed.py"), "--quick"],
                          check=False, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert re.search(r"same group on all [\d,]+ lines; same syllable too", out)
    runs = [float(x) for x in re.findall(r"^  run \d: .* rhyme_group [\d.]+ s .*: ([\d.]+)x$", out, re.MULTILINE)]
    assert len(runs) == 5 and all(r > 0 for r in runs)
    median = float(re.search(r"per-line median ratio \(naive time / rhyme_group time\): ([\d.]+)x", out).group(1))
    assert median == pytest.approx(statistics.median(runs), abs=0.051)
    assert "same group as line_groups and the whole-line baseline on all 6,000 lines" in out
    assert "load average" in out
