"""Vocabulary trimming: a causal LM with a large multilingual vocabulary cut down to the tokens it will use.

A small model with a big vocabulary spends most of a CPU training step in its output layer (Gemma 3 270M: the
262,144 x 640 tied embedding is ~60% of the multiply-adds per token).  Trimming keeps the rows of the tokens a
Chinese-lyrics model needs and writes an ordinary Hugging Face folder:

- :func:`kept_tokens` -- the kept set: every special and added-special token (but unused placeholders), the 256
  byte tokens (byte fallback ``<0x00>``..``<0xFF>``, or the byte-level alphabet), whitespace tokens, the tokens of
  each ASCII printable character, each GB2312 character (hanzi, Chinese punctuation, full-width forms) and a few
  other punctuation marks *alone*, the tokens of the chat template, and every token that ``texts`` produce --
  closed under the BPE merges (:func:`merge_closure`) so that every kept token stays reachable.
- :func:`trim_model_folder` -- slices the input embedding (and an untied ``lm_head`` and its bias) to the kept rows
  in original-id order (so ``<pad>=0, <eos>=1, <bos>=2`` stay where they were), remaps every token id in
  ``config.json`` / ``generation_config.json``, and writes a trimmed ``tokenizer.json``: the vocabulary with new ids,
  the merges whose two parts and result are kept, the kept added tokens, the post-processor's special ids.  Written
  once through a temporary folder renamed into place (``checkpoints.build_once``).  ``vocab_trim.json`` records
  the source and the original id of every new id.  :func:`trim_to_list` does it with a shipped kept set.
- :func:`write_token_list` / :func:`read_token_list` -- a kept set as a JSON list of token strings, so a built-in
  trimmed model can be rebuilt identically from a file shipped with the package (the corpora that chose it need not
  be present).

On the kept tokens the trimmed model computes the same logits as the original; text outside the kept data still
encodes (a dropped token's merges are gone, so the text falls back to smaller kept pieces and finally to bytes,
never to ``<unk>``).  Only BPE tokenizers with byte fallback or a byte-level alphabet can be trimmed that way;
others are refused.

Hand-written over the ``tokenizers`` JSON format: the vocabulary-trimming tools on PyPI (``vocabtrimmer``) handle
SentencePiece-unigram models and re-mine data, not a BPE's merges, byte fallback and post-processor.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: The file written next to a trimmed model: {"source", "original_vocab_size", "original_ids"}.
TRIM_FILE = "vocab_trim.json"

#: Placeholder special tokens that no text or template uses (Gemma's 6,242 ``<unusedN>``, Llama 3's reserved ones).
PLACEHOLDER_TOKEN = re.compile(r"^<(?:unused\d+|\|reserved_special_token_\d+\|)>$")

#: The shipped kept sets (token-string lists, :func:`write_token_list`), one per trimmed built-in model; written by
#: ``python -m lyrictool.data.vocab_lists``.
KEPT_LISTS = Path(__file__).resolve().parent / "data" / "vocab"

#: Punctuation kept as single characters besides GB2312's (which has the Chinese and full-width marks).
EXTRA_PUNCT = "–―•・〜～‧﹏·«»¡¿€£¥©®™°±×÷"


# --------------------------------------------------------------------------------------------------------------
# The tokenizer as JSON


def tokenizer_json(tokenizer) -> dict[str, Any]:
    """The ``tokenizers`` JSON of a transformers fast tokenizer (what it really uses, after any class rebuild)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(f"{type(tokenizer).__name__} has no Rust tokenizer (tokenizer.json); only fast BPE "
                         "tokenizers can be trimmed")
    return json.loads(backend.to_str())


def _merges(model: dict) -> list[tuple[str, str]]:
    return [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model["merges"]]


def _walk_pre_tokenizers(node: Any):
    if isinstance(node, dict):
        yield node
        for child in node.get("pretokenizers") or []:
            yield from _walk_pre_tokenizers(child)


