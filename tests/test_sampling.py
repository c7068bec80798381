"""Sampling is the recipe's alone (finding 11): a checkpoint's generation_config adds nothing, on either backend."""

from __future__ import annotations

import sys
import types

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PROMPTS = [{"rhyme": "江阳"}, {"topic": "夏天"}]


@pytest.fixture(scope="module")
def penalised(tmp_path_factory, tiny_model_path):
    """The tiny model twice: as built, and with Qwen2.5-Instruct-like sampling defaults in its generation_config."""
    from lyrictool.modeling import load_model
    from lyrictool.recipes import ModelSpec

    clean = load_model(ModelSpec(), for_training=False)
    folder = tmp_path_factory.mktemp("penalised")
    clean.model.save_pretrained(folder)
    clean.tokenizer.save_pretrained(folder)
    config = clean.model.generation_config
    config.update(do_sample=True, repetition_penalty=1.3, top_k=1)
    config.save_pretrained(folder)
    clean.model.generation_config = type(config)(**{**config.to_dict(), "do_sample": False, "top_k": None,
                                                    "repetition_penalty": None})
    return clean, load_model(ModelSpec(name=str(folder)), for_training=False)


def test_checkpoint_generation_config_does_not_change_sampling(penalised):
    import torch

    from lyrictool.generation import generate_lyrics

    clean, pen = penalised
    assert pen.model.generation_config.repetition_penalty == 1.3 and pen.model.generation_config.top_k == 1
    for temperature, n in ((0.0, 1), (0.8, 3)):  # greedy and sampled
        ours = generate_lyrics(pen.model, pen.tokenizer, PROMPTS, n=n, max_new_tokens=24, temperature=temperature,
                               seed=0)
        reference = generate_lyrics(clean.model, clean.tokenizer, PROMPTS, n=n, max_new_tokens=24,
                                    temperature=temperature, seed=0)
        assert [s.raw for o in ours for s in o] == [s.raw for o in reference for s in o]
    # The settings would have changed the output had generate() been left to fill them in from the checkpoint.
    enc = pen.tokenizer(pen.tokenizer.apply_chat_template([{"role": "user", "content": "写歌"}], tokenize=False,
                                                          add_generation_prompt=True), return_tensors="pt",
                        add_special_tokens=False)
    with torch.inference_mode():
        plain = pen.model.generate(**enc, max_new_tokens=24, do_sample=False, pad_token_id=pen.tokenizer.pad_token_id)
        neutral = clean.model.generate(**enc, max_new_tokens=24, do_sample=False,
                                       pad_token_id=clean.tokenizer.pad_token_id)
    assert not torch.equal(plain, neutral)


