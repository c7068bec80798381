"""Sampling: one interface over two backends, used by eval, rejection sampling, end-of-training samples and serve.

The interface (stable; ``lyrictool.generation.vllm_engine`` and ``lyrictool.serve`` build on it)::

    sampler = open_sampler(model_spec, engine_spec, seed=0)       # engine_spec.backend: "transformers" | "vllm"
    outs = sampler.sample(prompts, n=4, max_new_tokens=160, temperature=0.8, top_p=0.95, seed=7,
                          first_index=0, stride=1, indices=None)
    outs[i][k]: Sample(text, raw, new_tokens, finish_reason, token_ids, logprobs)
    sampler.close()

- ``prompts`` are model-ready strings (the chat template applied once, here: :func:`chat_prompt`); each backend
  turns them into token ids with :func:`prompt_token_ids` (exactly one ``<bos>`` when the model has one) and the
  vLLM backend hands those ids to the engine (``TokensPrompt``), so both see the same tokens.
- Every sampling knob is stated: temperature, top-p, and every other processor at its neutral value
  (:func:`sampling_kwargs`, :func:`vllm_sampling_kwargs`).  Nothing comes from the checkpoint's
  generation_config (``generate`` would otherwise fill unset settings from it: Qwen2.5-Instruct's adds top_k 20
  and repetition_penalty 1.05, which work against rhymes and refrains; the vLLM engine is started with
  ``generation_config="vllm"``).
- The same stop tokens (:func:`stop_token_ids`: the tokenizer's eos, then those the checkpoint names) on both;
  ``finish_reason`` is ``"stop"`` (a stop token, counted in ``new_tokens`` and ``token_ids``) or ``"length"``.
- Seeds: with ``seed`` set, prompt ``i`` of the call is prompt ``first_index + i * stride`` overall (a rank's
  strided share, a batch of a longer list) and samples with seed ``seed + (first_index + i * stride) * n``
  (:func:`prompt_seed`); vLLM gives sample ``k`` of a prompt that seed ``+ k``, so no two samples of any prompt
  share a seed, and a prompt draws the same whatever batch or rank it lands in.  ``indices`` gives each prompt's
  overall position outright (a resumed share with gaps).  ``generate`` has one random stream per call, seeded
  with ``seed +`` the first prompt's position: a prompt's samples are successive draws of it, reproducible for
  the same prompts and batch size.
- A LoRA output runs as base + adapter (vLLM ``LoRARequest``; transformers loads it through peft), or a merged
  model as it is.
- ``logprobs=k``: each ``Sample.logprobs`` is, per generated token, the top-k log-probabilities of the model's
  raw distribution (before temperature / top-p) with the chosen token's always included, as vLLM reports them.

Phonetic hints (and any malformed hint residue) are stripped from ``text``; ``raw`` is what the model wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from lyrictool.controls import Controls, build_prompt
from lyrictool.generation.core import (  # noqa: F401 - the interface's names, re-exported
    BACKENDS,
    NEUTRAL_PROCESSORS,
    NEUTRAL_WARPERS,
    Sample,
    chat_prompt,
    chat_text,
    prompt_seed,
    prompt_token_ids,
    sampling_kwargs,
    stop_token_ids,
    vllm_sampling_kwargs,
)

# ---- the interface --------------------------------------------------------------------------------------------


class Sampler(Protocol):
    """What :func:`open_sampler` returns (see the module docstring)."""

    backend: str       # "transformers" or "vllm"
    tokenizer: Any     # the model's tokenizer (for chat_prompt, prompt_token_ids, token counts)

    def sample(self, prompts: Sequence[str], *, n: int = 1, max_new_tokens: int = 160, temperature: float = 0.8,
               top_p: float = 0.95, seed: int | None = None, first_index: int = 0, stride: int = 1,
               indices: Sequence[int] | None = None, logprobs: int | None = None) -> list[list[Sample]]: ...

    def close(self) -> None: ...


class TransformersSampler:
    """``model.generate`` on a loaded model, ``batch_size`` prompts per call (:func:`generate_texts`)."""

    backend = "transformers"

    def __init__(self, model, tokenizer, *, batch_size: int = 16, rhyme_guard: bool = False):
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.rhyme_guard = rhyme_guard

    def sample(self, prompts: Sequence[str], *, n: int = 1, max_new_tokens: int = 160, temperature: float = 0.8,
               top_p: float = 0.95, seed: int | None = None, first_index: int = 0, stride: int = 1,
               indices: Sequence[int] | None = None, logprobs: int | None = None) -> list[list[Sample]]:
        return generate_texts(self.model, self.tokenizer, prompts, n=n, max_new_tokens=max_new_tokens,
                              temperature=temperature, top_p=top_p, batch_size=self.batch_size,
                              seed=None if seed is None else seed + (indices[0] if indices else first_index),
                              logprobs=logprobs, rhyme_guard=self.rhyme_guard)

    def close(self) -> None:
        self.model = None


def open_sampler(model_spec, engine=None, *, seed: int | None = 0, batch_size: int | None = None,
                 model=None, tokenizer=None) -> Sampler:
    """The sampler ``engine.backend`` names (an :class:`lyrictool.recipes.EngineSpec`; None: transformers) for
    ``model_spec`` (a :class:`lyrictool.recipes.ModelSpec`).  ``model``/``tokenizer``: an already loaded model for
    the transformers backend (training's end-of-run samples); vLLM always loads ``model_spec.name`` itself.
    ``seed`` seeds the vLLM engine (requests carry their own seeds).  ``engine.rhyme_guard`` turns on the rhyme
    guard (:mod:`lyrictool.generation.guard`) on either backend."""
    backend = getattr(engine, "backend", "transformers")
    guard = bool(getattr(engine, "rhyme_guard", False))
    if backend == "vllm":
        from lyrictool.generation.vllm_engine import VLLMSampler

        return VLLMSampler(model_spec, engine.vllm, seed=seed, rhyme_guard=guard)
    if model is None:
        from lyrictool.modeling import load_model

        loaded = load_model(model_spec, for_training=False)  # on the GPU when there is one, eval mode
        model, tokenizer = loaded.model, loaded.tokenizer
    return TransformersSampler(model, tokenizer, batch_size=batch_size or getattr(engine, "batch_size", 16),
                               rhyme_guard=guard)


# ---- the transformers backend ---------------------------------------------------------------------------------


def _top_logprobs(logits, k: int, chosen: int) -> dict[int, float]:
    import torch

    lp = torch.log_softmax(logits.float(), dim=-1)
    vals, idx = lp.topk(k)
    out = {int(i): float(v) for v, i in zip(vals, idx)}
    out.setdefault(int(chosen), float(lp[chosen]))
    return out


def generate_texts(model, tokenizer, prompts: Sequence[str], *, n: int = 1, max_new_tokens: int = 160,
                   temperature: float = 0.8, top_p: float = 0.95, batch_size: int = 16,
                   seed: int | None = None, generate_kwargs: dict[str, Any] | None = None,
                   logprobs: int | None = None, rhyme_guard: bool = False) -> list[list[Sample]]:
    """Sample ``n`` completions for each model-ready prompt string, ``batch_size`` prompts per forward pass.

    ``rhyme_guard``: hold each line's last character to the rhyme group the model's own hint names
    (:mod:`lyrictool.generation.guard`).

    ``generate_kwargs`` go to ``model.generate`` unchanged (serve passes a streamer and per-row stopping criteria).
    """
    import torch

    from lyrictool.lyrics import strip_generated_hints

    if n < 1:
        raise ValueError("n must be >= 1")
    if seed is not None:
        torch.manual_seed(seed)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out: list[list[Sample]] = []
    stops = stop_token_ids(model, tokenizer)
    stop_ids = torch.tensor(stops, device=device)
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start:start + batch_size])
            enc = tokenizer.pad({"input_ids": [prompt_token_ids(tokenizer, p) for p in chunk]}, padding=True,
                                return_tensors="pt").to(device)
            gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "num_return_sequences": n,
                                          "pad_token_id": tokenizer.pad_token_id, "eos_token_id": stops,
                                          "use_cache": True}
            if logprobs:
                gen_kwargs.update(return_dict_in_generate=True, output_logits=True)
            gen_kwargs.update(sampling_kwargs(temperature, top_p))
            if rhyme_guard:
                from transformers import LogitsProcessorList

                from lyrictool.generation.guard import HFRhymeGuard, guard_tables

                gen_kwargs["logits_processor"] = LogitsProcessorList(
                    [*(generate_kwargs or {}).get("logits_processor", []),  # the caller's first, then the guard
                     HFRhymeGuard(guard_tables(tokenizer, stops), enc["input_ids"].shape[1])])
            gen_kwargs.update({k: v for k, v in (generate_kwargs or {}).items()
                               if not (rhyme_guard and k == "logits_processor")})
            with torch.inference_mode():
                result = model.generate(**enc, **gen_kwargs)
            seqs = result.sequences if logprobs else result
            new = seqs[:, enc["input_ids"].shape[1]:]
            for i in range(len(chunk)):
                samples = []
                for j in range(n):
                    ids = new[i * n + j]
                    keep = ids != tokenizer.pad_token_id
                    ends = torch.isin(ids, stop_ids).nonzero()
                    stopped = bool(len(ends))
                    if stopped:  # up to and including the first end token (which may be the pad token)
                        keep[int(ends[0]):] = False
                        keep[int(ends[0])] = True
                    kept = ids[keep].tolist()
                    raw = tokenizer.decode(kept, skip_special_tokens=True)
                    lps = None
                    if logprobs:
                        lps = [_top_logprobs(result.logits[t][i * n + j], logprobs, tok) for t, tok in enumerate(kept)]
                    samples.append(Sample(text=strip_generated_hints(raw).strip(), raw=raw, new_tokens=len(kept),
                                          finish_reason="stop" if stopped else "length", token_ids=kept,
                                          logprobs=lps))
                out.append(samples)
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    return out


# ---- lyrics ---------------------------------------------------------------------------------------------------


def lyrics_prompts(tokenizer, controls: Sequence[Controls | dict | None]) -> list[str]:
    """The model-ready prompt of each controls request, prompted exactly as in training."""
    return [chat_prompt(tokenizer, build_prompt(c)) for c in controls]


def sample_lyrics(sampler: Sampler, controls: Sequence[Controls | dict | None], *, n: int = 1,
                  max_new_tokens: int = 160, temperature: float = 0.8, top_p: float = 0.95,
                  seed: int | None = None, first_index: int = 0, stride: int = 1,
                  indices: Sequence[int] | None = None) -> list[list[Sample]]:
    """Lyrics for each controls request (``n`` samples each) from either backend."""
    return sampler.sample(lyrics_prompts(sampler.tokenizer, controls), n=n, max_new_tokens=max_new_tokens,
                          temperature=temperature, top_p=top_p, seed=seed, first_index=first_index, stride=stride,
                          indices=indices)


def generate_lyrics(model, tokenizer, controls: Sequence[Controls | dict | None], *, n: int = 1,
                    max_new_tokens: int = 160, temperature: float = 0.8, top_p: float = 0.95,
                    batch_size: int = 16, seed: int | None = None, rhyme_guard: bool = False) -> list[list[Sample]]:
    """Lyrics for each controls request from a loaded model (the transformers backend)."""
    return sample_lyrics(TransformersSampler(model, tokenizer, batch_size=batch_size, rhyme_guard=rhyme_guard),
                         controls, n=n,
                         max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
