"""Model and tokenizer loading, shared by every command.

- Built-in models (``builtin:tiny-zh``, ``builtin:tiny-qwen``; see :mod:`lyrictool.builtin_models`): random-initialised,
  seeded, built offline and written once in Hugging Face format to a cache folder, so TRL trainers,
  ``from_pretrained`` and ``serve`` use them like any hub model.  Nothing is downloaded.
- Attention: ``auto`` picks FlashAttention-2 when ``flash_attn`` imports (a broken build falls back) and CUDA with a half dtype is in use,
  else PyTorch SDPA, else eager, and logs which and why.
- dtype, LoRA (peft) and 4/8-bit quantization (bitsandbytes, imported only when asked for).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lyrictool.builtin_models import (  # noqa: F401  (re-exported: the builtin models' old home)
    BUILTIN_CHECKS,
    BUILTIN_MODELS,
    BUILTIN_TINY,
    BUILTIN_TINY_QWEN,
    CHAT_TEMPLATE,
    CHINESE_PUNCT,
    EXTRA_CHARS,
    SPECIAL_TOKENS,
    TINY_CONFIG,
    build_tiny_model,
    build_tiny_qwen_model,
    build_tiny_qwen_tokenizer,
    build_tiny_tokenizer,
    builtin_tiny_path,
    builtin_tiny_qwen_path,
    cache_dir,
    tiny_vocab,
)
from lyrictool.checkpoints import gguf_file_of, gguf_model_path, require_gguf
from lyrictool.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from lyrictool.recipes import ModelSpec

log = logging.getLogger("lyrictool")


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def has_tokenizer(folder: Path) -> bool:
    """Whether a model folder holds a tokenizer that ``AutoTokenizer.from_pretrained`` can read."""
    return any((folder / name).exists() for name in TOKENIZER_FILES)


def resolve_model_path(name: str, *, convert: bool = True) -> str:
    """The Hugging Face folder (or hub name) for ``model.name``: a built-in model built into the cache, a GGUF file
    (or a folder holding one) converted into the cache, or a checked model folder.  ``convert=False`` (--dry-run)
    checks a built-in or GGUF name without building or converting it."""
    if name in BUILTIN_MODELS:
        if not convert:
            BUILTIN_CHECKS.get(name, lambda: None)()
            return name
        return str(BUILTIN_MODELS[name]())
    if name.startswith("builtin:"):
        raise UserError(f"model.name: unknown builtin model {name!r}; the built-in models are "
                        f"{', '.join(BUILTIN_MODELS)}")
    p = Path(name).expanduser()
    if p.exists():
        gguf = gguf_file_of(p)
        if gguf is not None:
            if not convert:
                require_gguf()
                return str(gguf)
            return str(gguf_model_path(gguf))
        if not p.is_dir():
            raise UserError(f"model.name: {name} is a file; give a Hugging Face model folder (config.json, weights, "
                            "tokenizer) or a .gguf file")
        if not (p / "config.json").exists() and not (p / "adapter_config.json").exists():
            raise UserError(f"model.name: {name} is a folder without config.json; is it a Hugging Face model?")
        if not has_tokenizer(p):
            raise UserError(f"model.name: {name} has no tokenizer ({' or '.join(TOKENIZER_FILES[:2])}); save it "
                            "next to the model with tokenizer.save_pretrained(folder)")
        return str(p)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise UserError(f"model.name: no such model folder: {name}")
    return name  # a hub name; offline machines fail in from_pretrained with its own message


# --------------------------------------------------------------------------------------------------------------
# Device, dtype, attention


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_dtype(dtype: str):
    import torch

    if dtype == "auto":
        if cuda_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype in ("bf16", "fp16") and not cuda_available():
        log.warning("dtype %s requested without CUDA; computing in it on CPU is slow", dtype)
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]


@dataclass(frozen=True)
class AttentionChoice:
    implementation: str
    reason: str


def flash_attn_problem() -> str | None:
    """None when ``flash_attn`` imports; else why not (not installed, or the import error of a broken build).

    Imported, not looked up with ``find_spec``: a flash-attn wheel built against another torch or CUDA is "installed"
    but fails at import ("undefined symbol ..."), and ``attn: auto`` must then fall back instead of choosing it.
    """
    global _FLASH_ATTN_PROBLEM
    if _FLASH_ATTN_PROBLEM is _UNCHECKED:
        if importlib.util.find_spec("flash_attn") is None:
            _FLASH_ATTN_PROBLEM = "flash_attn not installed (pip install flash-attn --no-build-isolation)"
        else:
            try:
                import flash_attn  # noqa: F401
            except (ImportError, OSError, RuntimeError, AttributeError) as e:  # undefined symbol, missing .so, CUDA
                first = (str(e).strip().splitlines() or [""])[0][:200]
                _FLASH_ATTN_PROBLEM = (f"flash_attn is installed but does not import ({type(e).__name__}: {first}); "
                                       f"reinstall it with pip install flash-attn --no-build-isolation")
                log.warning("%s", _FLASH_ATTN_PROBLEM)
            else:
                _FLASH_ATTN_PROBLEM = None
    return _FLASH_ATTN_PROBLEM


_UNCHECKED = object()
_FLASH_ATTN_PROBLEM: Any = _UNCHECKED


def choose_attention(requested: str, dtype) -> AttentionChoice:
    """The attention kernel to load with, and why."""
    import torch

    half = dtype in (torch.bfloat16, torch.float16)
    fa_problem = flash_attn_problem() if requested in ("auto", "flash_attention_2") else None
    has_fa = fa_problem is None
    cuda = cuda_available()
    if requested == "flash_attention_2":
        problems = [m for ok, m in ((has_fa, fa_problem),
                                    (cuda, "no CUDA device"),
                                    (half, "dtype is not bf16/fp16")) if not ok]
        if problems:
            raise UserError(f"model.attn: flash_attention_2 cannot run here: {'; '.join(problems)}; "
                            "use attn: auto or sdpa")
        return AttentionChoice("flash_attention_2", "requested")
    if requested in ("sdpa", "eager"):
        return AttentionChoice(requested, "requested")
    if has_fa and cuda and half:
        return AttentionChoice("flash_attention_2", "flash_attn imports, CUDA with a half dtype")
    why = fa_problem if not has_fa else "no CUDA" if not cuda else "dtype is fp32"
    if hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        return AttentionChoice("sdpa", f"{why}; PyTorch SDPA available")
    return AttentionChoice("eager", f"{why}; no SDPA in this PyTorch")


def quantization_config(spec: ModelSpec, dtype):
    if spec.quantization == "none":
        return None
    if not cuda_available():
        raise UserError(f"model.quantization: {spec.quantization} (QLoRA) needs a CUDA GPU; "
                        "use quantization: none on this machine")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("model.quantization: bitsandbytes is not installed (pip install 'lyrictool[gpu]')")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(**bnb_kwargs(spec, dtype))


def bnb_kwargs(spec: ModelSpec, dtype) -> dict[str, Any]:
    """BitsAndBytesConfig keys for the recipe.  4-bit weights are stored packed in the compute dtype
    (``bnb_4bit_quant_storage``), not uint8: FSDP flattens and shards parameters of one float dtype, so FSDP+QLoRA
    cannot start on uint8 storage; outside FSDP the storage dtype costs nothing."""
    if spec.quantization == "4bit":
        return {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                "bnb_4bit_compute_dtype": dtype, "bnb_4bit_quant_storage": dtype}
    return {"load_in_8bit": True}


def weights_dtype(spec: ModelSpec, dtype, *, for_training: bool):
    """The dtype weights are loaded in.  Full fine-tuning keeps fp32 master weights and computes in ``dtype``
    under autocast (the TRL config's ``bf16``/``fp16``), so small updates do not round away in bf16; pure half
    weights only when the recipe says ``master_weights: dtype``.  A LoRA/QLoRA base is frozen: it loads in
    ``dtype`` (peft keeps the adapter in fp32)."""
    import torch

    full_ft = for_training and spec.lora is None and spec.quantization == "none"
    if full_ft and spec.master_weights == "fp32" and dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return dtype


def peft_config(spec: ModelSpec, task_type: str = "CAUSAL_LM", *, check_start: bool = True):
    """The peft LoraConfig for the recipe, or None (TRL trainers take it as ``peft_config``).

    ``check_start``: refuse a LoRA adapter folder as the model to train a new LoRA on (rejection-sample merges such
    a folder first, so its --dry-run passes False).
    """
    if spec.lora is None:
        if spec.quantization != "none":
            raise UserError("model.lora: quantized weights cannot be trained directly; add a lora: section (QLoRA)")
        return None
    if check_start and (Path(spec.name).expanduser() / "adapter_config.json").exists():
        # peft would stack a second adapter on the loaded one, and the new adapter would name the bare base model
        raise UserError(f"model.name: {spec.name} is a LoRA adapter folder, and a new LoRA cannot be trained on top of "
                        "it; start from a full model: a full-weight sft output, or the output_dir of rejection-sample "
                        "(which merges such an adapter)")
    from peft import LoraConfig

    return LoraConfig(r=spec.lora.r, lora_alpha=spec.lora.alpha, lora_dropout=spec.lora.dropout,
                      target_modules=spec.lora.target_modules, task_type=task_type)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    path: str
    attention: AttentionChoice
    dtype: Any


def model_plan(spec: ModelSpec) -> tuple[AttentionChoice, Any]:
    """The attention kernel and compute dtype ``load_model`` will use, known before loading (the TRL config is
    built from them first, so ZeRO-3 / FSDP low-memory loading apply to the load)."""
    dtype = resolve_dtype(spec.dtype)
    return choose_attention(spec.attn, dtype), dtype


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"model.name: cannot load a tokenizer from {name_or_path}: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    slim_tokenizer(tok)
    return tok


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer puts its bos token first when it tokenises plain text (Gemma's and Llama's do)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    return bos is not None and tokenizer("a", add_special_tokens=True)["input_ids"][:1] == [bos]


def as_plain_text(tokenizer, rendered: str) -> str:
    """Chat-template output made fit to be tokenised as plain text: a template that writes the bos token itself
    (Gemma's) would get a second one from a tokenizer that adds it, and Gemma wants exactly one."""
    bos = getattr(tokenizer, "bos_token", None)
    if bos and rendered.startswith(bos) and adds_bos(tokenizer):
        return rendered[len(bos):]
    return rendered


# Tokenizer classes whose Python copies of the vocabulary and merges are read only while __init__ builds the Rust
# tokenizer (checked against transformers 5.24's sources; whisper's, for one, writes them out on save).
_SLIMMABLE = frozenset({"Qwen2Tokenizer", "LlamaTokenizer", "GPT2Tokenizer", "GemmaTokenizer"})


def slim_tokenizer(tok) -> None:
    """Drop the Python copies of a BPE tokenizer's vocabulary and merges that transformers 5 keeps after building it.

    datasets fingerprints every ``.map`` (TRL runs four to eight per trainer) by pickling the transform's arguments,
    the tokenizer among them; for Qwen2.5's tokenizer (151,643 entries, 294,166 merges) that took 1.7 s of CPU per
    map, 0.15 s without these copies; for Gemma's (262,144 entries, 514,906 merges) minutes on a busy box.
    Tokenization uses the Rust tokenizer, which keeps its own.
    """
    if type(tok).__name__ in _SLIMMABLE:
        for attr in ("_vocab", "_merges"):
            if isinstance(getattr(tok, attr, None), (dict, list)):
                setattr(tok, attr, None)


def load_model(spec: ModelSpec, *, kind: str = "causal_lm", num_labels: int = 1, for_training: bool = True,
               announce: bool = True) -> LoadedModel:
    """Load model + tokenizer as the recipe says. ``kind``: causal_lm or seq_cls (a scorer head).

    ``for_training=False`` (eval, sampling, serving) puts the model on the GPU when there is one, in eval mode.
    """
    import torch  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    path = resolve_model_path(spec.name)
    dtype = resolve_dtype(spec.dtype)
    attn = choose_attention(spec.attn, dtype)
    qconf = quantization_config(spec, dtype)
    tok = load_tokenizer(spec.name, spec.trust_remote_code)
    kwargs: dict[str, Any] = {"dtype": weights_dtype(spec, dtype, for_training=for_training),
                              "attn_implementation": attn.implementation,
                                  "trust_remote_code": spec.trust_remote_code}
    if qconf is not None:
        kwargs["quantization_config"] = qconf
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    cls = AutoModelForCausalLM if kind == "causal_lm" else AutoModelForSequenceClassification
    if kind != "causal_lm":
        kwargs["num_labels"] = num_labels
    try:
        model = cls.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"model.name: cannot load {spec.name}: {first}") from None
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tok.pad_token_id
    if not for_training:  # inference (eval, sampling, serve): on the accelerator now; a trainer places its own
        to_accelerator(model)
        model.eval()
    if announce:
        log.info("model %s: attention=%s (%s), dtype=%s", spec.name, attn.implementation, attn.reason,
                 str(dtype).removeprefix("torch."))
    return LoadedModel(model=model, tokenizer=tok, path=path, attention=attn, dtype=dtype)


#: What a LoRA run saves next to the base config; gone once the adapter is merged.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")


def merge_lora(model, output_dir: str | Path | None = None):
    """Fold a LoRA adapter into its base weights; with ``output_dir``, save the plain model there instead of the
    adapter (the adapter files are removed: every consumer, the next stage or round, eval and serve, loads a plain
    model folder).  Returns the merged model on the main process, None on the others.

    Under several processes every rank calls it: sharded weights (FSDP, ZeRO-3) are gathered first and merged into
    a fresh copy (:func:`lyrictool.distributed.merged_lora_model`), never ``merge_and_unload`` on shards; only the
    main process merges and writes, then all wait, so the other ranks may load ``output_dir`` right after.
    """
    from lyrictool.distributed import barrier, is_main_process, merged_lora_model, sharding, unwrap

    if sharding(model) != "none":
        merged = merged_lora_model(model)  # collective
    else:
        merged = unwrap(model).merge_and_unload() if is_main_process() else None
    if output_dir is not None:
        if is_main_process():
            out = Path(output_dir)
            for name in ADAPTER_FILES:
                (out / name).unlink(missing_ok=True)
            merged.save_pretrained(out)
        barrier()
    return merged


def to_accelerator(model) -> None:
    """Move a model to this process's GPU (LOCAL_RANK) when there is one; quantized models are already placed."""
    if cuda_available() and getattr(model, "hf_device_map", None) is None:
        model.to(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def check_model_spec(spec: ModelSpec) -> dict[str, str]:
    """What --dry-run can check about the model without loading it: attention, dtype, quantization, LoRA."""
    dtype = resolve_dtype(spec.dtype)
    attn = choose_attention(spec.attn, dtype)
    quantization_config(spec, dtype)
    peft_config(spec, check_start=False)
    resolve_model_path(spec.name, convert=False)  # built-in and GGUF models are built on first load
    return {"attention": f"{attn.implementation} ({attn.reason})", "dtype": str(dtype).removeprefix("torch.")}
