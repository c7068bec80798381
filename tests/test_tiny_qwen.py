"""builtin:tiny-qwen: a tiny Qwen2 with the real Qwen2.5 tokenizer, and the code paths that BPE tokens exercise.

Qwen2.5's byte-level BPE merges characters (村庄 and 风吹 are one token each, a hint bracket can merge with the
character next to it), so these tests check that hints, token counts, completion-only loss masks and generated
text never assume one token per character.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")

from lyrictool.recipes import ModelSpec

QWEN = "builtin:tiny-qwen"
# Qwen2.5's chat template output for one user turn (no system message given: Qwen's default one is added).
QWEN25_PROMPT = ("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                 "<|im_start|>user\n写一首歌<|im_end|>\n<|im_start|>assistant\n")


@pytest.fixture(scope="module")
def qwen_path():
    from lyrictool.modeling import builtin_tiny_qwen_path

    return builtin_tiny_qwen_path()


@pytest.fixture(scope="module")
def qwen_tok(qwen_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen_path)


def test_autotokenizer_gives_exactly_the_qwen25_tokenizer(qwen_path, qwen_tok):
    # What transformers 5 loads for a qwen2 checkpoint (it forces its own Qwen2Tokenizer class) is the tokenizer we
    # saved: same normalizer, pre-tokenizer, vocabulary, merges and added tokens.
    assert type(qwen_tok).__name__ == "Qwen2Tokenizer"
    assert json.loads(qwen_tok.backend_tokenizer.to_str()) == json.loads((qwen_path / "tokenizer.json").read_text())
    assert len(qwen_tok) == 151_646
    # Qwen2.5's ids (as its own tokenizer gives them): merged characters, special tokens, the ChatML turn.
    assert qwen_tok("村庄", add_special_tokens=False)["input_ids"] == [106950]
    assert qwen_tok("风吹", add_special_tokens=False)["input_ids"] == [109520]
    assert qwen_tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [151643, 151644, 151645]
    assert qwen_tok("<|im_start|>user\n你好<|im_end|>", add_special_tokens=False)["input_ids"] == [
        151644, 872, 198, 108386, 151645]
    assert qwen_tok.eos_token == "<|im_end|>" and qwen_tok.pad_token == "<|endoftext|>"
    assert qwen_tok.bos_token is None and qwen_tok.unk_token is None
    text = "[Chorus]\n月光洒满〔江阳〕窗，Hello 2024！ ĠÑĤ"
    assert qwen_tok.decode(qwen_tok(text, add_special_tokens=False)["input_ids"]) == text


def test_chat_template_is_qwen25s(qwen_tok):
    from trl.chat_template_utils import qwen2_5_chat_template

    user = [{"role": "user", "content": "写一首歌"}]
    assert qwen_tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == QWEN25_PROMPT
    with_system = [{"role": "system", "content": "你是词作者。"}, *user, {"role": "assistant", "content": "月光"}]
    assert qwen_tok.apply_chat_template(with_system, tokenize=False) == (
        "<|im_start|>system\n你是词作者。<|im_end|>\n<|im_start|>user\n写一首歌<|im_end|>\n"
        "<|im_start|>assistant\n月光<|im_end|>\n")
    assert qwen_tok.chat_template == qwen2_5_chat_template  # TRL recognises it as Qwen2.5's


def test_tiny_qwen_is_a_small_seeded_qwen2(qwen_path, qwen_tok):
    import torch
    from transformers import AutoModelForCausalLM

    from lyrictool.modeling import build_tiny_qwen_model, count_parameters

    model = AutoModelForCausalLM.from_pretrained(qwen_path, dtype=torch.float32)
    assert model.config.model_type == "qwen2" and model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert model.config.vocab_size == 151_646 and count_parameters(model) < 11_000_000
    assert model.generation_config.eos_token_id == [151645, 151643]  # Qwen2.5-Instruct's
    rebuilt = build_tiny_qwen_model(qwen_tok)
    for (n, a), (_, b) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a, b), n  # seeded: identical on every machine


def test_concurrent_builds_are_safe(tmp_path):
    """Two processes building a built-in model at once (torchrun ranks) both get a complete folder and leave no
    temporary one.  Shown with tiny-zh, the faster build; both models are written by the same _build_once."""
    import os
    import subprocess
    import sys

    code = ("from lyrictool.modeling import builtin_tiny_path; p = builtin_tiny_path(); "
            "print(sorted(x.name for x in p.iterdir()))")
    env = {**os.environ, "LYRICTOOL_CACHE": str(tmp_path), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert outs[0] == outs[1] and "model.safetensors" in outs[0] and "tokenizer.json" in outs[0]
    assert [p.name for p in tmp_path.iterdir()] == ["tiny-zh-v1"]  # no temporary folder left behind


def test_hints_survive_bpe_round_trip(qwen_tok):
    from lyrictool.lyrics import add_hints, strip_generated_hints, strip_hints

    song = "[Verse]\n月光洒满小村庄\n晚风吹过稻花香\n\n[Chorus]\n我在远方想故乡"
    hinted = add_hints(song)
    assert "小村〔江阳〕庄" in hinted  # the hint goes before the last character, inside the 村庄 token
    ids = qwen_tok(hinted, add_special_tokens=False)["input_ids"]
    # a bracket merges with a neighbouring character in some tokens, yet decoding gives the text back exactly
    assert qwen_tok.decode(ids) == hinted
    assert strip_hints(qwen_tok.decode(ids)) == song
    # Model output decoded token by token (as a streamer does) strips to the same text as the whole.
    pieces = "".join(qwen_tok.decode([i]) for i in ids)
    assert strip_generated_hints(pieces) == song


def test_generation_counts_tokens_not_characters(qwen_path):
    from lyrictool.generation import generate_texts
    from lyrictool.modeling import load_model

    lm = load_model(ModelSpec(name=QWEN), for_training=False)
    prompt = lm.tokenizer.apply_chat_template([{"role": "user", "content": "写一首歌"}], tokenize=False,
                                              add_generation_prompt=True)
    assert prompt == QWEN25_PROMPT
    (samples,) = generate_texts(lm.model, lm.tokenizer, [prompt], n=3, max_new_tokens=12, seed=0)
    for s in samples:
        assert 0 < s.new_tokens <= 12
    assert any(len(s.raw) > s.new_tokens for s in samples)  # BPE: more characters than tokens


def test_serve_counts_prompt_tokens_with_the_models_tokenizer(qwen_path):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from lyrictool.serve.app import create_app
    from lyrictool.serve.backends import TransformersBackend
    from lyrictool.serve.config import ServeRecipe

    backend = TransformersBackend.load(ModelSpec(name=QWEN))
    prompt = backend.chat_prompt([{"role": "user", "content": "村庄" * 30}])
    tokens = backend.count_tokens(prompt)
    assert tokens == len(backend.tokenizer(prompt, add_special_tokens=False)["input_ids"]) < len(prompt)
    recipe = ServeRecipe.model_validate({"served_model_name": "q", "model": {"name": QWEN},
                                         "limits": {"max_prompt_tokens": tokens, "max_tokens": 8,
                                                    "default_max_tokens": 4}})
    with TestClient(create_app(recipe, backend)) as client:
        ok = client.post("/v1/chat/completions", json={"model": "q", "max_tokens": 4,
                                                       "messages": [{"role": "user", "content": "村庄" * 30}]})
        assert ok.status_code == 200, ok.text
        assert ok.json()["usage"]["prompt_tokens"] == tokens  # 60 characters, 30 tokens of 村庄
        over = client.post("/v1/chat/completions", json={"model": "q", "max_tokens": 4,
                                                         "messages": [{"role": "user", "content": "村庄" * 31}]})
        assert over.status_code == 422 and "limits.max_prompt_tokens" in over.text


def test_sft_loss_mask_covers_exactly_the_completion(qwen_tok, songs_file, tmp_path):
    """Completion-only loss on BPE tokens: the masked-in tokens decode to the hinted lyrics and <|im_end|>."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from lyrictool.data import load_records
    from lyrictool.data.lyrics_rows import lyrics_example, sft_rows
    from lyrictool.modeling import load_model
    from lyrictool.recipes import DataSpec

    spec = DataSpec(train=str(songs_file), hints="line_end")
    rows = sft_rows([lyrics_example(r) for r in load_records(str(songs_file), what="data.train")][:3], spec)
    lm = load_model(ModelSpec(name=QWEN))
    trainer = SFTTrainer(model=lm.model, processing_class=lm.tokenizer, train_dataset=Dataset.from_list(rows),
                         args=SFTConfig(output_dir=str(tmp_path), report_to="none", max_length=512, bf16=False))
    for row, ex in zip(rows, trainer.train_dataset):
        ids, labels = ex["input_ids"], ex["labels"]  # -100: no loss
        assert [i for i, lab in zip(ids, labels) if lab != -100] == [lab for lab in labels if lab != -100]
        completion = lm.tokenizer.decode([i for i, lab in zip(ids, labels) if lab != -100])
        assert "〔" in completion and completion == row["completion"][0]["content"] + "<|im_end|>\n"
        prompt = lm.tokenizer.decode([i for i, lab in zip(ids, labels) if lab == -100])
        assert prompt == lm.tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)


