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


def test_vllm_backend_passes_the_same_explicit_sampling(monkeypatch):
    """vLLM gets every knob spelled out too (no generation_config defaults, no repetition penalty)."""
    from lyrictool.generation import sampling_kwargs
    from lyrictool.serve.backends import GenRow, VLLMBackend

    seen = []

    class SamplingParams:
        def __init__(self, **kw):
            seen.append(kw)

    class Output:
        text, token_ids, finish_reason = "月光", [1, 2], "stop"

    fake = types.ModuleType("vllm")
    fake.SamplingParams = SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", fake)
    backend = VLLMBackend.__new__(VLLMBackend)
    backend.lora_request = None  # a merged model: no adapter request
    backend.llm = types.SimpleNamespace(generate=lambda prompts, params, use_tqdm, lora_request: [
        types.SimpleNamespace(outputs=[Output()]) for _ in prompts])
    backend.generate([GenRow("p", 7), GenRow("q", 9)], temperature=0.7, top_p=0.9)
    hf = sampling_kwargs(0.7, 0.9)
    for kw, limit in zip(seen, (7, 9)):
        assert kw["max_tokens"] == limit
        assert (kw["temperature"], kw["top_p"], kw["min_p"], kw["repetition_penalty"]) == (
            hf["temperature"], hf["top_p"], hf["min_p"], hf["repetition_penalty"]) == (0.7, 0.9, 0.0, 1.0)
        assert kw["top_k"] == -1 and hf["top_k"] == 0  # each library's "no top-k"
        assert kw["presence_penalty"] == kw["frequency_penalty"] == 0.0
