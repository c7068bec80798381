"""GGUF checkpoints as model.name: a small GGUF written here (gguf's own writer), converted once into the cache as a
plain Hugging Face folder that computes what the source model computes and tokenises as the source tokenizer does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("gguf")

TEXT = "月光洒满小村庄，晚风吹过稻花香。hello world 12"

# the model's shape (Qwen2, tied embeddings), small enough to write in a second
SHAPE = {"hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 2,
         "num_key_value_heads": 1, "max_position_embeddings": 512, "rms_norm_eps": 1e-6, "rope_theta": 1e6}
LAYER_NAMES = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
               "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
               "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def byte_level_tokenizer():
    """A byte-level BPE split as Qwen2's (the GGUF says pre-tokenizer 'qwen2'), trained on a few Chinese lines."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    corpus = ["月光洒满小村庄", "晚风吹过稻花香", "我在远方想故乡", "hello world", TEXT] * 20
    tk.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>")


def write_gguf(path: Path):
    """A Qwen2-architecture GGUF (F32 tensors, byte-level 'gpt2' tokenizer) and the model and tokenizer it holds."""
    import gguf
    import numpy as np
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = byte_level_tokenizer()
    spec = json.loads(tok.backend_tokenizer.to_str())
    vocab = {t: i for t, i in spec["model"]["vocab"].items()}
    tokens = sorted(vocab, key=vocab.get)
    special = {t["content"] for t in spec["added_tokens"]}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(Qwen2Config(vocab_size=len(tokens), tie_word_embeddings=True, **SHAPE))
    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_context_length(SHAPE["max_position_embeddings"])
    w.add_embedding_length(SHAPE["hidden_size"])
    w.add_block_count(SHAPE["num_hidden_layers"])
    w.add_feed_forward_length(SHAPE["intermediate_size"])
    w.add_head_count(SHAPE["num_attention_heads"])
    w.add_head_count_kv(SHAPE["num_key_value_heads"])
    w.add_rope_freq_base(SHAPE["rope_theta"])
    w.add_layer_norm_rms_eps(SHAPE["rms_norm_eps"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in special else 1 for t in tokens])  # 3: control
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    w.add_eos_token_id(vocab["<|im_end|>"])
    w.add_pad_token_id(vocab["<|endoftext|>"])
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied
        if name in ("model.embed_tokens.weight", "model.norm.weight"):
            g = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}[name]
        else:
            parts = name.split(".")
            g = f"blk.{parts[2]}.{LAYER_NAMES['.'.join(parts[3:-1])]}.{parts[-1]}"
        w.add_tensor(g, tensor.numpy().astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return model, tok


@pytest.fixture(scope="module")
def gguf_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    model, tok = write_gguf(folder / "tiny-qwen2.gguf")
    return folder / "tiny-qwen2.gguf", model, tok


def test_gguf_converts_once_into_a_plain_folder(gguf_file, tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lyrictool.checkpoints import gguf_cache_path
    from lyrictool.modeling import resolve_model_path

    monkeypatch.setenv("LYRICTOOL_CACHE", str(tmp_path))
    path, source, source_tok = gguf_file
    folder = Path(resolve_model_path(str(path)))
    assert folder == gguf_cache_path(path) and folder.parent == tmp_path / "gguf"
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]  # no temporary folder left
    config = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in config  # loads without gguf, saves, trains like any folder
    # the folder name carries the file's hash: a second resolve reuses it, also through the folder holding the file
    mtime = (folder / "model.safetensors").stat().st_mtime
    assert Path(resolve_model_path(str(path.parent))) == folder
    assert (folder / "model.safetensors").stat().st_mtime == mtime

    model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = source_tok(TEXT)["input_ids"]
    assert tok(TEXT)["input_ids"] == ids and tok.decode(ids) == TEXT
    with torch.no_grad():
        x = torch.tensor([ids])
        assert torch.allclose(model(x).logits, source(x).logits, atol=1e-5)
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_gguf_through_load_model_and_generation(gguf_file, tmp_path, monkeypatch):
    from lyrictool.generation import generate_texts
    from lyrictool.modeling import load_model
    from lyrictool.recipes import ModelSpec

    monkeypatch.setenv("LYRICTOOL_CACHE", str(tmp_path))
    lm = load_model(ModelSpec(name=str(gguf_file[0])), for_training=False)
    out = generate_texts(lm.model, lm.tokenizer, ["月光"], n=2, max_new_tokens=8, temperature=0.8, top_p=0.9, seed=0)
    assert len(out[0]) == 2 and all(0 < s.new_tokens <= 8 for s in out[0])


def test_gguf_faults_are_one_line(tmp_path, monkeypatch):
    from lyrictool.errors import UserError
    from lyrictool.modeling import resolve_model_path

    monkeypatch.setenv("LYRICTOOL_CACHE", str(tmp_path / "cache"))
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.gguf", "b.gguf"):
        (two / name).write_bytes(b"GGUF")
    with pytest.raises(UserError, match="holds 2 GGUF files"):
        resolve_model_path(str(two))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    with pytest.raises(UserError, match=r"^model.name: cannot convert .*bad.gguf"):
        resolve_model_path(str(bad))
    assert not any((tmp_path / "cache" / "gguf").iterdir())  # nothing half-written left behind
    # --dry-run checks the name without converting
    assert resolve_model_path(str(bad), convert=False) == str(bad)
