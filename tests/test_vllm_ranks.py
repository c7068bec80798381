"""`lyrictool eval` with backend: vllm under torchrun: each rank its own engine (its own cores on CPU), its own part
file, merged by the main process; per-prompt seeds make the songs those of one process (`make test-vllm`)."""

from __future__ import annotations

import sys

import pytest
from test_multiproc import launch_eval

pytestmark = [pytest.mark.vllm, pytest.mark.multiproc]

VLLM = ("generation.backend=vllm", "generation.temperature=0.9",
        "generation.vllm={kv_cache_gib: 0.25, max_model_len: 512, enforce_eager: true}")


def test_eval_on_vllm_in_two_processes_equals_one(tmp_path):
    two = launch_eval(tmp_path / "two", 6, *VLLM, python=sys.executable, nproc=2)
    one = launch_eval(tmp_path / "one", 6, *VLLM, python=sys.executable, nproc=1)
    assert [r["id"] for r in two["rows"]] == [r["id"] for r in one["rows"]]
    assert [r["lyrics"] for r in two["rows"]] == [r["lyrics"] for r in one["rows"]]
    assert len({r["lyrics"] for r in one["rows"]}) > 1  # sampled text, not one repeated string
    for rank in (0, 1):  # both ranks sampled (each wrote its own part)
        assert any(p.parent.name == "parts" and p.name.endswith(f".rank{rank}.jsonl") for p in two["writes"][rank])
