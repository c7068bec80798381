"""The lyrics service: everything a request needs besides HTTP (limits, the backend, the queue, the rewards)."""

from __future__ import annotations

import asyncio
import time

from lyrictool.serve.backends import Backend, GenResult, GenRow
from lyrictool.serve.batching import BatchQueue, EngineQueue, Job, QueueClosed, QueueFull
from lyrictool.serve.config import ServeRecipe
from lyrictool.serve.errors import ApiError
from lyrictool.serve.metrics import Metrics
from lyrictool.serve.postprocess import LineAssembler


class LyricsService:
    """Everything a request needs besides HTTP: the recipe's limits, the backend, the queue, the rewards."""

    def __init__(self, recipe: ServeRecipe, backend: Backend, metrics: Metrics):
        self.recipe = recipe
        self.backend = backend
        self.metrics = metrics
        self.model_id = recipe.model_id()
        self.created = int(time.time())
        b = recipe.batching
        self.queue: BatchQueue | EngineQueue
        if getattr(backend, "continuous", False):  # vLLM batches by itself: admission and proxy only
            self.queue = EngineQueue(backend, max_batch_size=b.max_batch_size, max_queue=b.max_queue)
        else:
            self.queue = BatchQueue(backend, max_batch_size=b.max_batch_size, max_wait_ms=b.max_wait_ms,
                                    max_queue=b.max_queue, on_batch=metrics.on_batch)
        from lyrictool.recipes import recipe_source
        from lyrictool.rewards import Rewards, check_reward_specs

        check_reward_specs(recipe.rewards, where=recipe_source(recipe))
        # loads a scorer model, if listed
        self.rewards = Rewards(list(recipe.rewards), scheme=recipe.scheme, strictness=recipe.rhyme_strictness)

    # ---- checks -----------------------------------------------------------------------------------------------
    def token_limit(self, requested: int | None, param: str = "max_tokens") -> int:
        cap = self.recipe.limits.max_tokens
        if requested is None:
            return self.recipe.limits.default_max_tokens
        if requested > cap:
            raise ApiError(422, f"{param} {requested} exceeds this server's cap of {cap} (limits.max_tokens)",
                           param=param, code="max_tokens_too_large")
        return requested

    def check_count(self, value: int, cap: int, param: str, key: str) -> None:
        if value > cap:
            raise ApiError(422, f"{param} {value} exceeds this server's cap of {cap} (limits.{key})", param=param,
                           code=f"{param}_too_large")

    def check_prompt(self, prompt: str, max_tokens: int) -> int:
        tokens = self.backend.count_tokens(prompt)
        cap = self.recipe.limits.max_prompt_tokens
        if tokens > cap:
            raise ApiError(422, f"the prompt has {tokens} tokens; this server accepts at most {cap} "
                           "(limits.max_prompt_tokens)", param="messages", code="prompt_too_long")
        if tokens + max_tokens > self.backend.max_context:
            raise ApiError(422, f"prompt ({tokens} tokens) + max_tokens ({max_tokens}) exceeds the model's context "
                           f"of {self.backend.max_context} tokens; ask for fewer tokens", param="max_tokens",
                           code="context_length_exceeded")
        return tokens

    def sampling(self, temperature: float | None, top_p: float | None) -> tuple[float, float]:
        s = self.recipe.sampling
        return (s.temperature if temperature is None else temperature, s.top_p if top_p is None else top_p)

    # ---- generation -------------------------------------------------------------------------------------------
    def submit(self, rows: list[GenRow], temperature: float, top_p: float):
        try:
            return self.queue.submit(Job(rows=rows, temperature=temperature, top_p=top_p))
        except QueueFull as e:
            raise ApiError(429, f"the server is at capacity ({self.queue.max_queue} requests waiting); retry after "
                           f"{e.retry_after}s", type="rate_limit_error", code="queue_full",
                           headers={"Retry-After": str(e.retry_after)}) from None
        except QueueClosed:
            raise ApiError(503, "the server is shutting down; retry on another instance", type="server_error",
                           code="shutting_down", headers={"Retry-After": "1"}) from None

    async def wait(self, future, deadline: float) -> list[GenResult]:
        try:
            results = await asyncio.wait_for(asyncio.wrap_future(future), max(0.0, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            future.cancel()  # still queued: the worker skips it
            raise ApiError(504, f"generation did not finish within {self.recipe.limits.request_timeout_s:g}s "
                           "(limits.request_timeout_s); retry with fewer max_tokens or later", type="server_error",
                           code="timeout") from None
        self.metrics.tokens.inc(sum(r.new_tokens for r in results))
        return results

    async def generate(self, prompt: str, k: int, max_tokens: int, temperature: float, top_p: float,
                       stop: list[str] | None = None) -> tuple[list[LineAssembler], list[GenResult]]:
        """k samples for one prompt, post-processed."""
        deadline = time.monotonic() + self.recipe.limits.request_timeout_s
        outputs = [LineAssembler(stop) for _ in range(k)]
        rows = [GenRow(prompt, max_tokens, on_text=feeder(out)) for out in outputs]
        results = await self.wait(self.submit(rows, temperature, top_p), deadline)
        for out in outputs:
            out.finish()
        return outputs, results

    async def judge(self, texts: list[str], wanted: dict) -> list[dict]:
        """Per text: its ranking (``score``, ``rewards``) and analysis (``lines``, ``metrics``, ``controls_met``)."""
        from lyrictool.serve.postprocess import analyze

        scored = await asyncio.to_thread(self.rewards.score, [wanted] * len(texts), texts)
        out = []
        for text, reward in zip(texts, scored):
            analysis = await asyncio.to_thread(analyze, text, wanted, self.recipe.scheme)
            out.append({"score": round(reward.total, 6), "rewards": reward.as_dict()["rewards"], **analysis})
        return out

    async def expand(self, controls, expand: bool | None):
        """The expansion of a thin topic (rules and/or the model, as the recipe says), or None."""
        from lyrictool.serve.expansion import expand_by_rules, expansion_prompt, is_thin, parse_model_imagery

        spec = self.recipe.expansion
        if expand is False or spec.mode == "off" or not is_thin(controls.topic, spec.thin_max_chars):
            return None
        found = None
        if spec.mode in ("rules", "rules+model"):
            found = expand_by_rules(controls.topic, spec.max_items)
        if found is None and spec.mode in ("model", "rules+model"):
            prompt = self.backend.chat_prompt([{"role": "user",
                                                "content": expansion_prompt(controls.topic, spec.max_items)}])
            outs, _ = await self.generate(prompt, 1, 64, 0.7, 0.95)
            found = parse_model_imagery(outs[0].raw, controls.topic, spec.max_items)
        return found

    async def controls_prompt(self, controls, expand: bool | None):
        from lyrictool.controls import build_prompt

        expansion = await self.expand(controls, expand)
        prompted = controls.model_copy(update={"topic": expansion.expanded_topic}) if expansion else controls
        return build_prompt(prompted), expansion


def feeder(out: LineAssembler):
    def on_text(delta: str) -> bool:
        return out.feed(delta)[1]

    return on_text


def usage(prompt_tokens: int, results: list[GenResult]) -> dict:
    completion = sum(r.new_tokens for r in results)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


def finish_reason(out: LineAssembler, result: GenResult) -> str:
    return "stop" if out.stopped or result.finish_reason == "stop" else "length"
