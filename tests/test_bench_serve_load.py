"""bench/serve_load.py --quick on each backend: both phases run against a real server and the result carries
throughput, start-up and the robustness verdicts (the vLLM half under the `vllm` marker)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from serve_helpers import vllm_skip_reason

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("backend", ["transformers", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_quick_mode_runs_both_phases(backend, tmp_path):
    pytest.importorskip("fastapi")
    if backend == "vllm" and (why := vllm_skip_reason()):
        pytest.skip(why)
    out = tmp_path / "load.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "serve_load.py"), "--quick", "--backends", backend,
                           "--output", str(out)], check=False, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text(encoding="utf-8"))
    assert res["quick"] is True and res["machine"]["python_import_torch"]["wall_s"] > 0
    r = res["backends"][backend]
    assert r["batching"]["requests"] == 8 and r["batching"]["errors"] == 0 and r["batching"]["startup_s"] > 0
    assert "no_batching" not in r  # quick: one server per backend
    assert r["load"]["requests"] == 40 and r["load"]["server_errors_5xx"] == 0 and not r["load"]["problems"]
    assert r["load"]["status_counts"]["bad"] and sum(r["load"]["status_counts"]["good"].values()) == 36
    assert res["targets"] and all(res["targets"].values())
    assert f"{backend}: healthy after" in res["targets"]
