"""Fluency under a frozen reference model (lyrictool.eval.fluency): the per-song perplexity is the one a hand
computation from the model's logits gives, and `lyrictool eval` with a ``fluency`` section writes per-system
perplexity and per-pair ratios with their intervals (result.json, the table, the report), and names the key when
the reference model does not exist."""

from __future__ import annotations

import io
import json
import math

import pytest
from conftest import REPO, one_error_line, run_cli
from typer.testing import CliRunner

from lyrictool.cli import app
from lyrictool.errors import UserError
from lyrictool.recipes import load_recipe

DEMO = REPO / "lyrictool" / "data" / "demo" / "songs.jsonl"


def hand_nll(model, tokenizer, text: str, start: int) -> float:
    """Mean NLL per token of ``text`` + the end token after one ``start`` token, from one unpadded forward pass."""
    import torch

    ids = [start] + tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, dim=-1)
    return -sum(logp[i, ids[i + 1]].item() for i in range(len(ids) - 1)) / (len(ids) - 1)


@pytest.fixture(scope="module")
def tiny():
    from lyrictool.modeling import load_model
    from lyrictool.recipes import ModelSpec

    return load_model(ModelSpec(name="builtin:tiny-zh"), for_training=False, announce=False)


def test_perplexity_is_the_hand_computation_from_the_logits(tiny):
    """Batched with padding (songs of different lengths, an empty one) and sorted by length internally, each song's
    figure is still its own unpadded mean NLL, in the order given; a tokenizer without bos starts at the end token."""
    from lyrictool.eval.fluency import lyrics_nll, sung_lines, token_sequences

    model, tok = tiny.model, tiny.tokenizer
    assert tok.bos_token_id is None
    songs = ["[Verse]\n春风吹〔中东〕\n杨柳青\n\n[Chorus]\n我们一起回家", "", "月亮弯弯挂天上\n照在小河旁"]
    texts = [sung_lines(s) for s in songs]
    assert texts[0] == "春风吹\n杨柳青\n我们一起回家"  # section tags and hints are not sung
    got = lyrics_nll(model, tok, texts, batch_size=2)
    want = [hand_nll(model, tok, t, tok.eos_token_id) for t in texts]
    assert got == pytest.approx(want, abs=1e-4)
    assert len({round(x, 4) for x in got}) == 3
    seqs = token_sequences(tok, texts)
    assert seqs[1] == [tok.eos_token_id, tok.eos_token_id]  # an empty song: scored on stopping at once


def test_exactly_one_bos_where_the_tokenizer_adds_its_own(tiny):
    """A tokenizer that puts <bos> first by itself (Gemma's, Llama's) must not give the scored text a second one."""
    from tokenizers import processors

    from lyrictool.eval.fluency import lyrics_nll, token_sequences

    model, tok = tiny.model, tiny.tokenizer
    bos = tok.convert_tokens_to_ids("<|im_start|>")
    saved = tok.backend_tokenizer.post_processor, tok.bos_token
    try:
        tok.bos_token = "<|im_start|>"
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single="<|im_start|> $A", special_tokens=[("<|im_start|>", bos)])
        assert tok("春风")["input_ids"][0] == bos  # the tokenizer adds it on its own
        (seq,) = token_sequences(tok, ["春风\n杨柳"])
        assert seq[0] == bos and seq.count(bos) == 1 and seq[-1] == tok.eos_token_id
        assert lyrics_nll(model, tok, ["春风\n杨柳"]) == pytest.approx([hand_nll(model, tok, "春风\n杨柳", bos)],
                                                                      abs=1e-4)
    finally:
        tok.backend_tokenizer.post_processor, tok.bos_token = saved


