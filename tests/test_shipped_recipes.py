"""Every recipe we ship loads: the CPU ones pass --dry-run as they are, the GPU ones validate their schema and
TRL keys (their data files and models live on the user's GPU box, so those are swapped for builtins here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from lyrictool.cli import main
from lyrictool.recipes import RECIPES, load_recipe

TINY = sorted((REPO / "recipes" / "tiny").glob("*.yaml"))
GPU = sorted((REPO / "recipes").glob("*.yaml"))


def command_of(path: Path) -> str:
    name = path.stem
    if name == "lyrics":
        return "sft"
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