def test_loaded_tokenizer_is_cheap_to_fingerprint_and_still_whole(qwen_path, qwen_tok, tmp_path):
    """datasets hashes the tokenizer on every TRL .map(); the loaded Qwen tokenizer drops its Python vocab copies."""
    import time

    from datasets.fingerprint import Hasher

    from lyrictool.modeling import load_tokenizer

    tok = load_tokenizer(QWEN)
    assert tok._vocab is None and tok._merges is None and qwen_tok._merges  # AutoTokenizer's keeps them

    def cpu(obj) -> float:
        start = time.process_time()
        Hasher.hash(obj)
        return time.process_time() - start

    assert cpu(tok) < cpu(qwen_tok) / 3
    text = "[Verse]\n月光洒满小村〔江阳〕庄<|im_end|>"
    assert tok(text)["input_ids"] == qwen_tok(text)["input_ids"]
    tok.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer.json").read_text()) == json.loads((qwen_path / "tokenizer.json").read_text())


def test_generation_stops_on_every_end_token_of_the_checkpoint(qwen_path):
    """Qwen2.5-Instruct ends a turn with <|im_end|> or <|endoftext|> (its generation_config's eos list); both stop
    generation, in generate_texts and in serve's streamer, although the tokenizer's eos is <|im_end|> only."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    from lyrictool.generation import generate_texts, stop_token_ids
    from lyrictool.modeling import load_model
    from lyrictool.serve.backends import GenRow, _RowStreamer

    lm = load_model(ModelSpec(name=QWEN), for_training=False, announce=False)
    assert stop_token_ids(lm.model, lm.tokenizer) == [151645, 151643]

    class EndAtThird(LogitsProcessor):
        def __call__(self, input_ids, scores):
            if input_ids.shape[1] - prompt_len == 2:
                scores[:, :] = -float("inf")
                scores[:, 151643] = 0.0
            return scores

    prompt = QWEN25_PROMPT
    prompt_len = len(lm.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    (samples,) = generate_texts(lm.model, lm.tokenizer, [prompt], n=2, max_new_tokens=10, seed=0,
                                generate_kwargs={"logits_processor": LogitsProcessorList([EndAtThird()])})
    assert [s.new_tokens for s in samples] == [3, 3]
    streamer = _RowStreamer(lm.tokenizer, [GenRow(prompt, 10)], stop_token_ids(lm.model, lm.tokenizer))
    streamer.put(torch.tensor([[1, 2]]))  # the prompt
    for token in (9754, 99225, 151643):
        streamer.put(torch.tensor([token]))
    assert streamer.state[0].done and streamer.state[0].eos and streamer.state[0].ids == [9754, 99225]
