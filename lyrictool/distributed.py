"""Several processes: who writes, who waits, and the steps a sharded model needs before it can be used whole.

The training commands run unchanged under ``torchrun`` / ``accelerate launch``; this module holds the few
things that differ when parameters are spread over processes (FSDP1, FSDP2 ``fully_shard``, DeepSpeed ZeRO-3):

- :func:`full_params`: a context in which the model holds its full parameters (FSDP1 ``summon_full_params``,
  FSDP2 ``unshard`` of every sharded module), e.g. for after-training generation.  Collective: every rank
  enters it.  Under ZeRO-3 nothing is gathered; every rank generates and transformers syncs the steps
  (``synced_gpus``), see :func:`generate_on_every_rank`.
- :func:`full_state_dict`: the whole model's weights on the main process (CPU), gathered from the shards.
- :func:`merged_lora_model`: a LoRA model merged into plain weights on the main process, built from the
  gathered state dict on a fresh unwrapped copy (never ``merge_and_unload`` on sharded modules).
- :func:`barrier`, :func:`is_main_process`, :func:`world_size`: main-process-only writes, then a barrier,
  then the other ranks read.

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


def barrier() -> None:
    """Wait for every process (no-op in a single process).  Starts the process group if the launcher set one
    up but nothing has joined it yet (accelerate's ``PartialState``, the one the TRL trainers use)."""
    if world_size() <= 1:
        return
    import torch.distributed as dist

    if not dist.is_available():
        return
    if not dist.is_initialized():
        from accelerate import PartialState

        PartialState()
    dist.barrier()


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


def generate_on_every_rank(model) -> bool:
    """Whether after-training generation must run on every rank: under ZeRO-3 each forward pass gathers
    parameters collectively (transformers turns on ``synced_gpus`` itself), so a main-only generate hangs."""
    return sharding(model) == "zero3"


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
    merged.generation_config = base.generation_config
    return merged.eval()
