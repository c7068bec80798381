"""What both sampling backends share (re-exported by :mod:`lyrictool.generation`, whose docstring describes the
interface): the sampling knobs stated in each library's terms, the sample record, per-prompt seeds, stop ids, the
chat template and the prompt's token ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BACKENDS = ("transformers", "vllm")

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
    raw: str           # exactly what the model wrote (hints included; special tokens removed)
    new_tokens: int    # tokens generated (up to and including the stop token)
    finish_reason: str = "stop"                                 # "stop" (a stop token) or "length"
    token_ids: list[int] = field(default_factory=list)          # the generated ids, the stop token included
    logprobs: list[dict[int, float]] | None = None              # per token, when asked for (logprobs=k)


def prompt_seed(seed: int | None, index: int, n: int) -> int | None:
    """The seed of the prompt at overall position ``index`` when each prompt draws ``n`` samples."""
    return None if seed is None else seed + index * n


def stop_token_ids(model, tokenizer) -> list[int]:
    """The tokenizer's eos, then any other end token the checkpoint's generation_config names (Qwen2.5-Instruct:
    ``<|im_end|>`` and ``<|endoftext|>``).  ``model``: anything with a ``generation_config`` (or None)."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for i in [extra] if isinstance(extra, int) else list(extra or []):
        if i not in ids:
            ids.append(int(i))
    return ids


def chat_prompt(tokenizer, user_text: str) -> str:
    """The model-ready prompt string for one user turn (the model's chat template, or plain text without one)."""
    return chat_text(tokenizer, [{"role": "user", "content": user_text}])


def chat_text(tokenizer, messages: list[dict]) -> str:
    """The model-ready prompt string for a conversation, ending where the assistant's answer starts."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "\n\n".join(m["content"] for m in messages) + "\n\n"


def prompt_token_ids(tokenizer, text: str) -> list[int]:
    """The token ids of a model-ready prompt string, with exactly one ``<bos>`` at the start when the model has one.

    The text is tokenised without special tokens, so a chat template that already writes the bos (Gemma's,
    Llama 3's) does not get a second one; then the bos is put in front when the tokenizer adds one
    (``add_bos_token``) and the text did not start with it.  A tokenizer without a bos (Qwen) gets none.
    """
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and getattr(tokenizer, "add_bos_token", False) and (not ids or ids[0] != bos):
        ids.insert(0, bos)
    return ids