def byte_tokens(tj: dict[str, Any]) -> list[str]:
    """The 256 tokens that make every text encodable: ``<0xHH>`` (byte fallback) or the byte-level alphabet.

    Raises ValueError for a tokenizer that has neither (a dropped character would become ``<unk>``)."""
    model = tj["model"]
    if model.get("type") != "BPE":
        raise ValueError(f"only BPE tokenizers can be trimmed (this one is {model.get('type')})")
    vocab = model["vocab"]
    if model.get("byte_fallback"):
        tokens = [f"<0x{b:02X}>" for b in range(256)]
    elif any(n.get("type") == "ByteLevel" for n in _walk_pre_tokenizers(tj.get("pre_tokenizer"))):
        from tokenizers import pre_tokenizers

        tokens = sorted(pre_tokenizers.ByteLevel.alphabet())
    else:
        raise ValueError("the tokenizer has neither byte fallback nor a byte-level alphabet: text with a dropped "
                         "token would encode to <unk>, so it cannot be trimmed")
    missing = [t for t in tokens if t not in vocab]
    if missing:
        raise ValueError(f"the tokenizer lacks {len(missing)} of its 256 byte tokens (first: {missing[0]!r})")
    return tokens


def merge_closure(tj: dict[str, Any], ids: Iterable[int]) -> set[int]:
    """``ids`` plus, recursively, both parts of every merge that produces a kept token.

    Then every way BPE can build a kept token goes through kept tokens only, so a text whose original encoding uses
    kept tokens only encodes to the same tokens after trimming."""
    vocab = tj["model"]["vocab"]
    inverse = {i: t for t, i in vocab.items()}
    producers: dict[str, list[tuple[str, str]]] = {}
    for a, b in _merges(tj["model"]):
        producers.setdefault(a + b, []).append((a, b))
    kept = set(ids)
    stack = [inverse[i] for i in kept if i in inverse]
    while stack:
        for pair in producers.get(stack.pop(), ()):
            for part in pair:
                i = vocab[part]
                if i not in kept:
                    kept.add(i)
                    stack.append(part)
    return kept


# --------------------------------------------------------------------------------------------------------------
# The kept set


def gb2312_chars() -> str:
    """Every character of GB2312 in code order: 682 symbols (Chinese punctuation, full-width forms, ...), 6,763 hanzi."""
    out = []
    for hi in range(0xA1, 0xF8):
        for lo in range(0xA1, 0xFF):
            try:
                out.append(bytes([hi, lo]).decode("gb2312"))
            except UnicodeDecodeError:
                continue
    return "".join(out)


def single_chars() -> list[str]:
    """The characters whose tokens are kept one by one: ASCII printable, whitespace, GB2312, :data:`EXTRA_PUNCT`."""
    chars = [chr(i) for i in range(32, 127)] + ["\n", "\t", "\r", "\u3000"] + list(gb2312_chars() + EXTRA_PUNCT)
    return list(dict.fromkeys(chars))


def required_ids(tokenizer, tj: dict[str, Any] | None = None) -> set[int]:
    """What every trimmed model keeps: the named special tokens, every added special token but the placeholders
    (:data:`PLACEHOLDER_TOKEN`), the 256 byte tokens, every token that decodes to whitespace only."""
    tj = tj or tokenizer_json(tokenizer)
    vocab = tj["model"]["vocab"]
    ids = {vocab[t] for t in byte_tokens(tj)}
    ids |= {a["id"] for a in tj.get("added_tokens", []) if a.get("special")
            and not PLACEHOLDER_TOKEN.match(a["content"])}
    ids |= {i for i in tokenizer.all_special_ids if i is not None}
    backend = tokenizer.backend_tokenizer
    size = backend.get_vocab_size(with_added_tokens=True)
    decoded = backend.decode_batch([[i] for i in range(size)], skip_special_tokens=False)
    ids |= {i for i, s in enumerate(decoded) if s and s.isspace()}
    return ids


def _encode_all(tokenizer, texts: Iterable[str], chunk: int = 2048) -> set[int]:
    backend = tokenizer.backend_tokenizer
    ids: set[int] = set()
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) >= chunk:
            ids.update(i for enc in backend.encode_batch(batch, add_special_tokens=False) for i in enc.ids)
            batch = []
    if batch:
        ids.update(i for enc in backend.encode_batch(batch, add_special_tokens=False) for i in enc.ids)
    return ids


