"""lyrictool.distributed: the steps a sharded model needs (gather for generation, full state dict, LoRA merge).

The ``fsdp`` tests run tests/fsdp_worker.py under ``torchrun --nproc_per_node 2`` on CPU (gloo), with tiny Llama
models sharded per layer by torch's FSDP2 ``fully_shard``; select them with ``-k fsdp``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

pytestmark = pytest.mark.multiproc


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO / "tests" / "fsdp_worker.py"), str(out)],
                          env=env, capture_output=True, text=True, timeout=400, check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    return out, ranks


def test_fsdp_model_is_really_sharded(fsdp_run):
    _, ranks = fsdp_run
    for r in ranks:
        assert r["world_size"] == 2 and r["sharding"] == "fsdp2" and r["lora_sharding"] == "fsdp2"
        assert r["local_shard_shape"] == [48, 32]      # each rank holds half of the 96-row embedding
        assert r["resharded_shape"] == [48, 32]        # ... and again after full_params() is left


def test_fsdp_full_params_gathers_for_generation(fsdp_run):
    _, (r0, r1) = fsdp_run
    assert r0["gathered_shape"] == r1["gathered_shape"] == [96, 32]
    # the gathered model is the same model as one trained the same step without sharding
    assert r0["logits_vs_reference"] < 1e-4 and r1["logits_vs_reference"] < 1e-4
    assert r0["all_ranks_generate"] == r1["all_ranks_generate"] == r0["reference_generate"]
    assert r0["main_only_generate"] == r0["reference_generate"]   # and the main rank alone can generate
    assert "main_only_generate" not in r1


def test_fsdp_full_state_dict_on_main_only(fsdp_run):
    out, (r0, r1) = fsdp_run
    assert r0["state_dict_keys"] > 0 and r1["state_dict_keys"] == 0
    assert r0["load_missing"] == [] and r0["load_unexpected"] == []
    assert r0["state_dict_vs_reference"] < 1e-5
    assert r0["reloaded_generate"] == r0["reference_generate"]
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(out / "full")   # a normal Hugging Face folder
    assert saved.model.embed_tokens.weight.shape == (96, 32)


def test_fsdp_lora_merge_from_sharded_model(fsdp_run):
    _, (r0, r1) = fsdp_run
    assert r0["merged_type"] == "LlamaForCausalLM" and r0["merged_has_lora"] is False
    assert r1["merged_is_none"] is True            # merged on the main process only
    assert torch.allclose(torch.tensor(r0["merged_logits"]), torch.tensor(r0["lora_logits"]), atol=1e-5)
    # the adapter did change the model (the merge is not just the base)
    assert r0["lora_loss_after_merge"] < r0["lora_loss"]
    assert r0["lora_loss_after_merge"] == pytest.approx(r1["lora_loss_after_merge"])  # still trains sharded


def test_unsharded_model_helpers_in_one_process():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from lyrictool import distributed as D

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=2, target_modules=["q_proj"],
                                                                init_lora_weights=False))
    assert D.sharding(model) == "none"
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        want = model(input_ids=ids).logits
        merged = D.merged_lora_model(model)
        assert type(merged) is LlamaForCausalLM
        assert torch.allclose(merged(input_ids=ids).logits, want, atol=1e-5)
        assert any("lora_" in k for k in model.state_dict())   # the training model keeps its adapter
    with D.full_params(model) as whole:
        assert whole is model
    D.barrier()   # one process: returns at once
    assert D.gather_object({"rank": 0, "n": 3}) == [{"rank": 0, "n": 3}]   # and gathers its own object alone


def test_lora_merge_of_a_scorer_in_one_process():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from lyrictool import distributed as D

    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1, pad_token_id=0)
    torch.manual_seed(0)
    model = get_peft_model(LlamaForSequenceClassification(config),
                           LoraConfig(r=2, target_modules=["q_proj"], task_type="SEQ_CLS", init_lora_weights=False))
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        merged = D.merged_lora_model(model)
        assert type(merged) is LlamaForSequenceClassification
        assert torch.allclose(merged(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-5)
