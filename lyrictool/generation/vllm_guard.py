"""The rhyme guard (:mod:`lyrictool.generation.guard`) as a vLLM logits processor, loaded by the engine by name
(:data:`lyrictool.generation.guard.VLLM_PROCESSOR`) when a recipe's sampling section says ``rhyme_guard: true``
and guarding the requests whose ``SamplingParams.extra_args`` carry :data:`~lyrictool.generation.guard.EXTRA_ARG`.
Imported only inside a vLLM engine."""

from __future__ import annotations

from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from lyrictool.generation.guard import EXTRA_ARG, guard_tables, mask_row


class RhymeGuardProcessor(AdapterLogitsProcessor):
    """Per request: the guard's rule on the request's generated token ids."""

    def __init__(self, vllm_config, device, is_pin_memory):
        super().__init__(vllm_config, device, is_pin_memory)
        from transformers import AutoTokenizer

        cfg = vllm_config.model_config
        self.tokenizer = AutoTokenizer.from_pretrained(cfg.tokenizer, trust_remote_code=cfg.trust_remote_code)

    def is_argmax_invariant(self) -> bool:
        return False  # it changes which token is most likely

    def new_req_logits_processor(self, params):
        if not (getattr(params, "extra_args", None) or {}).get(EXTRA_ARG):
            return None
        stops = [i for i in [self.tokenizer.eos_token_id, *(params.stop_token_ids or [])] if i is not None]
        tables = guard_tables(self.tokenizer, stops)

        def guard(out_ids, logits):
            found = tables.step(out_ids)
            return logits if found is None else mask_row(logits, *found)

        return guard
