"""The rhyme guard: after the model's own hint 〔G〕 only a character of group G may be sampled, then a line end."""

from __future__ import annotations

import pytest

from lyrictool.phonetics import rhyme_group

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["builtin:tiny-zh", "builtin:tiny-qwen"])
def loaded(request):
    """A character-level tokenizer (the tiny demo's) and a byte-level BPE one (Qwen's, as a GPU user has)."""
    from lyrictool.modeling import load_model
    from lyrictool.recipes import ModelSpec

    return load_model(ModelSpec(name=request.param), for_training=False)


def ids(tok, text):
    return tok(text, add_special_tokens=False)["input_ids"]


def test_tables_allow_the_hinted_group_then_a_line_end(loaded):
    from lyrictool.generation import stop_token_ids
    from lyrictool.generation.guard import guard_tables

    tok = loaded.tokenizer
    tables = guard_tables(tok, stop_token_ids(loaded.model, tok))  # the cached tables, as sampling uses
    after_hint = tables.allowed(ids(tok, "月光洒满了〔江阳〕"))
    assert after_hint, "some characters of 江阳 are in every Chinese vocabulary"
    chars = [tok.decode([i]) for i in after_hint]
    assert all(len(c) == 1 and rhyme_group(c) == "江阳" for c in chars)
    assert "光" in chars and "花" not in chars
    # under another scheme's name, that scheme's group (中华新韵 唐: ang iang uang, the same finals)
    assert sorted(tables.allowed(ids(tok, "我〔唐〕"))) == sorted(after_hint)
    # right after the guarded character: only a line end or a stop
    ends = tables.allowed(ids(tok, "月光洒满了〔江阳〕窗"))
    texts = {tok.decode([i]) for i in ends}
    assert "\n" in texts and tok.eos_token_id in ends and not any(c in "".join(texts) for c in "窗月光")
    # nothing else is constrained: no hint, a malformed or unknown hint, a character that is not the group's
    for free in ("月光洒满了", "月光〔江阳", "月光〔江羊〕", "月光〔江阳〕花", "〔江阳〕窗\n明天"):
        assert tables.allowed(ids(tok, free)) is None, free


def test_a_character_that_already_ended_a_line_is_discouraged(loaded):
    """"Rhymes" must not mean one character repeated: a group character that ended an earlier guarded line of the
    song is made REPEAT_PENALTY less likely (not forbidden: a chorus may come back word for word)."""
    import torch

    from lyrictool.generation.guard import REPEAT_PENALTY, guard_tables, mask_row

    tok = loaded.tokenizer
    tables = guard_tables(tok, [tok.eos_token_id])
    first = tables.allowed(ids(tok, "〔江阳〕"))
    used = tok.decode([first[0]])
    allowed, discouraged = tables.step(ids(tok, f"月光〔江阳〕{used}\n明月〔江阳〕"))
    assert allowed == first and discouraged == [first[0]]
    assert tables.step(ids(tok, "月光〔发花〕花\n明月〔江阳〕"))[1] == []  # another group's character: no matter
    scores = mask_row(torch.zeros(len(tok)), allowed, discouraged)
    assert scores[first[0]] == -REPEAT_PENALTY and scores[first[1]] == 0.0
    assert torch.isinf(scores).sum() == len(tok) - len(allowed)


def test_guarded_sampling_keeps_the_hinted_group(loaded):
    """A random model made to write a hint: unguarded, its next character is anything; guarded, always of 江阳, and
    the line ends there."""
    import torch
    from transformers import LogitsProcessor

    from lyrictool.generation import chat_prompt, generate_texts
    from lyrictool.lyrics import strip_generated_hints

    tok = loaded.tokenizer
    forced = ids(tok, "月光〔江阳〕")

    class WriteHint(LogitsProcessor):  # the first tokens of every sample are the hint, the rest is the model's
        def __init__(self, prompt_len):
            self.prompt_len = prompt_len

        def __call__(self, input_ids, scores):
            step = input_ids.shape[1] - self.prompt_len
            if step < len(forced):
                scores[:] = float("-inf")
                scores[:, forced[step]] = 0.0
            return scores

    prompt = chat_prompt(tok, "写一句押江阳辙的歌词")
    prompt_len = len(tok(prompt, add_special_tokens=False)["input_ids"]) + (1 if tok.bos_token_id is not None
                                                                            and getattr(tok, "add_bos_token", False)
                                                                            else 0)

    def sample(guard):
        torch.manual_seed(0)
        return generate_texts(loaded.model, tok, [prompt], n=12, max_new_tokens=len(forced) + 3, temperature=1.0,
                              top_p=1.0, seed=0, rhyme_guard=guard,
                              generate_kwargs={"logits_processor": [WriteHint(prompt_len)]})[0]

    def line_end(raw):
        after = raw.split("〕", 1)[1]
        return after[:1], after[1:2]

    free = [line_end(s.raw) for s in sample(False)]
    assert sum(rhyme_group(c) == "江阳" for c, _ in free if c) < len(free) / 2  # the random model does not rhyme
    guarded = sample(True)
    for s in guarded:
        assert s.raw.startswith("月光〔江阳〕"), s.raw
        char, nxt = line_end(s.raw)
        assert rhyme_group(char) == "江阳", s.raw
        assert nxt in ("", "\n") or nxt in "，。！？、；：…～~—,.!?;:'\"”’」』）)", s.raw
        assert s.text == strip_generated_hints(s.raw).strip() and "〔" not in s.text


def test_recipe_key_reaches_the_samplers(tmp_path):
    from lyrictool.generation import open_sampler
    from lyrictool.recipes import GenerationSpec, ModelSpec, load_recipe

    assert open_sampler(ModelSpec(), GenerationSpec(rhyme_guard=True)).rhyme_guard is True
    assert open_sampler(ModelSpec(), GenerationSpec()).rhyme_guard is False
    path = tmp_path / "sft.yaml"
    path.write_text("model: {name: builtin:tiny-zh}\ndata: {train: builtin:demo-songs}\n"
                    "output_dir: out\neval_generation: {rhyme_guard: true}\n", encoding="utf-8")
    assert load_recipe(path, "sft").eval_generation.rhyme_guard is True
