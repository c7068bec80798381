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


def test_toy_run_with_a_forced_sdpa_backend_records_it(bench, tmp_path):
    out = tmp_path / "gpu.json"
    summary = bench.main(["--toy", "--attn", "eager", "sdpa:math", "--layouts", "none", "flat", "--seconds", "1",
                          "--output", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(summary))
    got = {(r["attention"], r["layout"]) for r in summary["results"]}
    assert got == {("eager", "none"), ("eager", "flat"), ("sdpa:math", "none"), ("sdpa:math", "flat")}
    for r in summary["results"]:
        assert "error" not in r, r
        assert r["steps"] >= 1 and r["tokens"] > 0 and r["tokens_per_s"] > 0 and r["tflops"] > 0
        assert r["mfu"] is None  # no peak known for a CPU
        assert r["sdpa_backends"] == (["math"] if r["attention"] == "sdpa:math" else None)
    eager_none = next(r for r in summary["results"] if r["attention"] == "eager" and r["layout"] == "none")
    assert eager_none["speedup_vs_eager_same_packing"] == 1.0
    assert summary["versions"]["torch"] and summary["versions"]["transformers"]


def test_default_configurations_are_boundary_safe(bench):
    pairs = bench.configurations(["eager", "sdpa", "flash_attention_2"], None)
    assert pairs == [("eager", "none"), ("eager", "rows"), ("sdpa", "none"), ("sdpa", "rows"), ("sdpa", "flat"),
                     ("flash_attention_2", "none"), ("flash_attention_2", "flat")]
    # FA2 over several packed rows would run plain causal attention across sequences: never run
    assert ("flash_attention_2", "rows") not in bench.configurations(["flash_attention_2"], ["rows", "flat"])


def test_real_config_is_qwen25_05b_shaped(bench):
    config = json.loads((REPO / "bench" / "configs" / "qwen2.5-0.5b.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (896, 24, 151936)
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.4 and bench.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.peak_tflops("NVIDIA H200") == bench.H200_DENSE_BF16_TFLOPS == 989.4
    # 6 N T for the matmuls + 6 L d n^2 for causal attention, per sequence
    assert bench.model_flops(100, 2, 8, [3, 4]) == 6 * 100 * 7 + 6 * 2 * 8 * (9 + 16)


def test_flat_batch_is_trl_padding_free(bench):
    import torch

    seqs = [torch.tensor([5, 6, 7]), torch.tensor([8, 9]), torch.tensor([1, 2, 3, 4])]
    b = bench.packed_batch(seqs, "flat")
    assert b["input_ids"].tolist() == [[5, 6, 7, 8, 9, 1, 2, 3, 4]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert b["cu_seq_lens_q"].tolist() == b["cu_seq_lens_k"].tolist() == [0, 3, 5, 9]
    assert b["cu_seq_lens_q"].dtype == torch.int32 and b["max_length_q"] == b["max_length_k"] == 4
    assert b["labels"].tolist() == [[-100, 6, 7, -100, 9, -100, 2, 3, 4]]  # no target across a boundary
    r = bench.packed_batch([[seqs[0], seqs[1]], [seqs[2]]], "rows")
    assert r["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert r["labels"].tolist() == [[-100, 6, 7, -100, 9], [-100, 2, 3, 4, -100]]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packing_keeps_attention_inside_each_sequence(bench, attn):
    """Each sequence's logits are the same packed with others (both layouts, as the benchmark builds them) as alone."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**{k: v for k, v in bench.TOY_CONFIG.items() if k != "architectures"})
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn).eval()
    seqs = [torch.randint(0, 1000, (n,)) for n in (7, 5, 9, 4)]
    with torch.no_grad():
        alone = [model(input_ids=s[None], use_cache=False).logits[0] for s in seqs]
        flat = bench.packed_batch(seqs, "flat")
        flat.pop("labels")
        flat_logits = model(**flat, use_cache=False).logits[0]
        rows = bench.packed_batch([seqs[:2], seqs[2:]], "rows")
        rows.pop("labels")
        row_logits = model(**rows, use_cache=False).logits
        padded = bench.packed_batch(seqs, "flat", pad_to=32)  # one fixed shape, as flex_attention runs
        assert padded["input_ids"].shape == (1, 32) and (padded["labels"][0, 25:] == -100).all()
        padded.pop("labels")
        padded_logits = model(**padded, use_cache=False).logits[0]
    start = 0
    for s, ref in zip(seqs, alone, strict=True):
        torch.testing.assert_close(flat_logits[start:start + len(s)], ref, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(padded_logits[start:start + len(s)], ref, atol=1e-4, rtol=1e-4)
        start += len(s)
    torch.testing.assert_close(row_logits[0, :7], alone[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(row_logits[0, 7:12], alone[1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(row_logits[1, 9:13], alone[3], atol=1e-4, rtol=1e-4)
    # and the check can fail: without the restarting positions the second sequence sees the first
    with torch.no_grad():
        crossed = model(input_ids=flat["input_ids"], use_cache=False).logits[0, 7:12]
    assert not torch.allclose(crossed, alone[1], atol=1e-3)


def test_batching_helpers(bench):
    lengths = bench.sequence_lengths(1000, 2048, seed=0)
    assert min(lengths) >= 128 and max(lengths) <= 2048
    rows = next(bench.packed_rows(lengths, 4, 2048))
    assert len(rows) == 4 and all(sum(r) <= 2048 for r in rows)
    chunk, width = next(bench.padded_batches(lengths, 8))
    assert len(chunk) == 8 and width == max(chunk)
