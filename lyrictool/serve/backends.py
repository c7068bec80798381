"""Generation backends behind one interface: transformers (default, CPU or GPU) and vLLM (optional extra).

A backend turns a batch of rows (model-ready prompt, token limit, text callback) into raw completions.  Only the
batching worker thread calls :meth:`generate`, so a backend needs no locking.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger("lyrictool")

# on_text(delta) is called with raw generated text as it appears; returning True asks the backend to stop the row.
TextCallback = Callable[[str], bool]


@dataclass
class GenRow:
    """One sequence to generate."""

    prompt: str                       # model-ready (chat template applied)
    max_tokens: int                   # new-token limit of this row
    on_text: TextCallback | None = None


@dataclass
class GenResult:
    raw: str                          # what the model wrote (special tokens removed, hints still in)
    new_tokens: int                   # tokens generated, EOS included
    finish_reason: str                # "stop" (EOS or a stop request) or "length"


class Backend(Protocol):
    max_context: int                  # prompt + completion tokens the model can attend to

    def count_tokens(self, text: str) -> int: ...

    def chat_prompt(self, messages: list[dict]) -> str: ...

    def generate(self, rows: list[GenRow], *, temperature: float, top_p: float) -> list[GenResult]: ...


@dataclass
class _RowState:
    ids: list[int] = field(default_factory=list)
    prefix: int = 0                   # incremental detokenisation window (the TGI / vLLM scheme)
    read: int = 0
    done: bool = False
    eos: bool = False


class _RowStreamer:
    """A ``transformers`` streamer for a whole batch: per row, detokenise incrementally and call ``on_text``.

    It also records which rows ended with EOS (finish_reason) and which asked to stop (read by :class:`_RowStop`).
    """

    def __init__(self, tokenizer, rows: list[GenRow], stop_ids: list[int] | None = None):
        self.tokenizer = tokenizer
        self.rows = rows
        self.state = [_RowState() for _ in rows]
        self.stop_ids = set(stop_ids if stop_ids is not None else [tokenizer.eos_token_id])
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt ids
            self._prompt_seen = True
            return
        for i, token in enumerate(value.tolist()):
            st = self.state[i]
            if st.done:
                continue
            if token in self.stop_ids:
                st.done = st.eos = True
                continue
            st.ids.append(token)
            if len(st.ids) >= self.rows[i].max_tokens:
                st.done = True
            callback = self.rows[i].on_text
            if callback is None:
                continue
            delta = self._delta(st)
            if delta and callback(delta):
                st.done = st.eos = True  # a stop string: the row ends as if by EOS

    def _delta(self, st: _RowState) -> str:
        decode = self.tokenizer.decode
        before = decode(st.ids[st.prefix:st.read], skip_special_tokens=True)
        after = decode(st.ids[st.prefix:], skip_special_tokens=True)
        if len(after) > len(before) and not after.endswith("\ufffd"):  # never emit half a UTF-8 character
            st.prefix, st.read = st.read, len(st.ids)
            return after[len(before):]
        return ""

    def end(self) -> None:
        pass


def _row_stop_criteria(streamer: _RowStreamer):
    """Stop each row at its own limit or stop request (a batch mixes requests with different max_tokens)."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _RowStop(StoppingCriteria):
        def __init__(self):
            self.limits = [row.max_tokens for row in streamer.rows]
            self.steps = 0

        def __call__(self, input_ids, scores, **kwargs):
            self.steps += 1  # called once per generated token, before the streamer sees that token
            done = [st.done or self.steps >= limit for st, limit in zip(streamer.state, self.limits)]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_RowStop()])