def chat_template_texts(tokenizer) -> list[str]:
    """The tokenizer's chat template rendered on a short conversation (with a system turn where it accepts one)."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    out = []
    for messages in ([{"role": "system", "content": "。"}, {"role": "user", "content": "。"},
                      {"role": "assistant", "content": "。"}],
                     [{"role": "user", "content": "。"}, {"role": "assistant", "content": "。"}]):
        try:
            out.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False))
            out.append(tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True))
        except Exception:  # noqa: BLE001, S112  (a template that refuses a system turn raises its own error type)
            continue
    return out


def kept_tokens(tokenizer, texts: Iterable[str] = ()) -> list[int]:
    """The kept set of ``tokenizer`` (a transformers fast BPE tokenizer) for ``texts``, as sorted original ids.

    :func:`required_ids`, the tokens of each of :func:`single_chars` alone, of the chat template and of ``texts``,
    closed under the merges (:func:`merge_closure`).  Deterministic: the same tokenizer and texts give the same ids.
    """
    tj = tokenizer_json(tokenizer)
    ids = required_ids(tokenizer, tj)
    ids |= _encode_all(tokenizer, single_chars())
    ids |= _encode_all(tokenizer, chat_template_texts(tokenizer))
    ids |= _encode_all(tokenizer, texts)
    return sorted(merge_closure(tj, ids))


def write_token_list(path: str | Path, tokenizer, ids: Iterable[int], *, about: dict[str, Any] | None = None) -> Path:
    """Write a kept set as token strings (readable, diffable, independent of ids), one JSON list in id order."""
    ids = sorted(set(ids))
    tokens = tokenizer.convert_ids_to_tokens(ids)
    doc = {**(about or {}), "vocab_size": len(tokenizer), "count": len(ids), "tokens": tokens}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    return path


def kept_list_path(name: str) -> Path:
    """The shipped kept set called ``name`` (e.g. ``gemma-3-270m``): ``lyrictool/data/vocab/<name>.json``."""
    return KEPT_LISTS / f"{name}.json"


def read_token_list(path: str | Path, tokenizer) -> list[int]:
    """The ids of a list written by :func:`write_token_list`; ValueError when a token is not in ``tokenizer``."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    vocab = tokenizer.get_vocab()
    missing = [t for t in doc["tokens"] if t not in vocab]
    if missing:
        raise ValueError(f"{path}: {len(missing)} tokens are not in the tokenizer (first: {missing[0]!r}); the list "
                         "was made for another tokenizer")
    return sorted(vocab[t] for t in doc["tokens"])


# --------------------------------------------------------------------------------------------------------------
# The trimmed folder


def trim_to_list(src: str | Path, dst: str | Path, name: str) -> Path:
    """:func:`trim_model_folder` with the shipped kept set ``name`` (:func:`kept_list_path`): how a trimmed built-in
    model is made, identically with or without the corpora that chose the set."""
    from transformers import AutoTokenizer

    dst = Path(dst)
    if (dst / TRIM_FILE).exists():
        return dst
    keep = read_token_list(kept_list_path(name), AutoTokenizer.from_pretrained(src))
    return trim_model_folder(src, dst, keep)


def trim_tokenizer_json(tj: dict[str, Any], old_ids: list[int]) -> dict[str, Any]:
    """``tj`` (a BPE tokenizer's JSON) cut to ``old_ids`` (sorted), which get the new ids 0, 1, 2, ... in order."""
    new_of = {old: new for new, old in enumerate(old_ids)}
    tj = json.loads(json.dumps(tj))
    model = tj["model"]
    vocab = {t: new_of[i] for t, i in model["vocab"].items() if i in new_of}
    added = [{**a, "id": new_of[a["id"]]} for a in tj.get("added_tokens", []) if a["id"] in new_of]
    known = set(vocab.values()) | {a["id"] for a in added}
    if len(known) != len(old_ids):
        raise ValueError(f"{len(old_ids) - len(known)} kept ids are not in the tokenizer's vocabulary")
    if model.get("unk_token") is not None and model["unk_token"] not in vocab:
        raise ValueError(f"the unknown token {model['unk_token']!r} must be kept")
    merges = [[a, b] for a, b in _merges(model) if a in vocab and b in vocab and a + b in vocab]
    model["vocab"], model["merges"] = vocab, merges
    tj["added_tokens"] = added
    tj["post_processor"] = _remap_post_processor(tj.get("post_processor"), new_of)
    return tj


