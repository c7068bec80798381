"""Model and tokenizer loading, shared by every command.

- ``builtin:tiny-zh``: a randomly initialised Llama-architecture decoder (~2M parameters, seeded, identical on every
  machine) with a Chinese character tokenizer built offline (GB2312 hanzi + ASCII + Chinese punctuation +
  chat special tokens, ChatML chat template).  It is written once in Hugging Face format to a cache folder,
  so TRL trainers, ``from_pretrained`` and ``serve`` use it like any hub model.  Nothing is downloaded.
- Attention: ``auto`` picks FlashAttention-2 when ``flash_attn`` imports and CUDA with a half dtype is in use,
  else PyTorch SDPA, else eager, and logs which and why.
- dtype, LoRA (peft) and 4/8-bit quantization (bitsandbytes, imported only when asked for).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lyrictool.errors import UserError

if TYPE_CHECKING:  # pragma: no cover
    from lyrictool.recipes import ModelSpec

log = logging.getLogger("lyrictool")

BUILTIN_TINY = "builtin:tiny-zh"
TINY_VERSION = "v1"  # bump when the tiny model's config or tokenizer changes

SPECIAL_TOKENS = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|unk|>"]
# Brackets used by phonetic hints and section tags must be single tokens too.
EXTRA_CHARS = "〔〕[]【】「」『』《》（）()：:，,。.！!？?、；;…—-～~“”‘’·\n \t"
CHINESE_PUNCT = "，。！？、；：“”‘’（）《》〈〉【】「」『』〔〕…—～·"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] + '<|im_end|>' }}"
    "{% endgeneration %}{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TINY_CONFIG = {
    "hidden_size": 128,
    "intermediate_size": 352,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-6,
}


def cache_dir() -> Path:
    root = os.environ.get("LYRICTOOL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "lyrictool"
    )
    return Path(root)


def tiny_vocab() -> list[str]:
    """Deterministic vocabulary: special tokens, ASCII, punctuation, then the 6,763 GB2312 hanzi in code order."""
    chars: list[str] = []
    seen: set[str] = set()

    def add(c: str) -> None:
        if c not in seen:
            seen.add(c)
            chars.append(c)

    for c in EXTRA_CHARS + CHINESE_PUNCT:
        add(c)
    for i in range(32, 127):
        add(chr(i))
    for hi in range(0xB0, 0xF8):
        for lo in range(0xA1, 0xFF):
            try:
                add(bytes([hi, lo]).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    return SPECIAL_TOKENS + chars


def build_tiny_tokenizer():
    """A character-level fast tokenizer: every character is one token; unknown characters map to <|unk|>."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(tiny_vocab())}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<|unk|>",
        pad_token="<|pad|>",
        eos_token="<|im_end|>",
        bos_token=None,
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
        clean_up_tokenization_spaces=False,
        model_max_length=TINY_CONFIG["max_position_embeddings"],
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_model(tokenizer, seed: int = 0):
    import torch

    # Llama, not Qwen2: transformers 5 forces Qwen2's BPE tokenizer class onto any qwen2 checkpoint, which
    # would silently break a character tokenizer loaded through AutoTokenizer.
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        **TINY_CONFIG,
    )
    gen = torch.random.fork_rng(devices=[])
    with gen:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = None
    return model


def builtin_tiny_path() -> Path:
    """Build the tiny model once per machine (atomically) and return its Hugging Face folder."""
    target = cache_dir() / f"tiny-zh-{TINY_VERSION}"
    if (target / "config.json").exists() and (target / "tokenizer.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-zh-", dir=target.parent))
    try:
        tok = build_tiny_tokenizer()
        model = build_tiny_model(tok)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            os.rename(tmp, target)
        except OSError:  # another process won the race; theirs is identical
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def has_tokenizer(folder: Path) -> bool:
    """Whether a model folder holds a tokenizer that ``AutoTokenizer.from_pretrained`` can read."""
    return any((folder / name).exists() for name in TOKENIZER_FILES)


def resolve_model_path(name: str) -> str:
    if name == BUILTIN_TINY:
        return str(builtin_tiny_path())
    if name.startswith("builtin:"):
        raise UserError(f"model.name: unknown builtin model {name!r}; the built-in model is {BUILTIN_TINY}")
    p = Path(name).expanduser()
    if p.exists():
        if not p.is_dir():
            raise UserError(f"model.name: {name} is a file; give a Hugging Face model folder (config.json, weights, "
                            "tokenizer)")
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


def choose_attention(requested: str, dtype) -> AttentionChoice:
    """The attention kernel to load with, and why."""
    import torch

    half = dtype in (torch.bfloat16, torch.float16)
    has_fa = importlib.util.find_spec("flash_attn") is not None
    cuda = cuda_available()
    if requested == "flash_attention_2":
        problems = [m for ok, m in ((has_fa, "flash_attn is not installed (pip install 'lyrictool[gpu]')"),
                                    (cuda, "no CUDA device"),
                                    (half, "dtype is not bf16/fp16")) if not ok]
        if problems:
            raise UserError(f"model.attn: flash_attention_2 cannot run here: {'; '.join(problems)}; "
                            "use attn: auto or sdpa")
        return AttentionChoice("flash_attention_2", "requested")
    if requested in ("sdpa", "eager"):
        return AttentionChoice(requested, "requested")
    if has_fa and cuda and half:
        return AttentionChoice("flash_attention_2", "flash_attn installed, CUDA with a half dtype")
    why = ("flash_attn not installed" if not has_fa else "no CUDA" if not cuda else "dtype is fp32")
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

    if spec.quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=dtype)
    return BitsAndBytesConfig(load_in_8bit=True)


def peft_config(spec: ModelSpec, task_type: str = "CAUSAL_LM"):
    """The peft LoraConfig for the recipe, or None (TRL trainers take it as ``peft_config``)."""
    if spec.lora is None:
        if spec.quantization != "none":
            raise UserError("model.lora: quantized weights cannot be trained directly; add a lora: section (QLoRA)")
        return None
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


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"model.name: cannot load a tokenizer from {name_or_path}: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


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
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn.implementation,
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
    model folder).  Returns the merged model."""
    merged = model.merge_and_unload()
    if output_dir is not None:
        out = Path(output_dir)
        for name in ADAPTER_FILES:
            (out / name).unlink(missing_ok=True)
        merged.save_pretrained(out)
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
    peft_config(spec)
    if spec.name != BUILTIN_TINY:  # the builtin is built on first load; anything else must resolve now
        resolve_model_path(spec.name)
    return {"attention": f"{attn.implementation} ({attn.reason})", "dtype": str(dtype).removeprefix("torch.")}