class TransformersBackend:
    """``model.generate`` over left-padded batches, through :func:`lyrictool.generation.generate_texts`."""

    def __init__(self, model, tokenizer):
        import copy

        self.model = model
        self.tokenizer = tokenizer  # the worker thread's: generation and detokenisation
        # Request handlers (chat template, token counts) use their own copy: a fast tokenizer keeps its padding
        # settings on the shared Rust object, so an unpadded call from another thread can strip the padding off a
        # batch being encoded for generate() (seen under load: "expected sequence of length 72 at dim 1 (got 28)").
        self._request_tokenizer = copy.deepcopy(tokenizer)
        self.max_context = int(getattr(model.config, "max_position_embeddings", 0) or 4096)

    @classmethod
    def load(cls, spec) -> TransformersBackend:
        from lyrictool.modeling import load_model

        loaded = load_model(spec, for_training=False)  # on the GPU when there is one, eval mode
        return cls(loaded.model, loaded.tokenizer)

    def count_tokens(self, text: str) -> int:
        from lyrictool.generation import prompt_token_ids

        return len(prompt_token_ids(self._request_tokenizer, text))

    def chat_prompt(self, messages: list[dict]) -> str:
        from lyrictool.generation import chat_text

        return chat_text(self._request_tokenizer, messages)

    def generate(self, rows: list[GenRow], *, temperature: float, top_p: float) -> list[GenResult]:
        from lyrictool.generation import generate_texts, stop_token_ids

        streamer = _RowStreamer(self.tokenizer, rows, stop_token_ids(self.model, self.tokenizer))
        samples = generate_texts(
            self.model, self.tokenizer, [r.prompt for r in rows], n=1,
            max_new_tokens=max(r.max_tokens for r in rows), temperature=temperature, top_p=top_p,
            batch_size=len(rows),
            generate_kwargs={"streamer": streamer, "stopping_criteria": _row_stop_criteria(streamer)},
        )
        out = []
        for row, st, (sample,) in zip(rows, streamer.state, samples):
            out.append(GenResult(raw=sample.raw, new_tokens=sample.new_tokens,
                                 finish_reason="stop" if st.eos else "length"))
        return out


class VLLMBackend:
    """vLLM's offline engine (:class:`lyrictool.generation.vllm_engine.VLLMSampler`): the same token ids, sampling
    knobs, stop ids and seeds as eval and rejection sampling.  Imported only when the recipe asks for it; streams
    each row at its end."""

    def __init__(self, recipe):
        import copy

        from lyrictool.generation.vllm_engine import VLLMSampler

        self.sampler = VLLMSampler(recipe.model, recipe.sampling.vllm, seed=recipe.seed)
        self.tokenizer = copy.deepcopy(self.sampler.tokenizer)  # request threads' own (see TransformersBackend)
        self.max_context = self.sampler.max_context

    def count_tokens(self, text: str) -> int:
        from lyrictool.generation import prompt_token_ids

        return len(prompt_token_ids(self.tokenizer, text))

    def chat_prompt(self, messages: list[dict]) -> str:
        from lyrictool.generation import chat_text

        return chat_text(self.tokenizer, messages)

    def generate(self, rows: list[GenRow], *, temperature: float, top_p: float) -> list[GenResult]:
        from vllm.inputs import TokensPrompt

        from lyrictool.generation import prompt_token_ids

        s = self.sampler
        params = [s.params(n=1, max_new_tokens=r.max_tokens, temperature=temperature, top_p=top_p, seed=None)
                  for r in rows]
        inputs = [TokensPrompt(prompt_token_ids=prompt_token_ids(s.tokenizer, r.prompt)) for r in rows]
        outs = s.llm.generate(inputs, params, use_tqdm=False, lora_request=s.lora_request)
        results = []
        for row, out in zip(rows, outs):
            completion = out.outputs[0]
            text = s.tokenizer.decode(list(completion.token_ids), skip_special_tokens=True)
            if row.on_text is not None:
                row.on_text(text)
            results.append(GenResult(raw=text, new_tokens=len(completion.token_ids),
                                     finish_reason="length" if completion.finish_reason == "length" else "stop"))
        return results


def load_backend(recipe) -> Backend:
    """The backend the recipe names, with its model loaded."""
    if recipe.sampling.backend == "vllm":
        return VLLMBackend(recipe)
    if recipe.cpu_threads is not None:
        import torch

        torch.set_num_threads(recipe.cpu_threads)
    return TransformersBackend.load(recipe.model)