def test_vllm_backend_passes_the_same_explicit_sampling(monkeypatch, tiny_model_path):
    """vLLM gets every knob spelled out too (no generation_config defaults, no repetition penalty), the prompt as
    token ids, our stop ids, and per-prompt seeds that never overlap between a prompt's samples."""
    from lyrictool.generation import prompt_token_ids, sampling_kwargs
    from lyrictool.generation.vllm_engine import VLLMSampler
    from lyrictool.modeling import load_tokenizer

    seen, sent = [], []

    class SamplingParams:
        def __init__(self, **kw):
            seen.append(kw)

    class Output:
        index, token_ids, finish_reason, logprobs = 0, [5, 6], "stop", None

    fake = types.ModuleType("vllm")
    fake.SamplingParams = SamplingParams
    fake_inputs = types.ModuleType("vllm.inputs")
    fake_inputs.TokensPrompt = dict
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.inputs", fake_inputs)
    sampler = VLLMSampler.__new__(VLLMSampler)
    sampler.lora_request = None  # a merged model: no adapter request
    sampler.tokenizer = load_tokenizer(str(tiny_model_path))
    sampler.stop_ids = [sampler.tokenizer.eos_token_id]

    def generate(inputs, params, use_tqdm, lora_request):
        sent.extend(inputs)
        return [types.SimpleNamespace(outputs=[Output()]) for _ in inputs]

    sampler.llm = types.SimpleNamespace(generate=generate)
    sampler.sample(["p", "q"], n=3, max_new_tokens=7, temperature=0.7, top_p=0.9, seed=10, first_index=4)
    hf = sampling_kwargs(0.7, 0.9)
    assert [x["prompt_token_ids"] for x in sent] == [prompt_token_ids(sampler.tokenizer, t) for t in "pq"]
    assert [kw["seed"] for kw in seen] == [10 + 4 * 3, 10 + 5 * 3]  # vLLM: sample k gets seed + k, so no overlap
    for kw in seen:
        assert kw["max_tokens"] == 7 and kw["n"] == 3 and kw["stop_token_ids"] == sampler.stop_ids
        assert (kw["temperature"], kw["top_p"], kw["min_p"], kw["repetition_penalty"]) == (
            hf["temperature"], hf["top_p"], hf["min_p"], hf["repetition_penalty"]) == (0.7, 0.9, 0.0, 1.0)
        assert kw["top_k"] == -1 and hf["top_k"] == 0  # each library's "no top-k"
        assert kw["presence_penalty"] == kw["frequency_penalty"] == 0.0


def test_prompt_token_ids_put_exactly_one_bos_first(tiny_model_path):
    """A template that writes the bos keeps one; a tokenizer that adds it gets it once; one without a bos none."""
    from lyrictool.generation import prompt_token_ids
    from lyrictool.modeling import load_tokenizer

    tok = load_tokenizer(str(tiny_model_path))
    plain = tok("月光", add_special_tokens=False)["input_ids"]
    assert prompt_token_ids(tok, "月光") == plain  # no bos token: nothing added
    tok.add_special_tokens({"bos_token": "<|bos|>"})
    bos = tok.bos_token_id
    tok.add_bos_token = True
    assert prompt_token_ids(tok, "月光") == [bos, *plain]               # the tokenizer adds it: once
    assert prompt_token_ids(tok, "<|bos|>月光") == [bos, *plain]        # the template wrote it: not twice
    tok.add_bos_token = False
    assert prompt_token_ids(tok, "月光") == plain


def test_each_rank_engine_gets_its_own_device_or_cores(monkeypatch):
    """Under torchrun each rank's vLLM engine goes to its own GPU, or on CPU to its own share of the cores; one
    process, or a choice the user made, is left alone."""
    import os

    from lyrictool.generation.vllm_engine import engine_env, rank_placement

    two = {"LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2"}
    assert rank_placement({**two, "LOCAL_RANK": "1", "CUDA_VISIBLE_DEVICES": "4,5"}, cuda=True) == {
        "CUDA_VISIBLE_DEVICES": "5"}
    assert rank_placement({**two, "LOCAL_RANK": "0", "CUDA_VISIBLE_DEVICES": "3"}, cuda=True) == {}
    cores = sorted(os.sched_getaffinity(0))
    mine = [rank_placement({**two, "LOCAL_RANK": str(r)}, cuda=False)["VLLM_CPU_OMP_THREADS_BIND"] for r in (0, 1)]
    if len(cores) >= 2:
        assert set(mine[0].split(",")).isdisjoint(mine[1].split(","))
    assert rank_placement({"WORLD_SIZE": "1"}, cuda=False) == {}
    assert rank_placement({**two, "LOCAL_RANK": "0", "VLLM_CPU_OMP_THREADS_BIND": "0-1"}, cuda=False) == {}
    # the engine's own processes do not see the launcher's group (they form their own)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    with engine_env({"VLLM_CPU_OMP_THREADS_BIND": "1"}):
        assert "RANK" not in os.environ and "MASTER_PORT" not in os.environ
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "1"
    assert os.environ["RANK"] == "1" and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ
