"""Vocabulary trimming (lyrictool.vocab) on builtin:tiny-qwen, the real Qwen2.5 byte-level BPE tokenizer.

A trimmed model is an ordinary Hugging Face folder; on the kept tokens it computes the original's logits; its
tokenizer encodes the kept data to the original's tokens and any other text to kept tokens only, never <unk>.
"""

from __future__ import annotations

import json

import pytest

from lyrictool import vocab
from tests.conftest import SHARED_DATA

UNSEEN = [
    "𠀀𪚥龘 are hanzi outside GB2312",  # CJK extension B and a rare hanzi
    "emoji 🎵😀👍🏽 and flags 🇨🇳",
    "Ça déjà-vu, naïve Ünïcödé, Ærøskøbing, ½ ∑ ≤",
    "한국어 日本語のテキスト Кириллица ελληνικά",
    "The quick brown fox jumps over the lazy dog.\n\t  indented\r\n",
]


@pytest.fixture(scope="module")
def songs() -> list[str]:
    from lyrictool.data.synthetic import load_songs

    return [s["lyrics"] for s in load_songs()][:40]


@pytest.fixture(scope="module")
def kept_texts(songs) -> list[str]:
    from lyrictool.controls import build_prompt
    from lyrictool.data.synthetic import load_songs
    from lyrictool.lyrics import add_hints

    return songs + [add_hints(s) for s in songs] + [build_prompt(s["controls"]) for s in load_songs()[:40]] + [
        "，。！？、；：“”（）《》…—", "[Verse]\n[Chorus]\n春夏秋冬 ABC abc 0123 !?"]


@pytest.fixture(scope="module")
def original():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lyrictool.builtin_models import builtin_tiny_qwen_path

    path = builtin_tiny_qwen_path()
    return path, AutoTokenizer.from_pretrained(path), AutoModelForCausalLM.from_pretrained(path)


@pytest.fixture(scope="module")
def trimmed(tmp_path_factory, original, kept_texts):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, tok, _ = original
    keep = vocab.kept_tokens(tok, kept_texts)
    dst = vocab.trim_model_folder(path, tmp_path_factory.mktemp("trim") / "tiny-qwen-zh", keep)
    return dst, AutoTokenizer.from_pretrained(dst), AutoModelForCausalLM.from_pretrained(dst), keep


def tokens(tok, text: str) -> list[str]:
    return tok.convert_ids_to_tokens(tok(text)["input_ids"])


def test_the_trimmed_model_is_a_small_ordinary_folder(original, trimmed):
    _, tok, model = original
    dst, tok2, model2, keep = trimmed
    record = json.loads((dst / vocab.TRIM_FILE).read_text(encoding="utf-8"))
    assert len(tok2) == model2.config.vocab_size == len(record["original_ids"]) < len(tok) // 10
    assert set(keep) <= set(record["original_ids"])
    assert vocab.trim_model_folder("/nonexistent", dst, keep) == dst  # built once, then a cache
    assert model2.get_input_embeddings().weight.shape == (len(tok2), model.config.hidden_size)
    assert model2.get_output_embeddings().weight is model2.get_input_embeddings().weight  # still tied
    # Every id in the configs names the same token as before; the chat template is the same.
    for cfg, cfg2 in ((model.config, model2.config), (model.generation_config, model2.generation_config)):
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            before, after = getattr(cfg, key), getattr(cfg2, key)
            assert (before is None) == (after is None), key
            if before is not None:
                assert tok.convert_ids_to_tokens(before) == tok2.convert_ids_to_tokens(after), key
    assert (tok2.eos_token, tok2.pad_token) == (tok.eos_token, tok.pad_token)
    assert tok2.eos_token_id == model2.config.eos_token_id
    msgs = [{"role": "user", "content": "写一首歌"}]
    assert tokens(tok2, tok2.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)) == \
        tokens(tok, tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))


def test_on_the_kept_tokens_the_logits_are_the_originals(original, trimmed, kept_texts):
    import torch

    _, tok, model = original
    dst, tok2, model2, _ = trimmed
    old = json.loads((dst / vocab.TRIM_FILE).read_text(encoding="utf-8"))["original_ids"]
    chat = tok.apply_chat_template([{"role": "user", "content": kept_texts[-1]},
                                    {"role": "assistant", "content": kept_texts[0]}], tokenize=False)
    with torch.no_grad():
        for text in (kept_texts[0], kept_texts[41], chat):
            a = model(**tok(text, return_tensors="pt")).logits[..., old]
            b = model2(**tok2(text, return_tensors="pt")).logits
            assert a.shape == b.shape
            torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)


