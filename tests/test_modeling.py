"""The built-in tiny model and model loading."""

from __future__ import annotations

import pytest

from lyrictool.errors import UserError
from lyrictool.recipes import ModelSpec


def test_tiny_model_is_small_real_and_deterministic(tiny_model_path):
    import torch
    from transformers import AutoModelForCausalLM

    from lyrictool.modeling import build_tiny_model, build_tiny_tokenizer, count_parameters

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    assert model.config.model_type == "llama"
    assert 1_000_000 <= count_parameters(model) <= 5_000_000
    rebuilt = build_tiny_model(build_tiny_tokenizer())
    for (n, a), (_, b) in zip(model.state_dict().items(), rebuilt.state_dict().items()):
        assert torch.equal(a, b), n  # seeded: identical on every machine


def test_tiny_tokenizer_round_trip_through_autotokenizer(tiny_model_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    text = "[Chorus]\n月光洒满〔江阳〕窗，Hello 2024！"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text)  # one character, one token
    assert tok.decode(ids) == text
    msgs = [{"role": "user", "content": "写一首歌"}, {"role": "assistant", "content": "月光"}]
    chat = tok.apply_chat_template(msgs, tokenize=False)
    assert chat.startswith("<|im_start|>user\n写一首歌<|im_end|>")
    assert tok.pad_token == "<|pad|>" and tok.eos_token == "<|im_end|>"


def test_tiny_model_save_load_generate(tiny_model_path, tmp_path):
    import torch

    from lyrictool.generation import generate_lyrics
    from lyrictool.modeling import load_model

    lm = load_model(ModelSpec())
    lm.model.save_pretrained(tmp_path / "m")
    lm.tokenizer.save_pretrained(tmp_path / "m")
    again = load_model(ModelSpec(name=str(tmp_path / "m")))
    for a, b in zip(lm.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)
    outs = generate_lyrics(again.model, again.tokenizer, [{"rhyme": "江阳"}, {"topic": "夏天"}], n=2,
                           max_new_tokens=12, seed=0)
    assert len(outs) == 2 and all(len(o) == 2 for o in outs)
    assert all(0 < s.new_tokens <= 12 for o in outs for s in o)
    # same seed, same samples
    outs2 = generate_lyrics(again.model, again.tokenizer, [{"rhyme": "江阳"}, {"topic": "夏天"}], n=2,
                            max_new_tokens=12, seed=0)
    assert [s.raw for o in outs for s in o] == [s.raw for o in outs2 for s in o]


def test_attention_choice_says_why():
    import torch

    from lyrictool.modeling import choose_attention

    auto = choose_attention("auto", torch.float32)
    assert auto.implementation in ("sdpa", "eager") and auto.reason
    assert choose_attention("eager", torch.float32).implementation == "eager"
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="flash_attention_2 cannot run here"):
            choose_attention("flash_attention_2", torch.bfloat16)


def test_quantization_needs_cuda_and_lora():
    import torch

    from lyrictool.modeling import check_model_spec

    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="needs a CUDA GPU"):
            check_model_spec(ModelSpec(quantization="4bit", lora={"r": 4}))
    with pytest.raises(UserError, match="no such model folder"):
        check_model_spec(ModelSpec(name="./does/not/exist"))


def test_bitsandbytes_not_imported_without_quantization():
    import subprocess
    import sys

    code = ("import sys\nfrom lyrictool.modeling import check_model_spec\nfrom lyrictool.recipes import ModelSpec\n"
            "check_model_spec(ModelSpec())\nprint('BNB', 'bitsandbytes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False).stdout
    assert "BNB False" in out


@pytest.mark.parametrize("broken", [True, False])
def test_flash_attn_is_detected_by_importing_it(broken, tmp_path, monkeypatch, caplog):
    """A flash_attn that is installed but does not import (a wheel built for another torch) is not chosen by auto."""
    import torch

    from lyrictool import modeling

    pkg = tmp_path / "flash_attn"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(
        "raise ImportError('flash_attn_2_cuda.so: undefined symbol: _ZN3c104cuda9SetDeviceEi')\n" if broken
        else "__version__ = '2.8.3'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(__import__("sys").modules, "flash_attn", raising=False)
    monkeypatch.setattr(modeling, "_FLASH_ATTN_PROBLEM", modeling._UNCHECKED)
    monkeypatch.setattr(modeling, "cuda_available", lambda: True)  # a GPU box, as far as the choice goes
    with caplog.at_level("WARNING", logger="lyrictool"):
        choice = modeling.choose_attention("auto", torch.bfloat16)
    if not broken:
        assert choice.implementation == "flash_attention_2"
        return
    assert choice.implementation == "sdpa"
    assert "does not import" in choice.reason and "undefined symbol" in choice.reason
    assert "--no-build-isolation" in caplog.text
    with pytest.raises(UserError, match="flash_attention_2 cannot run here: flash_attn is installed but does not"):
        modeling.choose_attention("flash_attention_2", torch.bfloat16)
