"""Several processes: who writes, who waits, and the steps a sharded model needs before it can be used whole.

The training commands run unchanged under ``torchrun`` / ``accelerate launch``; this module holds the few
things that differ when parameters are spread over processes (FSDP1, FSDP2 ``fully_shard``, DeepSpeed ZeRO-3):

- :func:`full_params`: a context in which the model holds its full parameters (FSDP1 ``summon_full_params``,
  FSDP2 ``unshard`` of every sharded module), e.g. for after-training generation.  Collective: every rank
  enters it.  Under ZeRO-3 nothing is gathered; every rank generates and transformers syncs the steps
  (``synced_gpus``), see :func:`generates_on_every_rank`.
- :func:`full_state_dict`: the whole model's weights on the main process (CPU), gathered from the shards.
- :func:`merged_lora_model`: a LoRA model merged into plain weights on the main process, built from the
  gathered state dict on a fresh unwrapped copy (never ``merge_and_unload`` on sharded modules).
- :func:`barrier`, :func:`is_main_process`, :func:`world_size`, :func:`rank`: main-process-only writes, then a
  barrier, then the other ranks read; :func:`gather_object`: every rank's small result (e.g. counts) on every rank.
- :func:`shutdown`: the end of a successful multi-process command (barrier, then leave the process group).

Domain-free (imports nothing of lyrictool); torch is imported only inside the functions.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def _group():
    """torch.distributed with the process group started, or None in a single process.  Starts the group if the
    launcher set one up but nothing has joined it yet (accelerate's ``PartialState``, the one the TRL trainers use;
    it also selects this rank's GPU, which NCCL collectives need)."""
    if world_size() <= 1:
        return None
    import torch.distributed as dist

    if not dist.is_available():
        return None
    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState()
    return dist


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    dist = _group()
    if dist is not None:
        dist.barrier()


def gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable, small: e.g. a rank's counts), in rank order, on every rank; ``[obj]`` in a
    single process.  Collective: every rank calls it, so it also waits for the slowest."""
    dist = _group()
    if dist is None:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def shutdown() -> None:
    """End a multi-process run cleanly: every rank waits for the others, then leaves the process group.

    Called once, after a command succeeded.  Without it a rank can reach interpreter exit while the group's
    background threads still run, and abort with ``terminate called without an active exception`` (SIGABRT),
    failing a run whose work was done.  Nothing happens in a single process or when no group was started.
    """
    import sys

    if world_size() <= 1 or "torch.distributed" not in sys.modules:
        return
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    dist.barrier()
    dist.destroy_process_group()


def _fsdp2_modules(model) -> list:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch < 2.6
        return []
    return [m for m in model.modules() if isinstance(m, FSDPModule)]


def _fsdp1_root(model):
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    if isinstance(model, FSDP):
        return model
    return None


def sharding(model) -> str:
    """How a model's parameters are held: ``fsdp1`` (an FSDP wrapper), ``fsdp2`` (``fully_shard`` modules),
    ``zero3`` (DeepSpeed ZeRO-3 parameters) or ``none`` (whole on every process, e.g. DDP)."""
    if _fsdp1_root(model) is not None or any(type(m).__name__ == "FullyShardedDataParallel"
                                             for m in model.modules()):
        return "fsdp1"
    if _fsdp2_modules(model):
        return "fsdp2"
    if any(hasattr(p, "ds_id") for p in model.parameters()):
        return "zero3"
    return "none"


def unwrap(model):
    """The plain module under DDP / FSDP1 wrappers (FSDP2 and ZeRO-3 shard in place: the model itself)."""
    while hasattr(model, "module") and type(model).__name__ in ("DistributedDataParallel", "FullyShardedDataParallel",
                                                                 "DeepSpeedEngine"):
        model = model.module
    return model


@contextmanager
def full_params(model):
    """Yield the plain model holding its full parameters, for generation or reading weights.

    Collective under FSDP: every rank must enter (and leave) it.  Inside, forward passes are local, so a
    main-process-only generate is fine.  The parameters are read-only here: changes are not written back to
    the shards.
    """
    kind = sharding(model)
    if kind == "fsdp1":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        with FSDP.summon_full_params(model, recurse=True, writeback=False):
            yield unwrap(model)
        return
    if kind == "fsdp2":
        modules = _fsdp2_modules(model)
        before = [_reshards_after_forward(m) for m in modules]
        for m in modules:
            m.set_reshard_after_forward(False, recurse=False)  # stay gathered across every decoding step
            m.unshard()
        try:
            yield model
        finally:
            for m, was in zip(modules, before):
                m.reshard()
                m.set_reshard_after_forward(was, recurse=False)
        return
    yield unwrap(model)


def _reshards_after_forward(module) -> bool:
    """FSDP2 has a setter but no getter for reshard_after_forward; read its param group (default: True)."""
    try:
        groups = module._get_fsdp_state()._fsdp_param_groups
        return any(g.post_forward_mesh_info is not None for g in groups) if groups else True
    except AttributeError:  # pragma: no cover - private API moved
        return True


def full_state_dict(model) -> dict[str, Any]:
    """The full state dict on the main process (on CPU); ``{}`` on the others.  Collective when sharded."""
    kind = sharding(model)
    if kind in ("fsdp1", "fsdp2"):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return sd if is_main_process() else {}
    if kind == "zero3":  # pragma: no cover - needs deepspeed
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            sd = {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()} \
                if is_main_process() else {}
        return sd
    if not is_main_process():
        return {}
    return {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}


def _original_class(module) -> type:
    """The model's own class: FSDP2 swaps in a subclass ``FSDP<Name>(FSDPModule, <Name>)``."""
    cls = type(module)
    if _fsdp2_modules(module) and module in _fsdp2_modules(module):
        return next(b for b in cls.__mro__[1:] if b.__name__ == cls.__name__.removeprefix("FSDP"))
    return cls


def merged_lora_model(model):
    """A plain model with the LoRA adapter merged, on the main process (CPU); None on the other ranks.

    Sharded or not, the weights are gathered into a full state dict, loaded into a fresh unwrapped copy of the
    peft model and merged there, so the training model is left as it was.  Collective when sharded.
    """
    import torch
    from peft import PeftModel, get_peft_model

    peft_model = unwrap(model)
    if not isinstance(peft_model, PeftModel):
        raise TypeError(f"merged_lora_model needs a peft model, got {type(peft_model).__name__}")
    sd = full_state_dict(model)
    if not is_main_process():
        return None
    base = peft_model.get_base_model()
    config = base.config
    dtype = next(iter(sd.values())).dtype if sd else torch.float32
    fresh = _original_class(base)._from_config(config, dtype=dtype)
    adapter = peft_model.active_adapter
    copy = get_peft_model(fresh, peft_model.peft_config[adapter], adapter_name=adapter)
    missing, unexpected = copy.load_state_dict(sd, strict=False)
    if unexpected or [k for k in missing if "lora_" in k]:
        raise RuntimeError(f"LoRA merge: state dict does not match the model (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")
    merged = copy.merge_and_unload()
    if base.can_generate():  # a causal LM keeps its sampling defaults; a scorer has none
        merged.generation_config = base.generation_config
    return merged.eval()


# --------------------------------------------------------------------------------------------------------------
# What the launcher or the recipe asks for, checked before the TRL config is built


def _flag(env, name: str) -> bool:
    return str(env.get(name, "false")).lower() in ("1", "true", "yes")


def sharding_request(train: dict, env=None) -> tuple[str | None, str | None]:
    """Which sharded backend the launcher or the recipe's ``train`` keys ask for, and who asks:
    ``("fsdp" | "deepspeed" | None, description)``."""
    env = os.environ if env is None else env
    if _flag(env, "ACCELERATE_USE_FSDP"):
        return "fsdp", "the launcher (accelerate's FSDP config, ACCELERATE_USE_FSDP)"
    if train.get("fsdp") not in (None, "", False, []):
        return "fsdp", f"train.fsdp: {train['fsdp']}"
    if _flag(env, "ACCELERATE_USE_DEEPSPEED"):
        return "deepspeed", "the launcher (accelerate's DeepSpeed config, ACCELERATE_USE_DEEPSPEED)"
    if train.get("deepspeed"):
        return "deepspeed", f"train.deepspeed: {train['deepspeed']}"
    return None, None


def sharding_problem(train: dict, *, cuda: bool, env=None) -> str | None:
    """Why FSDP / DeepSpeed asked for here would not be applied (None when it would).

    accelerate turns FSDP on only for GPU devices: on CPU (no CUDA, or ``use_cpu``) it trains plain DDP without a
    word, so the run would differ from what was asked.  DeepSpeed needs its package and GPUs.
    """
    import importlib.util

    kind, who = sharding_request(train, env)
    if kind is None:
        return None
    where = "this machine has no CUDA GPU" if not cuda else "train.use_cpu is true" if train.get("use_cpu") else None
    if kind == "deepspeed" and importlib.util.find_spec("deepspeed") is None:
        return f"{who} asks for DeepSpeed, but deepspeed is not installed (pip install deepspeed)"
    if where:
        name = "FSDP" if kind == "fsdp" else "DeepSpeed"
        return (f"{who} asks for {name}, but {where}: {name} runs on GPUs only (on CPU accelerate would silently "
                f"train plain DDP); launch with recipes/accelerate/multi_gpu.yaml or torchrun for DDP, or on GPUs")
    return None


def fsdp_activation_checkpointing(kwargs: dict, env=None) -> bool:
    """Under FSDP, turn a recipe's ``gradient_checkpointing`` into FSDP's own activation checkpointing.

    The trainer's checkpointing re-runs each layer's forward in backward outside FSDP's view, which all-gathers
    that layer's parameters once more; FSDP's checkpoint wrapper recomputes inside the already gathered unit.
    (transformers refuses both at once.)  Edits ``kwargs`` (the TRL config keys) and ``env`` (read by accelerate's
    FSDP plugin); returns whether it changed anything.
    """
    env = os.environ if env is None else env
    kind, _ = sharding_request(kwargs, env)
    asked = bool(kwargs.get("gradient_checkpointing")) or bool(kwargs.get("activation_checkpointing"))
    if kind != "fsdp" or not asked:
        return False
    kwargs["gradient_checkpointing"] = False
    kwargs.pop("activation_checkpointing", None)
    if isinstance(kwargs.get("fsdp_config"), dict) or kwargs.get("fsdp"):
        kwargs["fsdp_config"] = {**(kwargs.get("fsdp_config") or {}), "activation_checkpointing": True}
    env["FSDP_ACTIVATION_CHECKPOINTING"] = "true"
    return True


# --------------------------------------------------------------------------------------------------------------
# Trainer-level steps


def save_full_model(trainer, output_dir: str) -> None:
    """``trainer.save_model`` with whole weights in ``output_dir`` under every backend.

    Under FSDP a ``SHARDED_STATE_DICT`` setting (fast, resumable checkpoints) makes ``save_model`` write no model
    at all; the final save is switched to ``FULL_STATE_DICT`` (gathered to the main process, on CPU).  Collective.
    """
    plugin = getattr(getattr(getattr(trainer, "accelerator", None), "state", None), "fsdp_plugin", None)
    if getattr(trainer, "is_fsdp_enabled", False) and plugin is not None and \
            "FULL_STATE_DICT" not in str(plugin.state_dict_type):
        plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(output_dir)


def trainer_model(trainer):
    """The model to gather from: the FSDP1 wrapper when there is one (its root holds the embeddings), else the
    trainer's model (FSDP2 and ZeRO-3 shard it in place)."""
    wrapped = getattr(trainer, "model_wrapped", None)
    if wrapped is not None and type(wrapped).__name__ == "FullyShardedDataParallel":
        return wrapped
    return trainer.model


def generates_on_every_rank(trainer) -> bool:
    """After-training generation on every rank (sharded parameters: each forward is collective) or the main
    process only."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return True
    ds = getattr(getattr(getattr(trainer, "accelerator", None), "state", None), "deepspeed_plugin", None)
    return getattr(ds, "zero_stage", 0) == 3 or sharding(trainer_model(trainer)) != "none"