def test_kept_data_encodes_to_the_same_tokens(original, trimmed, kept_texts):
    _, tok, _ = original
    _, tok2, _, _ = trimmed
    for text in kept_texts:
        assert tokens(tok2, text) == tokens(tok, text), text[:30]


@pytest.mark.parametrize("text", UNSEEN)
def test_any_text_encodes_to_kept_tokens_and_decodes_back(original, trimmed, text):
    _, tok, _ = original
    _, tok2, _, _ = trimmed
    ids = tok2(text)["input_ids"]
    assert all(0 <= i < len(tok2) for i in ids)
    assert tok2.unk_token_id is None or tok2.unk_token_id not in ids
    assert tok2.decode(ids) == tok.decode(tok(text)["input_ids"])  # the original's own round trip (NFC)
    assert len(ids) >= len(tok(text)["input_ids"])  # dropped tokens fall back to smaller pieces


def test_the_trimmed_folder_loads_like_any_model_and_survives_a_save(trimmed, tmp_path, kept_texts):
    import torch

    from lyrictool.modeling import load_model
    from lyrictool.recipes import ModelSpec

    dst, tok2, model2, _ = trimmed
    lm = load_model(ModelSpec(name=str(dst), dtype="fp32"), for_training=False)
    assert len(lm.tokenizer) == len(tok2) and lm.model.config.vocab_size == len(tok2)
    lm.model.save_pretrained(tmp_path / "again")
    lm.tokenizer.save_pretrained(tmp_path / "again")
    again = load_model(ModelSpec(name=str(tmp_path / "again"), dtype="fp32"), for_training=False)
    text = kept_texts[3]
    assert tokens(again.tokenizer, text) == tokens(tok2, text)
    with torch.no_grad():
        torch.testing.assert_close(again.model(**again.tokenizer(text, return_tensors="pt")).logits,
                                   model2(**tok2(text, return_tensors="pt")).logits)


def test_the_merge_closure_keeps_a_kept_token_reachable(original):
    """Keep only 村庄 (one token) and nothing of its pieces: the closure adds the pieces BPE builds it from, so 村庄
    still encodes as one token; text around it falls back to bytes."""
    from tokenizers import Tokenizer

    _, tok, _ = original
    tj = vocab.tokenizer_json(tok)
    village = tok.convert_tokens_to_ids(tokens(tok, "村庄")[0])
    assert tokens(tok, "村庄") == [tok.convert_ids_to_tokens(village)]
    bytes_only = {tj["model"]["vocab"][t] for t in vocab.byte_tokens(tj)}
    kept = sorted(vocab.merge_closure(tj, bytes_only | {village}))
    assert len(kept) > 257
    small = Tokenizer.from_str(json.dumps(vocab.trim_tokenizer_json(tj, kept), ensure_ascii=False))
    assert small.encode("村庄").tokens == tokens(tok, "村庄")
    assert small.decode(small.encode("我的村庄在山下").ids) == "我的村庄在山下"
    unclosed = Tokenizer.from_str(json.dumps(vocab.trim_tokenizer_json(tj, sorted(bytes_only | {village})),
                                             ensure_ascii=False))
    assert unclosed.encode("村庄").tokens != tokens(tok, "村庄")  # what the closure is for


def test_a_tokenizer_without_byte_fallback_is_refused(tiny_model_path, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)  # builtin:tiny-zh: one token per character, <|unk|> else
    with pytest.raises(ValueError, match="only BPE"):
        vocab.kept_tokens(tok, ["春天"])
    with pytest.raises(ValueError, match="only BPE"):
        vocab.trim_model_folder(tiny_model_path, tmp_path / "out", [0, 1])
    assert not (tmp_path / "out").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's folder", encoding="utf-8")
    with pytest.raises(FileExistsError):  # never written over
        vocab.trim_model_folder(tiny_model_path, tmp_path / "mine", [0, 1])


