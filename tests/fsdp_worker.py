"""Run by tests/test_distributed.py under `torchrun --nproc_per_node 2` (CPU, gloo): lyrictool.distributed's
helpers on tiny Llama models sharded per layer with torch's FSDP2 ``fully_shard``.

Each rank writes ``OUT/rank<R>.json`` with what it saw; the main rank also saves the full model it gathered.
"""

from __future__ import annotations

import faulthandler
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist


def tiny_llama(seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=None)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = 0
    model.generation_config.eos_token_id = 1
    return model


def shard(model, layers):
    from torch.distributed.fsdp import fully_shard

    for layer in layers:
        fully_shard(layer)
    fully_shard(model)
    return model


def train_step(model, ids) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-2)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    opt.step()
    opt.zero_grad()
    return float(loss)


def greedy(model, ids, n=8, **kw) -> list[list[int]]:
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False,
                             min_new_tokens=n, **kw)
    return out[:, ids.shape[1]:].tolist()


def main(out: Path) -> None:
    from peft import LoraConfig, get_peft_model

    from lyrictool import distributed as D

    faulthandler.dump_traceback_later(240, exit=True)  # a hang fails the test with both ranks' stacks
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    res: dict = {"rank": rank, "world_size": dist.get_world_size()}
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]])

    # 1. full fine-tuning: a sharded model trains a step, generates whole, gathers a full state dict
    model = tiny_llama(0)
    shard(model, model.model.layers)
    res["sharding"] = D.sharding(model)
    res["local_shard_shape"] = list(model.model.embed_tokens.weight.to_local().shape)
    res["loss"] = train_step(model, ids)
    # the same step unsharded (every rank sees the same batch, so FSDP's averaged gradient is this one's)
    reference = tiny_llama(0)
    train_step(reference, ids)
    with D.full_params(model) as whole:
        res["gathered_shape"] = list(whole.model.embed_tokens.weight.shape)
        res["all_ranks_generate"] = greedy(whole, ids)
        with torch.no_grad():
            res["logits_vs_reference"] = float((whole(input_ids=ids).logits
                                                - reference(input_ids=ids).logits).abs().max())
    with D.full_params(model) as whole:
        if D.is_main_process():  # forward passes are local inside: the main rank alone may generate, once
            # transformers' own FSDP guess (synced_gpus, an all-reduce per step) is turned off
            res["main_only_generate"] = greedy(whole, ids, synced_gpus=False)
    D.barrier()
    res["resharded_shape"] = list(model.model.embed_tokens.weight.to_local().shape)
    sd = D.full_state_dict(model)
    res["state_dict_keys"] = len(sd)
    if D.is_main_process():
        plain = tiny_llama(1)  # different init: every weight must come from the gathered state dict
        missing, unexpected = plain.load_state_dict(sd, strict=False)
        res["load_missing"], res["load_unexpected"] = list(missing), list(unexpected)
        ref_sd = reference.state_dict()
        res["state_dict_vs_reference"] = max(float((sd[k] - ref_sd[k]).abs().max()) for k in sd)
        res["reference_generate"] = greedy(reference, ids)
        res["reloaded_generate"] = greedy(plain, ids)
        plain.save_pretrained(out / "full")
    D.barrier()

    # 2. LoRA on a sharded model: merged from the gathered weights on the main process only
    base = tiny_llama(2)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    shard(peft_model, peft_model.base_model.model.model.layers)
    res["lora_sharding"] = D.sharding(peft_model)
    res["lora_loss"] = train_step(peft_model, ids)
    with D.full_params(peft_model) as whole, torch.no_grad():
        res["lora_logits"] = whole(input_ids=ids).logits[:, -1, :8].tolist()
    merged = D.merged_lora_model(peft_model)
    res["merged_is_none"] = merged is None
    if merged is not None:
        res["merged_type"] = type(merged).__name__
        res["merged_has_lora"] = any("lora_" in k for k in merged.state_dict())
        with torch.no_grad():
            res["merged_logits"] = merged(input_ids=ids).logits[:, -1, :8].tolist()
    # the training model is left sharded and usable
    res["lora_loss_after_merge"] = train_step(peft_model, ids)
    (out / f"rank{rank}.json").write_text(json.dumps(res))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