def _remap_post_processor(node: Any, new_of: dict[int, int]) -> Any:
    if isinstance(node, list):
        return [_remap_post_processor(x, new_of) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "ids" and isinstance(value, list):
            out[key] = [_new_id(i, new_of, "post_processor") for i in value]
        elif key in ("sep", "cls") and isinstance(value, list) and len(value) == 2 and isinstance(value[1], int):
            out[key] = [value[0], _new_id(value[1], new_of, f"post_processor.{key}")]
        else:
            out[key] = _remap_post_processor(value, new_of)
    return out


def _new_id(old: int, new_of: dict[int, int], where: str) -> int:
    if old not in new_of:
        raise ValueError(f"{where}: token id {old} is used but not kept")
    return new_of[old]


_ID_LISTS = ("suppress_tokens", "begin_suppress_tokens")


def remap_config_ids(d: dict[str, Any], new_of: dict[int, int], where: str) -> dict[str, Any]:
    """Every ``*_token_id`` / ``*_token_ids`` (int or list) and suppress list of a config dict, with new ids
    (nested ``*_config`` dicts too, e.g. a multimodal model's ``text_config``)."""
    out = dict(d)
    for key, value in d.items():
        if isinstance(value, dict) and key.endswith("_config"):
            out[key] = remap_config_ids(value, new_of, f"{where}.{key}")
        elif value is None or not (key.endswith(("_token_id", "_token_ids")) or key in _ID_LISTS):
            continue
        elif key in _ID_LISTS and isinstance(value, list):  # a dropped token needs no suppressing
            out[key] = [new_of[v] for v in value if isinstance(v, int) and v in new_of]
        elif isinstance(value, int):
            out[key] = _new_id(value, new_of, f"{where}.{key}")
        elif isinstance(value, list) and all(isinstance(v, int) for v in value):
            out[key] = [_new_id(v, new_of, f"{where}.{key}") for v in value]
    return out


def _set_ids(config, new_of: dict[int, int], where: str) -> None:
    """:func:`remap_config_ids` applied in place to a transformers config or generation config object."""
    before = config.to_dict()
    after = remap_config_ids(before, new_of, where)
    for key, value in after.items():
        if isinstance(value, dict) and key.endswith("_config") and hasattr(getattr(config, key, None), "to_dict"):
            _set_ids(getattr(config, key), new_of, f"{where}.{key}")
        elif value != before[key]:
            setattr(config, key, value)


def _config_ids(d: dict[str, Any]) -> set[int]:
    ids: set[int] = set()
    for key, value in d.items():
        if isinstance(value, dict) and key.endswith("_config"):
            ids |= _config_ids(value)
        elif key.endswith(("_token_id", "_token_ids")):
            ids |= {value} if isinstance(value, int) else {v for v in value or [] if isinstance(v, int)}
    return ids


def slice_embeddings(model, old_ids: list[int]) -> None:
    """Keep the rows ``old_ids`` of the input embedding and of the output layer (tied or not), in place."""
    import torch

    index = torch.tensor(old_ids, dtype=torch.long)
    new_of = {old: new for new, old in enumerate(old_ids)}
    emb = model.get_input_embeddings()
    out = model.get_output_embeddings()
    tied = out is not None and out.weight is emb.weight
    emb.weight = torch.nn.Parameter(emb.weight.detach()[index].clone(), requires_grad=emb.weight.requires_grad)
    emb.num_embeddings = len(old_ids)
    if getattr(emb, "padding_idx", None) is not None:
        emb.padding_idx = new_of.get(emb.padding_idx)
    if out is not None:
        if tied:
            out.weight = emb.weight
        else:
            out.weight = torch.nn.Parameter(out.weight.detach()[index].clone(), requires_grad=out.weight.requires_grad)
        if getattr(out, "bias", None) is not None:
            out.bias = torch.nn.Parameter(out.bias.detach()[index].clone(), requires_grad=out.bias.requires_grad)
        out.out_features = len(old_ids)
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    config.vocab_size = len(old_ids)


#: Files of a model folder that travel unchanged (licences, terms, model cards).
_CARRIED = ("*.md", "*.html", "*.txt", "LICENSE*", "NOTICE*", "USE_POLICY*")


def trim_model_folder(src: str | Path, dst: str | Path, keep_token_ids: Iterable[int]) -> Path:
    """A trimmed copy of the Hugging Face causal-LM folder ``src`` at ``dst``, built once; returns ``dst``.

    ``keep_token_ids``: original ids to keep (e.g. :func:`kept_tokens`); :func:`required_ids`, the ids named in
    the configs and the merge closure are added.  New ids follow original order.  Written like every cached model
    (``checkpoints.build_once``: a temporary folder renamed into place, concurrent callers wait): a ``dst`` that is
    already a trimmed folder is returned as it is; any other existing, non-empty ``dst`` is refused.
    """
    from lyrictool.checkpoints import build_once

    dst = Path(dst)
    if dst.exists() and not (dst / TRIM_FILE).exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FileExistsError(f"{dst} exists and is not a trimmed model; trimming writes a new folder")
    keep = list(keep_token_ids)
    return build_once(dst, lambda folder: write_trimmed(src, folder, keep))


def write_trimmed(src: str | Path, folder: str | Path, keep_token_ids: Iterable[int]) -> None:
    """Write the trimmed copy of ``src`` into the (empty) ``folder``: what :func:`trim_model_folder` builds."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src, tmp = Path(src), Path(folder)
    tok = AutoTokenizer.from_pretrained(src)
    tj = tokenizer_json(tok)
    config_ids = _config_ids(json.loads((src / "config.json").read_text(encoding="utf-8")))
    if (src / "generation_config.json").exists():
        config_ids |= _config_ids(json.loads((src / "generation_config.json").read_text(encoding="utf-8")))
    vocab_size = tok.backend_tokenizer.get_vocab_size(with_added_tokens=True)
    keep = set(keep_token_ids) | required_ids(tok, tj) | {i for i in config_ids if i < vocab_size}
    old_ids = sorted(merge_closure(tj, keep))
    if old_ids[-1] >= vocab_size:
        raise ValueError(f"token id {old_ids[-1]} is outside the tokenizer's {vocab_size} tokens")
    new_of = {old: new for new, old in enumerate(old_ids)}
    trimmed = trim_tokenizer_json(tj, old_ids)

    model = AutoModelForCausalLM.from_pretrained(src, dtype="auto")
    if model.get_input_embeddings().weight.shape[0] < vocab_size:
        raise ValueError(f"{src}: the embedding has fewer rows than the tokenizer has tokens")
    with torch.no_grad():
        slice_embeddings(model, old_ids)
    _set_ids(model.config, new_of, "config.json")
    if model.generation_config is not None:
        _set_ids(model.generation_config, new_of, "generation_config.json")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "tokenizer.json").write_text(json.dumps(trimmed, ensure_ascii=False), encoding="utf-8")
    _remap_tokenizer_config(tmp / "tokenizer_config.json", new_of)
    for pattern in _CARRIED:
        for f in src.glob(pattern):
            if f.is_file() and not (tmp / f.name).exists():
                shutil.copy2(f, tmp / f.name)
    (tmp / TRIM_FILE).write_text(json.dumps(
        {"source": str(src), "original_vocab_size": vocab_size, "vocab_size": len(old_ids),
         "original_ids": old_ids}) + "\n", encoding="utf-8")
    _check_loads(tmp, len(old_ids))


def _remap_tokenizer_config(path: Path, new_of: dict[int, int]) -> None:
    """An ``added_tokens_decoder`` (older tokenizer_config files key added tokens by id) gets the new ids."""
    if not path.exists():
        return
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if "added_tokens_decoder" in cfg:
        cfg["added_tokens_decoder"] = {str(new_of[int(k)]): v for k, v in cfg["added_tokens_decoder"].items()
                                       if int(k) in new_of}
        path.write_text(json.dumps(cfg, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def _check_loads(folder: Path, vocab_size: int) -> None:
    """The written tokenizer loads through AutoTokenizer with exactly the trimmed vocabulary."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    if len(tok) != vocab_size:
        raise RuntimeError(f"the trimmed tokenizer loads with {len(tok)} tokens, expected {vocab_size}")
