"""Every training command end to end in two CPU processes (DDP over gloo), through the launchers users use:
``torchrun --nproc_per_node 2`` and ``accelerate launch`` with the repo's own config.

Each run is 2-3 steps on the tiny model.  Checked: the run finishes, ``output_dir`` holds a model that loads and
generates (or scores), ``summary.json`` records world size 2, and no file is written by both ranks (every rank's
writes are recorded by tests/write_audit/sitecustomize.py).  Marked ``multiproc``: ``-m multiproc`` runs only these.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.multiproc

LORA = "model.lora={r: 4, alpha: 8, target_modules: [q_proj, v_proj]}"
TIMINGS: dict[str, float] = {}


def launch(command: str, recipe: str, out: Path, *overrides: str, launcher: str = "torchrun"):
    """Run ``lyrictool COMMAND RECIPE`` in two processes; returns its summary.json."""
    audit = out.parent / f"{out.name}-writes"
    audit.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "write_audit"), str(REPO),
                                                        os.environ.get("PYTHONPATH", "")]),
           "LYRICTOOL_WRITE_AUDIT": str(audit), "OMP_NUM_THREADS": "1"}
    if launcher == "torchrun":
        head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    else:
        head = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(REPO / "recipes/accelerate/multi_gpu.yaml"), "--num_processes", "2",
                "--main_process_port", "0"]
    args = [*head, "-m", "lyrictool", command, str(REPO / recipe), "--set", f"output_dir={out}"]
    for o in overrides:
        args += ["--set", o]
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    TIMINGS[f"{launcher} {command} {out.name}"] = round(time.perf_counter() - t0, 1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    writes = {r: {Path(p) for p in (audit / f"rank{r}.txt").read_text().splitlines()} for r in (0, 1)}
    both = {p for p in writes[0] & writes[1] if out in p.parents and not p.is_dir()}  # mkdir -p is harmless
    assert not both, f"written by both ranks: {sorted(map(str, both))}"
    assert any(out in p.parents for p in writes[0])
    return summary


def generates(folder: Path) -> str:
    """Load the saved model the way the next command would and generate a few tokens."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert (folder / "config.json").exists() and not (folder / "adapter_config.json").exists() or \
        (folder / "adapter_config.json").exists()
    if (folder / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(folder)
    else:
        model = AutoModelForCausalLM.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    ids = tok("月光", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids["input_ids"].shape[1] + 4
    return tok.decode(out[0])


SFT = ("train.max_steps=2", "train.per_device_train_batch_size=4", "train.logging_steps=1",
       "eval_generation.num_prompts=2", "eval_generation.max_new_tokens=12")


def test_sft_lora_two_processes(tmp_path):
    out = tmp_path / "sft-lora"
    summary = launch("sft", "recipes/tiny/sft.yaml", out, *SFT, LORA)
    assert summary["metrics"]["global_step"] == 2 and summary["model"]["lora"] is True
    assert summary["metrics"]["generation"]            # the main process generated after training
    generates(out)


def test_sft_full_two_processes(tmp_path):
    out = tmp_path / "sft-full"
    summary = launch("sft", "recipes/tiny/sft.yaml", out, *SFT)
    assert (out / "model.safetensors").exists() and summary["metrics"]["train_loss_first"] is not None
    generates(out)


def test_sft_through_accelerate_launch(tmp_path):
    out = tmp_path / "sft-accelerate"
    summary = launch("sft", "recipes/tiny/sft.yaml", out, *SFT, launcher="accelerate")
    assert summary["metrics"]["global_step"] == 2
    generates(out)


def test_inject_stage_hand_off_two_processes(tmp_path):
    out = tmp_path / "inject"
    stage = ("train.max_steps=2", "train.per_device_train_batch_size=4")
    summary = launch("inject", "recipes/tiny/inject.yaml", out, LORA, "qa_eval_max=2",
                             "knowledge.0.max_chars=20", "stages.1.skip=true",
                             *(f"stages.{i}.{s}" for i in (0, 2) for s in stage),
                             "stages.2.eval_generation.num_prompts=2", "stages.2.eval_generation.max_new_tokens=12")
    first, last = summary["stages"]
    # the utilize stage started from the merged memorize model the main process saved
    assert last["started_from"] == first["dir"] and last["start_fingerprint"] == first["end_fingerprint"]
    assert not (Path(first["dir"]) / "adapter_config.json").exists()
    generates(Path(first["dir"]))
    generates(out)


def test_score_two_processes(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path / "score"
    summary = launch("score", "recipes/tiny/score.yaml", out, LORA, "train.max_steps=2",
                        "train.per_device_train_batch_size=4", "train.logging_steps=1")
    m = summary["metrics"]
    assert m["pairwise_accuracy"] is not None and m["pairwise_accuracy_before"] is not None
    assert not (out / "adapter_config.json").exists()      # merged: a plain scorer folder
    model = AutoModelForSequenceClassification.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        assert model(**tok("月光洒满小村庄", return_tensors="pt")).logits.shape == (1, 1)


def test_dpo_two_processes(tmp_path):
    out = tmp_path / "dpo"
    summary = launch("dpo", "recipes/tiny/dpo.yaml", out, "train.max_steps=2",
                        "train.per_device_train_batch_size=2", "train.logging_steps=1", "margin_pairs=4")
    margins = summary["metrics"]["logprob_margin"]
    assert set(margins) == {"before", "after", "heldout"} and margins["before"]["margin"] != margins["after"]["margin"]
    assert set(margins["heldout"]) >= {"before", "after"}  # the held-out pairs are measured under DDP too
    generates(out)


def test_ppo_two_processes(tmp_path):
    out = tmp_path / "ppo"
    summary = launch("ppo", "recipes/tiny/ppo.yaml", out, "train.max_steps=2", "train.num_generations=2",
                        "train.per_device_train_batch_size=2", "train.max_completion_length=8",
                        "train.logging_steps=1", "eval_generation.num_prompts=2", "eval_generation.max_new_tokens=8")
    assert summary["metrics"]["global_step"] == 2
    assert set(summary["metrics"]["generation"]) == {"before", "after"}
    generates(out)


def test_rejection_sample_two_processes(tmp_path):
    out = tmp_path / "rs"
    summary = launch("rejection-sample", "recipes/tiny/rejection-sample.yaml", out, LORA,
                             "data.max_rows=4", "sampling.k=2", "sampling.max_new_tokens=12", "rounds=1",
                             "train.max_steps=2", "train.per_device_train_batch_size=2")
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted({r["id"] for r in rows}) and len(rows) == 4  # sampled once
    # both ranks sampled their half of the prompts; the main process merged the halves and the parts are gone
    sampling = summary["metrics"]["rounds"][0]["sampling"]
    assert [(x["rank"], x["prompts"], x["candidates"]) for x in sampling["ranks"]] == [(0, 2, 4), (1, 2, 4)]
    assert sampling["candidates"] == 8 == sum(len(r["candidates"]) for r in rows)
    assert sampling["seconds"] == max(x["seconds"] for x in sampling["ranks"]) > 0
    assert not list(out.glob("samples.rank*"))
    from lyrictool.recipes import load_recipe
    from lyrictool.train.rejection_sample import load_prompts

    recipe = load_recipe(REPO / "recipes/tiny/rejection-sample.yaml", "rejection-sample", ["data.max_rows=4"])
    assert [r["id"] for r in rows] == [p.id for p in load_prompts(recipe)]  # merged in prompt order
    assert summary["metrics"]["rounds"][0]["finetune"]["global_step"] == 2
    assert not (out / "adapter_config.json").exists()
    generates(out)


def test_zz_report_multiproc_timings(capsys):
    """Prints what the runs above cost (seen with -s)."""
    with capsys.disabled():
        for k, v in TIMINGS.items():
            print(f"  {k}: {v} s")
        print(f"  multiproc runs: {sum(TIMINGS.values()):.1f} s in all")


def launch_eval(out: Path, prompts: int, *overrides: str, python: str = sys.executable, nproc: int = 2) -> dict:
    """``lyrictool eval recipes/tiny/eval.yaml`` on the tiny model (no scorer) in ``nproc`` processes; returns the
    generations rows and each rank's recorded writes."""
    audit = out.parent / f"{out.name}-writes"
    audit.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests" / "write_audit"), str(REPO),
                                                        os.environ.get("PYTHONPATH", "")]),
           "LYRICTOOL_WRITE_AUDIT": str(audit), "OMP_NUM_THREADS": "1"}
    head = [python, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 \
        else [python]
    args = [*head, "-m", "lyrictool", "eval", str(REPO / "recipes/tiny/eval.yaml"), "--set", f"output_dir={out}",
            "--set", "scorer=null", "--set", "systems=[{name: base, model: builtin:tiny-zh}]",
            "--set", f"generation.num_prompts={prompts}", "--set", "generation.max_new_tokens=12",
            "--set", "generation.batch_size=2"]
    for o in overrides:
        args += ["--set", o]
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    TIMINGS[f"eval x{nproc} {out.name}"] = round(time.perf_counter() - t0, 1)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    rows = [json.loads(line) for line in (out / "generations" / "base.jsonl").read_text().splitlines()]
    writes = {r: {Path(p) for p in (audit / f"rank{r}.txt").read_text().splitlines()} for r in range(nproc)} \
        if nproc > 1 else {}  # the audit records a launcher's ranks only
    return {"rows": rows, "writes": writes}


def test_eval_two_processes(tmp_path):
    """Each rank samples its share into its own part file; the main process alone writes the results, with every
    prompt once, in prompt order; the parts are gone."""
    out = tmp_path / "eval"
    run = launch_eval(out, 5)
    from lyrictool.eval.systems import load_prompts

    assert [r["id"] for r in run["rows"]] == [p["id"] for p in load_prompts("builtin:eval-prompts", 5)]
    assert all(r["lyrics"] for r in run["rows"])
    parts = {r: {p.name for p in run["writes"][r] if p.parent.name == "parts"} for r in (0, 1)}
    assert all(len(v) == 1 and next(iter(v)).endswith(f".rank{r}.jsonl") for r, v in parts.items())
    assert not any(p.name == "result.json" for p in run["writes"][1])
    assert (out / "result.json").exists() and not (out / "parts").exists()
