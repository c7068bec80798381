"""Batched sampling used by eval, rejection sampling, end-of-training samples and serve.

Prompts are built by :func:`lyrictool.controls.build_prompt` and wrapped in the model's chat template; a batch
of prompts is left-padded and sampled in one ``generate`` call with the KV cache, ``n`` samples per prompt
(``num_return_sequences``).  Phonetic hints (and any malformed hint residue) are always stripped from what comes back.

Sampling is exactly the recipe's: ``generate`` would otherwise fill every setting we leave unset from the checkpoint's
generation_config (Qwen2.5-Instruct's adds top_k 20 and repetition_penalty 1.05, and a repetition penalty works
against rhymes and refrains), while vLLM's ``SamplingParams`` do not.  :func:`sampling_kwargs` and
:func:`vllm_sampling_kwargs` state every knob, so eval, rejection sampling and serve sample identically on both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lyrictool.controls import Controls, build_prompt

# Every setting ``generate`` takes from the checkpoint's generation_config when not given, at its neutral value:
# logits processors that act in greedy decoding too, and the warpers that act only when sampling.
NEUTRAL_PROCESSORS: dict[str, Any] = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "num_beams": 1}
NEUTRAL_WARPERS: dict[str, Any] = {"top_k": 0, "min_p": 0.0, "typical_p": 1.0, "epsilon_cutoff": 0.0,
                                   "eta_cutoff": 0.0}


def sampling_kwargs(temperature: float, top_p: float) -> dict[str, Any]:
    """``model.generate`` kwargs for the recipe's sampling and nothing else (temperature 0: greedy)."""
    if temperature > 0:
        return {**NEUTRAL_PROCESSORS, **NEUTRAL_WARPERS, "do_sample": True, "temperature": temperature,
                "top_p": top_p}
    return {**NEUTRAL_PROCESSORS, "do_sample": False}


def vllm_sampling_kwargs(temperature: float, top_p: float, max_tokens: int) -> dict[str, Any]:
    """The same sampling as :func:`sampling_kwargs`, as vLLM ``SamplingParams`` arguments."""
    return {"temperature": temperature, "top_p": top_p if temperature > 0 else 1.0, "top_k": -1, "min_p": 0.0,
            "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0, "max_tokens": max_tokens}


@dataclass
class Sample:
    text: str          # lyrics, hints stripped
    raw: str           # exactly what the model wrote (hints included)
    new_tokens: int    # tokens generated (up to and including EOS)


def stop_token_ids(model, tokenizer) -> list[int]:
    """The tokenizer's eos, then any other end token the checkpoint's generation_config names (Qwen2.5-Instruct:
    ``<|im_end|>`` and ``<|endoftext|>``), as vLLM stops on them too."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for i in [extra] if isinstance(extra, int) else list(extra or []):
        if i not in ids:
            ids.append(int(i))
    return ids


def chat_prompt(tokenizer, user_text: str) -> str:
    """The model-ready prompt string for one user turn (the model's chat template, or plain text without one)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                             add_generation_prompt=True)
    return user_text + "\n\n"


def generate_texts(model, tokenizer, prompts: Sequence[str], *, n: int = 1, max_new_tokens: int = 160,
                   temperature: float = 0.8, top_p: float = 0.95, batch_size: int = 16,
                   seed: int | None = None, generate_kwargs: dict[str, Any] | None = None) -> list[list[Sample]]:
    """Sample ``n`` completions for each model-ready prompt string, ``batch_size`` prompts per forward pass.

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
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "num_return_sequences": n,
                                          "pad_token_id": tokenizer.pad_token_id, "eos_token_id": stops,
                                          "use_cache": True}
            gen_kwargs.update(sampling_kwargs(temperature, top_p))
            gen_kwargs.update(generate_kwargs or {})
            with torch.inference_mode():
                seqs = model.generate(**enc, **gen_kwargs)
            new = seqs[:, enc["input_ids"].shape[1]:]
            for i in range(len(chunk)):
                samples = []
                for j in range(n):
                    ids = new[i * n + j]
                    keep = ids != tokenizer.pad_token_id
                    ends = torch.isin(ids, stop_ids).nonzero()
                    if len(ends):  # up to and including the first end token (which may be the pad token)
                        keep[int(ends[0]):] = False
                        keep[int(ends[0])] = True
                    raw = tokenizer.decode(ids[keep], skip_special_tokens=True)
                    samples.append(Sample(text=strip_generated_hints(raw).strip(), raw=raw, new_tokens=int(keep.sum())))
                out.append(samples)
    finally:
        tokenizer.padding_side = old_side
        if was_training:
            model.train()
    return out


def generate_lyrics(model, tokenizer, controls: Sequence[Controls | dict | None], *, n: int = 1,
                    max_new_tokens: int = 160, temperature: float = 0.8, top_p: float = 0.95,
                    batch_size: int = 16, seed: int | None = None) -> list[list[Sample]]:
    """Lyrics for each controls request (``n`` samples each), prompted exactly as in training."""
    prompts = [chat_prompt(tokenizer, build_prompt(c)) for c in controls]
    return generate_texts(model, tokenizer, prompts, n=n, max_new_tokens=max_new_tokens, temperature=temperature,
                          top_p=top_p, batch_size=batch_size, seed=seed)
