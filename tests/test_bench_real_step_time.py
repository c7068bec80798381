"""bench/real_step_time.py --quick: one arm through lyrictool's own SFT path times real optimizer steps on 64-token
rows, beside `import torch`, and writes what it measured."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SONGCI = REPO.parent / "shared" / "data" / "chinese-poetry" / "songci"


@pytest.mark.skipif(not SONGCI.is_dir(), reason="needs the chinese-poetry corpus at ../shared/data")
def test_quick_mode_times_lora_steps_beside_import_torch(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "real_step_time.py"), "--quick", "--rows", "4",
                           "--out", str(tmp_path)], check=False, capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"^\| tiny-fp32 \| 151,646 \| [\d.]+ \| [\d.]+ \|", proc.stdout, re.MULTILINE), proc.stdout
    res = json.loads((tmp_path / "results.json").read_text())
    arm = res["arms"]["tiny-fp32"]
    assert len(arm["step_s"]) == 2 and all(t > 0 for t in arm["step_s"])
    assert arm["row_tokens"] == [64] * 4  # every timed row is cut to exactly 64 tokens
    assert len(res["import_torch_s"]) == 2 and arm["ratio_to_import"] == pytest.approx(
        arm["median_step_s"] / res["import_torch_median_s"])
