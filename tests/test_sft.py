"""SFT on the tiny model: the loss goes down, the run record is written, --resume continues, DDP works."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

from lyrictool.cli import main

RECIPE = """\
model: {{name: "builtin:tiny-zh"}}
data: {{train: {data}, eval_fraction: 0.2, hints: line_end}}
train: {{max_steps: {steps}, learning_rate: 3.0e-3, per_device_train_batch_size: 8, save_steps: {save},
        save_strategy: steps, use_cpu: true}}
output_dir: {out}
eval_generation: {{num_prompts: 2, max_new_tokens: 24}}
"""


def test_sft_lowers_loss_and_writes_run_record(songs_file, write_recipe, tmp_path):
    out = tmp_path / "run"
    path = write_recipe(RECIPE.format(data=songs_file, steps=12, save=100, out=out))
    main(["sft", str(path)])
    summary = json.loads((out / "summary.json").read_text())
    m = summary["metrics"]
    assert m["train_loss_last"] < m["train_loss_first"] - 1.0
    assert m["eval_loss"] is not None
    assert summary["command"] == "sft" and summary["versions"]["trl"]
    assert "rhyme_accuracy" in m["generation"] and m["generation"]["n"] == 2
    assert (out / "recipe.yaml").exists() and (out / "config.json").exists() and (out / "tokenizer.json").exists()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out)
    assert AutoTokenizer.from_pretrained(out).decode([100]) != ""


def test_sft_with_lora_saves_an_adapter(songs_file, write_recipe, tmp_path):
    out = tmp_path / "lora"
    path = write_recipe(RECIPE.format(data=songs_file, steps=3, save=100, out=out).replace(
        'name: "builtin:tiny-zh"', 'name: "builtin:tiny-zh", lora: {r: 4, alpha: 8}'))
    main(["sft", str(path)])
    assert (out / "adapter_config.json").exists()
    assert json.loads((out / "summary.json").read_text())["model"]["lora"] is True


def test_resume_continues_from_last_checkpoint(songs_file, write_recipe, tmp_path):
    out = tmp_path / "resume"
    first = write_recipe(RECIPE.format(data=songs_file, steps=4, save=2, out=out), "first.yaml")
    main(["sft", str(first)])
    assert (out / "checkpoint-4").exists()
    # The run is "interrupted" after step 4: the longer run resumes there instead of starting over.
    shutil.rmtree(out / "checkpoint-2")
    second = write_recipe(RECIPE.format(data=songs_file, steps=8, save=2, out=out), "second.yaml")
    main(["sft", str(second), "--resume"])
    state = json.loads((out / "checkpoint-8" / "trainer_state.json").read_text())
    steps_logged = [h["step"] for h in state["log_history"] if "loss" in h]
    assert steps_logged[-1] == 8
    assert steps_logged.count(1) == 1  # steps 1-4 come from the first run's state, not repeated


def test_resume_without_checkpoint_is_a_user_error(songs_file, write_recipe, tmp_path, capsys):
    path = write_recipe(RECIPE.format(data=songs_file, steps=2, save=100, out=tmp_path / "none"))
    with pytest.raises(SystemExit) as e:
        main(["sft", str(path), "--resume"])
    assert e.value.code == 2 and "no checkpoint" in capsys.readouterr().err


def test_ddp_two_processes_on_cpu(songs_file, write_recipe, tmp_path):
    out = tmp_path / "ddp"
    path = write_recipe(RECIPE.format(data=songs_file, steps=3, save=100, out=out))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "lyrictool", "sft", str(path)],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["metrics"]["global_step"] == 3