@pytest.fixture()
def paired_files(tmp_path):
    """Six demo songs as a prompt file, the songs themselves, and the same songs with every line sung twice."""
    rows = [json.loads(line) for line in DEMO.read_text(encoding="utf-8").splitlines()[:6]]
    prompts, good, looped = tmp_path / "prompts.jsonl", tmp_path / "good.jsonl", tmp_path / "looped.jsonl"
    prompts.write_text("".join(json.dumps({"id": r["id"], "controls": r["controls"]}, ensure_ascii=False) + "\n"
                               for r in rows), encoding="utf-8")
    good.write_text("".join(json.dumps({"id": r["id"], "controls": r["controls"], "lyrics": r["lyrics"]},
                                       ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    looped.write_text("".join(json.dumps({"id": r["id"], "controls": r["controls"], "lyrics": "\n".join(
        line for line in r["lyrics"].splitlines() for _ in (0, 1) if line)}, ensure_ascii=False) + "\n"
        for r in rows), encoding="utf-8")
    return prompts, good, looped


def test_eval_writes_perplexity_and_ratios_with_intervals(tmp_path, paired_files, tiny):
    from lyrictool.eval.fluency import lyrics_nll, sung_lines

    prompts, good, looped = paired_files
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(f"""systems:
  - {{name: good, generations: {good}}}
  - {{name: looped, generations: {looped}}}
prompts: {prompts}
fluency: {{model: builtin:tiny-zh, batch_size: 4}}
bootstrap_resamples: 200
output_dir: {tmp_path / 'out'}
""", encoding="utf-8")
    report = tmp_path / "report.html"
    res = CliRunner().invoke(app, ["eval", str(recipe), "--report", str(report)])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "out" / "result.json").read_text(encoding="utf-8"))
    from rich.console import Console

    from lyrictool.eval.tables import comparison_table

    wide = Console(width=200, record=True, file=io.StringIO())
    wide.print(comparison_table(result))  # the table eval prints, unwrapped
    table = wide.export_text()
    assert "perplexity (builtin:tiny-zh)" in table and "repeated_lines" in table
    r = result["comparison"]["pairs"][0]["fluency"]
    assert f"×{r['ratio']:.2f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]" in table
    assert result["fluency"]["model"] == "builtin:tiny-zh" and result["fluency"]["songs"] == 12
    gens = {n: [json.loads(x) for x in (tmp_path / "out" / "generations" / f"{n}.jsonl").read_text().splitlines()]
            for n in ("good", "looped")}
    # each song's figure is lyrics_nll of its sung lines under the reference model
    songs = [json.loads(x)["lyrics"] for x in good.read_text(encoding="utf-8").splitlines()]
    want = lyrics_nll(tiny.model, tiny.tokenizer, [sung_lines(s) for s in songs])
    assert [g["fluency"]["log_ppl"] for g in gens["good"]] == pytest.approx(want, abs=1e-4)
    logs = {n: [g["fluency"]["log_ppl"] for g in rows] for n, rows in gens.items()}
    for name, system in result["systems"].items():
        f = system["fluency"]
        assert f["n"] == 6 and f["ci_low"] < f["perplexity"] < f["ci_high"]
        assert f["perplexity"] == pytest.approx(math.exp(sum(logs[name]) / 6))  # the geometric mean
    (pair,) = result["comparison"]["pairs"]
    r = pair["fluency"]
    diffs = [b - a for a, b in zip(logs["good"], logs["looped"])]
    assert r["n"] == 6 and r["ratio"] == pytest.approx(math.exp(sum(diffs) / 6))
    assert r["ci_low"] <= r["ratio"] <= r["ci_high"]
    # every line sung twice: half the lines repeat, and the difference is real
    assert result["systems"]["looped"]["metrics"]["repeated_lines"] == 0.5
    assert result["systems"]["good"]["metrics"]["repeated_lines"] == 0.0
    assert pair["metrics"]["repeated_lines"]["diff"] == 0.5 and pair["metrics"]["repeated_lines"]["significant"]
    html = report.read_text(encoding="utf-8")
    assert "perplexity (builtin:tiny-zh)" in html and "×" in html and "repeated_lines" in html


def test_fluency_model_null_is_the_baseline_systems_model(tmp_path, paired_files):
    prompts, good, _ = paired_files
    body = f"systems:\n  - {{name: base, model: builtin:tiny-zh}}\n  - {{name: good, generations: {good}}}\n" \
           f"prompts: {prompts}\nfluency: {{}}\n"
    (tmp_path / "a.yaml").write_text(body, encoding="utf-8")
    assert load_recipe(tmp_path / "a.yaml", "eval").fluency_model().name == "builtin:tiny-zh"
    (tmp_path / "b.yaml").write_text(body + "baseline: good\n", encoding="utf-8")
    with pytest.raises(UserError, match="fluency.model: null means the baseline system's model"):
        load_recipe(tmp_path / "b.yaml", "eval")
    (tmp_path / "c.yaml").write_text(body.replace("fluency: {}", "fluency: {model: {name: builtin:tiny-zh, lora: "
                                                                 "{r: 4}}}"), encoding="utf-8")
    with pytest.raises(UserError, match="fluency.model.*only read, never trained"):
        load_recipe(tmp_path / "c.yaml", "eval")


def test_a_missing_reference_model_is_one_line_naming_the_key_before_any_sampling(tmp_path, paired_files):
    prompts, _, _ = paired_files
    recipe = tmp_path / "eval.yaml"
    body = f"systems:\n  - {{name: base, model: builtin:tiny-zh}}\nprompts: {prompts}\n" \
           f"fluency: {{model: builtin:no-such-model}}\noutput_dir: {tmp_path / 'out'}\n"
    recipe.write_text(body, encoding="utf-8")
    err = one_error_line(run_cli("eval", str(recipe)))
    assert "fluency.model: unknown builtin model 'builtin:no-such-model'" in err and "model.name" not in err
    assert not (tmp_path / "out").exists()  # nothing sampled
    from lyrictool.commands.eval import run_eval

    recipe.write_text(body.replace("builtin:no-such-model", "./no-such-folder"), encoding="utf-8")
    with pytest.raises(UserError, match=r"eval.yaml: fluency.model: no such model folder: ./no-such-folder"):
        run_eval(load_recipe(recipe, "eval"), [])
    assert not (tmp_path / "out").exists()
