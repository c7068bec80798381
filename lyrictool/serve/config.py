"""The serve recipe: which model, where to listen, and the limits that keep the server up under load.

Imports only pydantic (through :mod:`lyrictool.recipes`), so ``lyrictool --help`` stays fast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from lyrictool.recipes import EngineSpec, ModelSpec, SchemeName, Strict, StrictnessName
from lyrictool.rewards import RewardSpec, default_rule_specs


class BatchingSpec(Strict):
    """How concurrent requests are batched: by serve's own queue (transformers: gathered into one ``generate``
    call) or by vLLM's scheduler (vllm: continuous batching, each sample joins the running batch at once)."""

    max_batch_size: int = Field(16, ge=1, le=1024,
                                description="Most sequences (requests x samples) in one forward pass; 1 = no batching. "
                                "With sampling.backend vllm: the engine's max_num_seqs.")
    max_wait_ms: float = Field(10.0, ge=0.0, le=10_000.0,
                               description="How long the first request of a batch waits for company (transformers "
                               "only: vLLM adds a request to the running batch at its next step).")
    max_queue: int = Field(256, ge=1, description="Requests waiting beyond this are refused with 429 + Retry-After "
                           "(vllm: requests in the engine, running or waiting).")


class LimitsSpec(Strict):
    """Caps a request cannot exceed (each violation is a 4xx with a message naming the cap)."""

    max_tokens: int = Field(512, ge=1, description="Largest max_tokens a request may ask for (422 above).")
    default_max_tokens: int = Field(160, ge=1, description="max_tokens when a request does not say.")
    max_n: int = Field(4, ge=1, description="Largest n (lyrics returned per request).")
    max_best_of: int = Field(8, ge=1, description="Largest best_of (candidates generated and ranked per request).")
    max_body_bytes: int = Field(65_536, ge=1024, description="Larger request bodies get 413.")
    max_prompt_tokens: int = Field(1024, ge=16, description="Longest prompt (after the chat template), in tokens.")
    request_timeout_s: float = Field(60.0, gt=0.0, description="A request not answered by then gets 504.")
    shutdown_timeout_s: float = Field(30.0, ge=0.0, description="On shutdown, how long in-flight requests may finish.")

    @model_validator(mode="after")
    def _default_within_cap(self) -> LimitsSpec:
        if self.default_max_tokens > self.max_tokens:
            raise ValueError(f"default_max_tokens ({self.default_max_tokens}) exceeds max_tokens "
                             f"({self.max_tokens})")
        return self


class SamplingSpec(EngineSpec):
    """The sampling backend, and the defaults for requests that do not set them."""

    temperature: float = Field(0.8, ge=0.0, le=2.0, description="Sampling temperature (0 = greedy).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling mass.")


class ExpansionSpec(Strict):
    """Query expansion: a thin topic ("夏天") becomes concrete imagery before generation."""

    mode: Literal["rules", "model", "rules+model", "off"] = Field(
        "rules", description="rules = the table shipped in lyrictool/serve/expansion.py; model = ask the served "
        "model for imagery; rules+model = the table first, the model for topics it does not know; off = never.")
    max_items: int = Field(6, ge=1, le=16, description="Most imagery items added to a topic.")
    thin_max_chars: int = Field(6, ge=1, le=40, description="A topic this short (in characters) counts as thin.")


class PagesSpec(Strict):
    """The browser pages (off by default: a server that only answers the API shows nothing else)."""

    playground: bool = Field(False, description="The playground at / (uses the public API; asks for the API key "
                             "when the server has one).")
    rate: bool = Field(False, description="The blind-rating page at /rate for a MOS study (rater links from "
                       "`lyrictool eval ... --mos-study`).")
    study: str | None = Field(None, description="The study database /rate serves (written by `lyrictool eval ... "
                              "--mos-study FILE.db`).")


class ServeRecipe(Strict):
    """`lyrictool serve`: an OpenAI-compatible lyrics server (see docs/serve.md)."""

    model: ModelSpec = Field(default_factory=ModelSpec, description="The model to serve (a trained run's folder).")
    served_model_name: str | None = Field(
        None, description="The id clients send as `model`; default: the model folder's name, or lyrictool-tiny.")
    host: str = Field("127.0.0.1", description="Bind address; 127.0.0.1 keeps the server private to this machine.")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 = any free port).")
    batching: BatchingSpec = Field(default_factory=BatchingSpec, description="Request batching.")
    limits: LimitsSpec = Field(default_factory=LimitsSpec, description="Request caps and timeouts.")
    sampling: SamplingSpec = Field(default_factory=SamplingSpec, description="Backend (transformers / vllm) and default sampling.")
    expansion: ExpansionSpec = Field(default_factory=ExpansionSpec, description="Query expansion of thin topics.")
    scheme: SchemeName = Field(
        "shisanzhe", description="Rhyme scheme used for the analysis and the controls check.")
    rhyme_strictness: StrictnessName = Field(
        "strict", description="near: the rhyme reward that ranks candidates also accepts near rhymes (人辰~中东).")
    rewards: list[RewardSpec] = Field(
        default_factory=default_rule_specs,
        description="How best_of candidates are ranked (lyrictool.rewards, as in rejection sampling): rule rewards, "
        "a trained scorer ({name: scorer, path: runs/score}), a safety blocklist with the LLaMA-2 override.")
    cpu_threads: int | None = Field(
        None, ge=1, description="torch intra-op threads when serving on CPU (default: torch's choice). Small models "
        "decode fastest on 1: per-token work is too small to split, and idle threads spin against other processes.")
    seed: int | None = Field(None, description="Seed the sampler once at start (reproducible single requests).")
    pages: PagesSpec = Field(default_factory=PagesSpec, description="Browser pages: the playground and /rate.")

    @model_validator(mode="before")
    @classmethod
    def _backend_moved(cls, data):
        if isinstance(data, dict) and "backend" in data:
            raise ValueError("backend: the key moved to sampling.backend (the same key as every recipe's "
                             "generation section), e.g. sampling: {backend: vllm}")
        return data

    def model_id(self) -> str:
        """The id clients must send as `model`."""
        if self.served_model_name:
            return self.served_model_name
        name = self.model.name
        if name.startswith("builtin:"):
            return "lyrictool-" + name.removeprefix("builtin:").split("-")[0]
        return name.rstrip("/").rsplit("/", 1)[-1] or name
