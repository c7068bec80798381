"""Recipe validation: every malformed recipe is exit 2 with one line naming the file and the key."""

from __future__ import annotations

import pytest

from lyrictool.cli import main

GOOD = """\
model: {name: "builtin:tiny-zh"}
data: {train: SONGS}
train: {max_steps: 2, learning_rate: 1.0e-3}
output_dir: OUT
"""


def run_main(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


@pytest.fixture()
def recipe_text(songs_file, tmp_path):
    return GOOD.replace("SONGS", str(songs_file)).replace("OUT", str(tmp_path / "out"))


MALFORMED = [
    # (description, transform of the good recipe text, substrings the one-line error must contain)
    ("misspelt train key", lambda t: t.replace("learning_rate", "learing_rate"),
     ["train.learing_rate", "did you mean learning_rate"]),
    ("unknown top-level key", lambda t: t + "epochs: 3\n", ["epochs", "unknown key"]),
    ("misspelt model key", lambda t: t.replace('name: "builtin:tiny-zh"', 'nme: "builtin:tiny-zh"'),
     ["model.nme", "did you mean name"]),
    ("bad attention", lambda t: t.replace('name: "builtin:tiny-zh"', 'name: "builtin:tiny-zh", attn: fast'),
     ["model.attn", "flash_attention_2"]),
    ("bad dtype", lambda t: t.replace('name: "builtin:tiny-zh"', 'name: "builtin:tiny-zh", dtype: float64'),
     ["model.dtype"]),
    ("bad quantization", lambda t: t.replace('name: "builtin:tiny-zh"', 'name: "builtin:tiny-zh", quantization: 3bit'),
     ["model.quantization"]),
    ("missing data file", lambda t: t.replace("train: /", "train: /nonexistent/"), ["data.train", "file not found"]),
    ("missing output_dir", lambda t: "\n".join(l for l in t.splitlines() if not l.startswith("output_dir")) + "\n",
     ["output_dir", "missing"]),
    ("negative learning rate", lambda t: t.replace("1.0e-3", "-0.001"), ["train.learning_rate", "> 0"]),
    ("wrong type", lambda t: t.replace("max_steps: 2", "max_steps: many"), ["train.max_steps"]),
    ("zero batch size", lambda t: t.replace("max_steps: 2", "max_steps: 2, per_device_train_batch_size: 0"),
     ["train.per_device_train_batch_size"]),
    ("eval_fraction out of range", lambda t: t.replace("data: {train: ", "data: {eval_fraction: 1.5, train: "),
     ["data.eval_fraction"]),
    ("bad hints mode", lambda t: t.replace("data: {train: ", "data: {hints: everywhere, train: "), ["data.hints"]),
    ("unknown control", lambda t: t.replace("data: {train: ", "data: {controls: [colour], train: "),
     ["data.controls"]),
    ("output_dir under train", lambda t: t.replace("max_steps: 2", "max_steps: 2, output_dir: x"),
     ["train.output_dir", "top level"]),
    ("seed not an int", lambda t: t + "seed: abc\n", ["seed"]),
    ("lora rank zero", lambda t: t.replace('name: "builtin:tiny-zh"', 'name: "builtin:tiny-zh", lora: {r: 0}'),
     ["model.lora.r"]),
    ("lora misspelt", lambda t: t.replace('name: "builtin:tiny-zh"', 'name: "builtin:tiny-zh", lora: {alhpa: 8}'),
     ["model.lora.alhpa", "did you mean alpha"]),
    ("yaml syntax", lambda t: t + "train: [unclosed\n", ["invalid YAML"]),
    ("not a mapping", lambda t: "- a\n- b\n", ["YAML mapping"]),
    ("empty recipe", lambda t: "", ["empty"]),
    ("unknown builtin model", lambda t: t.replace("builtin:tiny-zh", "builtin:huge"), ["model.name", "builtin"]),
    ("flash attention on CPU", lambda t: t.replace('name: "builtin:tiny-zh"',
                                                   'name: "builtin:tiny-zh", attn: flash_attention_2'),
     ["model.attn", "flash_attention_2 cannot run here"]),
    ("QLoRA without CUDA", lambda t: t.replace('name: "builtin:tiny-zh"',
                                               'name: "builtin:tiny-zh", quantization: 4bit, lora: {r: 4}'),
     ["model.quantization", "CUDA"]),
]


@pytest.mark.parametrize("desc,transform,expect", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_recipe_is_one_line_exit_2(desc, transform, expect, recipe_text, write_recipe, capsys):
    path = write_recipe(transform(recipe_text))
    code, out, err = run_main(["sft", str(path), "--dry-run"], capsys)
    assert code == 2, (desc, out, err)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for s in expect:
        assert s in err, (s, err)
    assert "yaml" in err  # names the recipe file


def test_yaml_error_names_the_line(recipe_text, write_recipe, capsys):
    path = write_recipe(recipe_text + "train: [unclosed\n")
    code, _, err = run_main(["sft", str(path), "--dry-run"], capsys)
    assert code == 2
    assert f"{path}:" in err


def test_dry_run_prints_resolved_recipe_and_loads_nothing(recipe_text, write_recipe, tmp_path, capsys):
    path = write_recipe(recipe_text)
    main(["sft", str(path), "--dry-run"])
    out = capsys.readouterr().out
    assert "recipe OK" in out and "learning_rate: 0.001" in out
    assert "train rows: 24" in out
    assert not (tmp_path / "out").exists()


def test_set_overrides_any_key_yaml_typed(recipe_text, write_recipe, capsys):
    path = write_recipe(recipe_text)
    main(["sft", str(path), "--dry-run", "--set", "train.learning_rate=5e-4", "--set", "model.lora.r=4",
          "--set", "data.hints=line_end", "--set", "seed=7"])
    out = capsys.readouterr().out
    assert "learning_rate: 0.0005" in out
    assert "r: 4" in out and "hints: line_end" in out and "seed: 7" in out


@pytest.mark.parametrize("override,expect", [
    ("train.learing_rate=1", "did you mean learning_rate"),
    ("model.attn=fast", "model.attn"),
    ("nokey", "key.path=value"),
    ("train.max_steps.x=1", "not a mapping"),
])
def test_set_is_validated_the_same_way(override, expect, recipe_text, write_recipe, capsys):
    path = write_recipe(recipe_text)
    code, _, err = run_main(["sft", str(path), "--dry-run", "--set", override], capsys)
    assert code == 2 and expect in err


def test_malformed_data_row_reports_path_and_line(write_jsonl, write_recipe, tmp_path, capsys):
    data = write_jsonl("bad.jsonl", [{"lyrics": "月光\n故乡"}, {"lyrics": "夏天\n蝉声"}], raw_lines=["{not json"])
    path = write_recipe(GOOD.replace("SONGS", str(data)).replace("OUT", str(tmp_path / "o")))
    code, _, err = run_main(["sft", str(path), "--dry-run"], capsys)
    assert code == 2 and f"{data}:3:" in err and "not valid JSON" in err


@pytest.mark.parametrize("row,expect", [
    ({"text": "月光"}, "missing field 'lyrics'"),
    ({"lyrics": ""}, "'lyrics' is empty"),
    ({"lyrics": "月光\n故乡", "controls": {"rhyme": "不存在"}}, "unknown rhyme"),
    ({"lyrics": "月光\n故乡", "controls": {"rhym": "江阳"}}, "did you mean rhyme"),
    ({"lyrics": "月光\n故乡", "controls": {"scheme": "AAB", "line_lengths": [2, 2]}}, "contradictory"),
])
def test_bad_lyrics_rows_are_reported_with_line(row, expect, write_jsonl, write_recipe, tmp_path, capsys):
    data = write_jsonl("rows.jsonl", [{"lyrics": "月光照\n故乡"}, row])
    path = write_recipe(GOOD.replace("SONGS", str(data)).replace("OUT", str(tmp_path / "o")))
    code, _, err = run_main(["sft", str(path), "--dry-run"], capsys)
    assert code == 2, err
    assert f"{data}:2:" in err and expect in err


def test_set_indexes_into_lists():
    from lyrictool.errors import UserError
    from lyrictool.recipes import apply_overrides

    data = {"systems": [{"model": "a"}, {"model": "b"}]}
    assert apply_overrides(data, ["systems.1.model=runs/x"])["systems"][1]["model"] == "runs/x"
    with pytest.raises(UserError, match="list of 2"):
        apply_overrides(data, ["systems.2.model=x"])


# ---- one precedence: defaults < recipe < --set < explicit flags ---------------------------------------------


def test_our_trl_defaults_are_in_the_dry_run_and_the_recipe_overrides_them(recipe_text, write_recipe, capsys):
    path = write_recipe(recipe_text.replace("train: {", "train: {save_strategy: steps, save_steps: 5, "))
    main(["sft", str(path), "--dry-run", "--set", "train.logging_steps=3"])
    out = capsys.readouterr().out
    assert "report_to: none" in out  # ours, shown although the recipe does not say it
    assert "save_strategy: steps" in out and "save_strategy: 'no'" not in out  # the recipe beats ours
    assert "logging_steps: 3" in out  # --set beats both


def test_the_written_recipe_yaml_has_the_resolved_train_section(recipe_text, write_recipe, tmp_path):
    import yaml

    from lyrictool.recipes import dump_recipe, load_recipe

    ppo = load_recipe(write_recipe(recipe_text), "ppo")
    assert yaml.safe_load(dump_recipe(ppo))["train"]["beta"] == 0.01  # ppo's own default, written down
    sft = yaml.safe_load(dump_recipe(load_recipe(write_recipe(recipe_text), "sft")))
    assert sft["train"]["save_strategy"] == "no" and sft["train"]["max_steps"] == 2 and "beta" not in sft["train"]


def test_a_flag_beats_recipe_and_set_without_touching_the_loaded_recipe(songs_file, write_recipe, tmp_path):
    from lyrictool.errors import UserError
    from lyrictool.recipes import load_recipe, with_flags

    path = write_recipe("model: {name: builtin:tiny-zh}\nport: 9000\nhost: 127.0.0.1\n")
    recipe = load_recipe(path, "serve", ["port=9001"])
    flagged = with_flags(recipe, {"port": 9002, "model.name": "runs/other", "host": None})
    assert (recipe.port, recipe.model.name) == (9001, "builtin:tiny-zh")  # the validated recipe is unchanged
    assert (flagged.port, flagged.model.name, flagged.host) == (9002, "runs/other", "127.0.0.1")
    with pytest.raises(UserError, match=rf"{path}: port: .*less than or equal to 65535"):
        with_flags(recipe, {"port": 70000})  # a flag is validated like the file


def test_eval_scheme_flag_beats_the_recipe(write_jsonl, write_recipe, tmp_path):
    from lyrictool.commands.eval import run_eval
    from lyrictool.recipes import load_recipe

    gens = write_jsonl("a.jsonl", [{"id": "1", "lyrics": "月光照\n故乡", "controls": {}}])
    path = write_recipe(f"systems: [{{name: a, generations: {gens}}}]\nscheme: zhonghua_xinyun\n"
                        f"output_dir: {tmp_path / 'ev'}\n")
    recipe = load_recipe(path, "eval")
    assert run_eval(recipe, [], fmt="json", scheme="final")["scheme"] == "final"
    assert run_eval(recipe, [], fmt="json")["scheme"] == "zhonghua_xinyun"
    assert recipe.scheme == "zhonghua_xinyun"


def test_a_recipe_one_command_builds_for_another_is_validated():
    from lyrictool.errors import UserError
    from lyrictool.recipes import SFTRecipe, derived_recipe

    sft = derived_recipe(SFTRecipe, "inject.yaml", data={"train": "builtin:demo-songs"}, output_dir="runs/x")
    assert sft.train["report_to"] == "none"  # the same resolved defaults as a loaded recipe
    with pytest.raises(UserError, match="inject.yaml: output_dir: empty output_dir"):
        derived_recipe(SFTRecipe, "inject.yaml", data={"train": "builtin:demo-songs"}, output_dir=" ")
