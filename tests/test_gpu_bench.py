"""bench/gpu_throughput.py at toy size on CPU: it runs, reports what it should, and packing is exact."""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gpu_throughput", REPO / "bench" / "gpu_throughput.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_toy_run_reports_every_configuration(bench, tmp_path):
    out = tmp_path / "gpu.json"
    summary = bench.main(["--toy", "--attn", "eager", "sdpa", "--seconds", "2", "--output", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(summary))
    got = {(r["attention"], r["packing"]) for r in summary["results"]}
    assert got == {("eager", False), ("eager", True), ("sdpa", False), ("sdpa", True)}
    for r in summary["results"]:
        assert r["steps"] >= 1 and r["tokens"] > 0 and r["tokens_per_s"] > 0 and r["tflops"] > 0
        assert r["mfu"] is None  # no peak known for a CPU
    assert summary["results"][0]["speedup_vs_eager_no_packing"] == 1.0


def test_real_config_is_qwen25_05b_shaped(bench):
    config = json.loads((REPO / "bench" / "configs" / "qwen2.5-0.5b.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (896, 24, 151936)
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4 and bench.peak_tflops("NVIDIA H100 PCIe") == 756.0


def test_packing_keeps_attention_inside_each_sequence(bench):
    """Two sequences packed in one row with restarting position ids give the same logits as alone."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**{k: v for k, v in bench.TOY_CONFIG.items() if k != "architectures"})
    for attn in ("eager", "sdpa"):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn).eval()
        a, b = torch.randint(0, 1000, (1, 7)), torch.randint(0, 1000, (1, 5))
        packed = torch.cat([a, b], dim=1)
        pos = torch.cat([torch.arange(7), torch.arange(5)]).unsqueeze(0)
        with torch.no_grad():
            together = model(input_ids=packed, position_ids=pos, use_cache=False).logits  # as in training
            alone = model(input_ids=b, use_cache=False).logits
        torch.testing.assert_close(together[:, 7:], alone, atol=1e-4, rtol=1e-4)


def test_batching_helpers(bench):
    lengths = bench.sequence_lengths(1000, 2048, seed=0)
    assert min(lengths) >= 128 and max(lengths) <= 2048
    rows = next(bench.packed_rows(lengths, 4, 2048))
    assert len(rows) == 4 and all(sum(r) <= 2048 for r in rows)
    chunk, width = next(bench.padded_batches(lengths, 8))
    assert len(chunk) == 8 and width == max(chunk)
