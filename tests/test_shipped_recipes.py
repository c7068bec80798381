"""Every recipe we ship loads: the CPU ones pass --dry-run as they are, the GPU ones validate their schema and
TRL keys (their data files and models live on the user's GPU box, so those are swapped for builtins here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from lyrictool.cli import main
from lyrictool.recipes import RECIPES, load_recipe

TINY = sorted((REPO / "recipes" / "tiny").glob("*.yaml"))
GPU = sorted((REPO / "recipes").glob("*.yaml")) + sorted((REPO / "recipes" / "safety").glob("*.yaml"))


def command_of(path: Path) -> str:
    """The command a recipe file is for: its name, or the command its name starts with (score-judge -> score)."""
    name = path.stem
    if name == "lyrics":
        return "sft"
    if name not in RECIPES and name.rsplit("-", 1)[0] in RECIPES:  # score-safety.yaml: a second score recipe
        return name.rsplit("-", 1)[0]
    return name


def test_every_command_has_a_tiny_and_a_gpu_recipe():
    tiny = {command_of(p) for p in TINY}
    gpu = {command_of(p) for p in GPU}
    for command in RECIPES:
        assert command in tiny, f"recipes/tiny/{command}.yaml missing"
        assert command in gpu, f"recipes/{command}.yaml (GPU) missing"


@pytest.mark.parametrize("path", [p for p in TINY if command_of(p) not in ("serve", "eval")], ids=lambda p: p.name)
def test_tiny_recipe_dry_run(path, capsys):
    main([command_of(path), str(path), "--dry-run"])
    assert "recipe OK" in capsys.readouterr().out


@pytest.mark.parametrize("path", GPU, ids=lambda p: p.name)
def test_gpu_recipe_schema_and_trl_keys(path, tmp_path):
    import yaml

    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    overrides = []
    data = raw.get("data")
    if isinstance(data, dict):
        for key in ("train", "eval"):
            src = data.get(key)
            if isinstance(src, str) and not src.startswith("builtin:") and not Path(src).exists():
                overrides.append(f"data.{key}=builtin:demo-songs")
    recipe = load_recipe(path, command_of(path), overrides)
    assert recipe is not None


def test_accelerate_configs_parse():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {load_config_from_file(str(p)).distributed_type.value
             for p in (REPO / "recipes" / "accelerate").glob("*.yaml")}
    assert {"DEEPSPEED", "FSDP", "MULTI_GPU"} <= kinds


def test_gpu_training_recipes_start_from_folders_a_shipped_recipe_writes():
    """A GPU training recipe's local model folder is some shipped recipe's output_dir, and a recipe that trains a new
    LoRA starts from a full model (not a LoRA adapter folder, which a new adapter cannot stack on)."""
    import yaml

    raw = {str(p.relative_to(REPO / "recipes")): yaml.safe_load(p.read_text(encoding="utf-8")) for p in GPU}
    writers = {r["output_dir"]: name for name, r in raw.items() if "output_dir" in r}
    for name, r in raw.items():
        model = (r.get("model") or {}).get("name", "")
        if not model.startswith("runs/"):
            continue
        assert model in writers, f"{name}: model.name {model} is not the output_dir of any recipe in recipes/"
        writer = raw[writers[model]]
        writes_adapter = command_of(REPO / "recipes" / writers[model]) in ("sft", "dpo", "ppo") and \
            (writer.get("model") or {}).get("lora") is not None
        if (r.get("model") or {}).get("lora") is not None and command_of(REPO / "recipes" / name) != "rejection-sample":
            assert not writes_adapter, f"{name} trains a LoRA on {model}, a LoRA adapter folder ({writers[model]})"


def test_docs_name_the_accelerate_configs_that_exist():
    import re

    for doc in [REPO / "README.md", *(REPO / "docs").glob("*.md"), *GPU]:
        for ref in re.findall(r"recipes/accelerate/[\w.-]+\.yaml", doc.read_text(encoding="utf-8")):
            assert (REPO / ref).exists(), f"{doc.name} names {ref}, which does not exist"


def test_a_new_lora_is_not_stacked_on_an_adapter_folder(tmp_path):
    from lyrictool.errors import UserError
    from lyrictool.modeling import peft_config
    from lyrictool.recipes import ModelSpec

    (tmp_path / "adapter_config.json").write_text("{}")
    spec = ModelSpec(name=str(tmp_path), lora={"r": 4})
    with pytest.raises(UserError, match="is a LoRA adapter folder"):
        peft_config(spec)
    assert peft_config(spec, check_start=False) is not None  # rejection-sample merges it first
    assert peft_config(ModelSpec(name=str(tmp_path))) is None  # no new LoRA: nothing stacks