def test_a_token_list_round_trips_and_refuses_another_tokenizer(original, trimmed, tiny_model_path, tmp_path):
    from transformers import AutoTokenizer

    _, tok, _ = original
    ids = trimmed[3]
    path = vocab.write_token_list(tmp_path / "keep.json", tok, ids, about={"name": "t"})
    assert vocab.read_token_list(path, tok) == ids
    with pytest.raises(ValueError, match="not in the tokenizer"):
        vocab.read_token_list(path, AutoTokenizer.from_pretrained(tiny_model_path))


def test_the_kept_set_covers_gb2312_and_is_deterministic(original, trimmed, kept_texts):
    _, tok, _ = original
    ids = trimmed[3]
    assert ids == vocab.kept_tokens(tok, kept_texts) == sorted(ids)
    kept = set(ids)
    for ch in "春夏秋冬，。！？：、龘齉":  # 龘 is not GB2312: its bytes are kept, not its token
        assert set(tok(ch)["input_ids"]) <= kept or ch in "龘齉"
    assert {tok.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>")} <= kept


@pytest.mark.skipif(not (SHARED_DATA / "songci").is_dir(), reason="needs ../shared/data/chinese-poetry")
def test_the_shipped_gemma_list_is_current():
    """The kept set shipped for builtin:gemma-3-270m-zh is what vocab_lists computes today (regenerate if not)."""
    from lyrictool.builtin_models import BUILTIN_MODELS
    from lyrictool.data import vocab_lists

    if "builtin:gemma-3-270m" not in BUILTIN_MODELS:
        pytest.skip("builtin:gemma-3-270m is not defined")
    try:
        folder = BUILTIN_MODELS["builtin:gemma-3-270m"]()
    except Exception as e:  # noqa: BLE001  (the optional extra is not installed)
        pytest.skip(f"builtin:gemma-3-270m unavailable: {e}")
    assert vocab_lists.main([str(folder), "gemma-3-270m", "--shared", str(SHARED_DATA), "--check"]) == 0


def test_the_kept_texts_are_what_the_commands_feed_a_model():
    """The shipped lists are chosen from the demo rows as the commands render them (prompts, hinted lyrics), the
    pinyin of every GB2312 hanzi, and 宋词/元曲 when ../shared is there."""
    from itertools import islice

    from lyrictool.controls import build_prompt
    from lyrictool.data import vocab_lists
    from lyrictool.data.synthetic import load_songs
    from lyrictool.lyrics import add_hints

    song = load_songs()[0]
    demo = set(vocab_lists.demo_texts())
    assert {song["lyrics"], add_hints(song["lyrics"]), build_prompt(song["controls"]), "〔江阳〕"} <= demo
    assert any(t.startswith("「光」读guāng，韵母是uang") for t in vocab_lists.phonetic_texts())
    if (SHARED_DATA / "songci").is_dir():
        assert len(list(islice(vocab_lists.poetry_texts(SHARED_DATA), 4))) == 4
    assert vocab_lists.list_path("gemma-3-270m").is_file()


def test_an_untied_head_is_sliced_too(original, tmp_path):
    """Larger checkpoints (Qwen2.5-1.5B+, Llama) have their own lm_head: trimmed row for row like the embedding."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, tok, model = original
    config = model.config.to_dict() | {"tie_word_embeddings": False}
    untied = AutoModelForCausalLM.from_config(type(model.config).from_dict(config))
    untied.save_pretrained(tmp_path / "untied")
    tok.save_pretrained(tmp_path / "untied")
    head = untied.lm_head.weight.detach().clone()
    dst = vocab.trim_model_folder(tmp_path / "untied", tmp_path / "trimmed", tok("月亮")["input_ids"])
    old = json.loads((dst / vocab.TRIM_FILE).read_text(encoding="utf-8"))["original_ids"]
    small = AutoModelForCausalLM.from_pretrained(dst)
    assert small.lm_head.weight is not small.get_input_embeddings().weight
    torch.testing.assert_close(small.lm_head.weight, head[old])
    tok2 = AutoTokenizer.from_pretrained(dst)
    with torch.no_grad():
        torch.testing.assert_close(small(**tok2("月亮", return_tensors="pt")).logits,
                                   untied(**tok("月亮", return_tensors="pt")).logits[..., old])
