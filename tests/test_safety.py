"""The safety data, LLaMA 2's safety rule (tau selection, whitening), Safe RLHF's multiplier, the safety scorer
through `lyrictool score`, a rejection-sampling round that uses it, and the bad inputs of a safety recipe."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from conftest import REPO, one_error_line, run_cli

from lyrictool import rewards as rw
from lyrictool.data import load_records, redteam
from lyrictool.errors import UserError

FLAMES = REPO.parent / "shared" / "data" / "safety" / "flames" / "Flames_1k_Chinese.jsonl"


# --------------------------------------------------------------------------------------------------------------
# The shipped data


def rows(name: str) -> list[dict]:
    return [r.data for r in load_records(f"builtin:safety-{name}")]


def test_shipped_safety_files_equal_a_fresh_generation():
    assert redteam.main(["--check"]) == 0


def test_prompts_are_tagged_and_split_by_prompt():
    prompts = rows("prompts")
    ids = [p["id"] for p in prompts]
    assert len(ids) == len(set(ids)) and len(prompts) >= 150
    assert all(isinstance(p["safety"], bool) and p["split"] in redteam.SPLITS for p in prompts)
    assert {p["category"] for p in prompts if p["safety"]} == set(redteam.REDTEAM)
    assert {p["category"] for p in prompts if not p["safety"]} == set(redteam.HARMLESS)
    split_of = {p["id"]: p["split"] for p in prompts}
    for split in redteam.SPLITS:
        for row in rows(f"lyrics-{split}") + rows(f"pairs-{split}"):
            assert split_of[row["prompt_id"]] == split  # every candidate and pair lives in its prompt's split
        cats = {p["category"] for p in prompts if p["split"] == split}
        assert cats == set(redteam.REDTEAM) | set(redteam.HARMLESS), split  # stratified: every category


def test_pairs_prefer_the_safe_lyric_with_margins_and_about_ten_percent_helpfulness():
    for split in redteam.SPLITS:
        pairs = rows(f"pairs-{split}")
        helpful = [p for p in pairs if p["rejected_kind"] == "refusal"]
        assert 0.07 <= len(helpful) / len(pairs) <= 0.13, (split, len(helpful), len(pairs))
        assert all(not p["safety"] and p["chosen_kind"] == "answer" and p["margin"] == 0.5 for p in helpful)
        for p in pairs:
            if p["safety"]:
                assert p["rejected_kind"] == "harmful" and p["chosen_kind"] in ("redirect", "refusal")
                assert p["margin"] in (0.5, 1.0)
    assert sum(len(rows(f"pairs-{s}")) for s in redteam.SPLITS) >= 500


def test_minors_requests_only_ever_get_refusals():
    lyrics = [r for s in redteam.SPLITS for r in rows(f"lyrics-{s}")]
    minors = [r for r in lyrics if r["category"] == "minors"]
    assert minors and all(r["kind"] == "refusal" and r["label"] == "safe" for r in minors)
    assert not [p for s in redteam.SPLITS for p in rows(f"pairs-{s}") if p["category"] == "minors"]
    assert "minors" not in {k for k, v in redteam.load_fragments()["categories"].items() if "harmful_1" in v}


def test_judge_lyrics_share_no_line_with_the_scorers():
    def lines(split):
        return {ln for r in rows(f"lyrics-{split}") if r["kind"] != "refusal"
                for ln in r["lyrics"].splitlines() if ln and not ln.startswith("[") and not ln.endswith("：")}

    scorer_side = lines("scorer") | lines("calibration")
    assert lines("judge") and not (lines("judge") & scorer_side)


def test_the_wheel_ships_every_builtin_data_file():
    import fnmatch
    import re

    from lyrictool.data import BUILTIN_SOURCES

    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")  # (tomllib is 3.11+; we support 3.10)
    section = re.search(r"\[tool\.setuptools\.package-data\]\s*lyrictool\s*=\s*\[(.*?)\]", text, re.DOTALL)
    globs = re.findall(r'"([^"]+)"', section.group(1))
    shipped = [*BUILTIN_SOURCES.values(), redteam.FRAGMENTS_PATH, redteam.SAFETY_DIR / "README.md"]
    for path in shipped:
        rel = Path(path).relative_to(REPO / "lyrictool").as_posix()
        assert Path(path).exists() and any(fnmatch.fnmatch(rel, g) for g in globs), rel


@pytest.mark.skipif(not FLAMES.exists(), reason="shared Flames data not present")
def test_flames_converter_makes_tagged_song_requests(tmp_path):
    out = tmp_path / "flames.jsonl"
    r = run_cli("data", "flames", str(FLAMES), "-o", str(out), "--n", "40", "--judge-share", "0.5")
    assert r.returncode == 0, r.stderr
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(got) == 40 and len({g["id"] for g in got}) == 40
    assert all(g["safety"] is True and g["category"].startswith("flames:") and g["source"] == "flames" for g in got)
    assert 15 <= sum(g["split"] == "judge" for g in got) <= 25
    first = json.loads(FLAMES.read_text(encoding="utf-8").splitlines()[int(got[0]["id"].split("-")[1]) - 1])
    assert first["prompt"] in got[0]["controls"]["topic"]  # the line the id names, wrapped into a song request
    assert redteam.flames_requests(FLAMES, 40) == redteam.flames_requests(FLAMES, 40)  # seeded


# --------------------------------------------------------------------------------------------------------------
# tau, whitening, the multiplier (pure)


def test_tau_is_the_largest_threshold_with_the_asked_precision():
    p = [0.05, 0.1, 0.2, 0.3, 0.6, 0.9]
    unsafe = [True, True, False, True, False, False]
    loose = rw.choose_tau(p, unsafe, 0.75)  # flags <= 0.3: 3 of 4 unsafe
    assert loose["tau"] == pytest.approx(0.45) and loose["precision"] == 0.75 and loose["recall"] == 1.0
    strict = rw.choose_tau(p, unsafe, 0.9)  # flags <= 0.1 only
    assert strict["tau"] == pytest.approx(0.15) and strict["precision"] == 1.0
    assert strict["recall"] == pytest.approx(2 / 3) and strict["flagged"] == 2
    with pytest.raises(ValueError, match="no threshold reaches precision 1"):
        rw.choose_tau([0.2, 0.3], [False, True], 1.0)


def test_running_whitening_matches_the_statistics_of_everything_seen():
    m = rw.RunningMoments()
    a, b = [1.0, 2.0, 4.0], [-3.0, 0.5]
    out = m.whiten(a)
    assert statistics.mean(out) == pytest.approx(0.0) and statistics.stdev(out) == pytest.approx(1.0)
    m.whiten(b)
    assert m.mean == pytest.approx(statistics.mean(a + b)) and m.std == pytest.approx(statistics.stdev(a + b))
    before = (m.count, m.mean, m.m2)
    assert m.whiten([10.0], update=False) == [pytest.approx((10.0 - m.mean) / m.std)]
    assert (m.count, m.mean, m.m2) == before  # evaluation samples do not move the statistics


def test_lagrange_multiplier_rises_while_the_cost_exceeds_the_threshold():
    rule = rw.SafetyRule(mode="lagrangian", cost_threshold=0.1, lambda_lr=0.5, lambda_max=2.0)
    assert rw.lagrange_step(0.0, 0.5, rule) == pytest.approx(0.2)
    assert rw.lagrange_step(0.2, 0.0, rule) == pytest.approx(0.15)
    assert rw.lagrange_step(0.01, 0.0, rule) == 0.0  # never below 0
    assert rw.lagrange_step(1.9, 1.0, rule) == 2.0  # at most lambda_max


# --------------------------------------------------------------------------------------------------------------
# The rule inside Rewards, with stand-in scorers (fixed raw scores by text; no model)


class FakeScorer:
    """Raw score: a number after '#' in the lyrics for the safety scorer, its length / 10 for the helpful one."""

    def __init__(self, path, key="path", batch_size=16, **_):
        self.path = str(path)

    def score(self, prompts, lyrics, progress=None):
        if self.path.endswith("safety"):
            return [float(t.split("#")[1]) if "#" in t else 3.0 for t in lyrics]
        return [len(t) / 10 for t in lyrics]


@pytest.fixture()
def fake_scorers(tmp_path, monkeypatch):
    for name in ("helpful", "safety"):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text("{}", encoding="utf-8")
        (d / "tokenizer.json").write_text("{}", encoding="utf-8")
    monkeypatch.setattr(rw, "Scorer", FakeScorer)
    return tmp_path / "helpful", tmp_path / "safety"


def specs(helpful, safety, **extra):
    return [{"name": "scorer", "path": str(helpful), "weight": 2.0}, {"name": "safety", "path": str(safety),
                                                                      "weight": 2.0},
            {"name": "format", "weight": 0.5}, *extra.get("more", [])]


def test_llama2_rule_chooses_the_safety_score_for_safety_prompts_and_low_safety(fake_scorers, tmp_path):
    helpful, safety = fake_scorers
    blocklist = tmp_path / "block.txt"
    blocklist.write_text("血洗\n", encoding="utf-8")
    r = rw.Rewards.from_specs(specs(helpful, safety, more=[{"name": "blocklist", "path": str(blocklist),
                                                             "weight": 0.0}]),
                              rule={"tau": 0.15, "whiten": False})
    song = "[Verse]\n月光洒满小村庄\n晚风吹过稻花香"
    cases = [  # (controls, lyrics, tag) -> the score the rule must take
        ({"topic": "故乡"}, song + "\n#2.0", None, "helpful"),          # sigmoid(2) = 0.88 >= tau
        ({"topic": "故乡"}, song + "\n#-2.5", None, "safety"),          # sigmoid(-2.5) = 0.076 < tau
        ({"topic": "故乡"}, song + "\n#2.0", True, "safety"),           # tagged in the data
        ({"topic": "血洗仇家"}, song + "\n#2.0", None, "safety"),      # the blocklist's prompt check
    ]
    scored = r.score([c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases])
    assert [s.chosen for s in scored] == [c[3] for c in cases]
    for (_, text, _, which), s in zip(cases, scored):
        raw = float(text.split("#")[1]) if which == "safety" else len(text) / 10
        fmt = s.components["format"]
        assert s.model == pytest.approx(raw, abs=1e-6)  # logit(sigmoid(raw)) = raw: LLaMA 2's LOGIT
        assert s.total == pytest.approx(2.0 * raw + 0.5 * fmt, abs=1e-5)  # weight x chosen + rule rewards
    assert r.rule_report()["tau"] == {"tau": 0.15, "source": "recipe"}


def test_llama2_rule_whitens_the_chosen_score_before_the_sum(fake_scorers):
    helpful, safety = fake_scorers
    r = rw.Rewards.from_specs(specs(helpful, safety), rule={"tau": 0.5})
    texts = [f"歌词\n#{x}" for x in (1.0, 2.0, 4.0, -1.0)]
    scored = r.score([{}] * 4, texts)
    models = [s.model for s in scored]
    assert statistics.mean(models) == pytest.approx(0.0, abs=1e-9) and statistics.stdev(models) == pytest.approx(1)
    assert [s.chosen for s in scored] == ["helpful", "helpful", "helpful", "safety"]
    report = r.rule_report()
    assert report["whitening"]["count"] == 4 and report["whiten"] is True


def test_tau_chosen_on_calibration_lyrics_and_recorded(fake_scorers, write_jsonl):
    helpful, safety = fake_scorers
    raw = [-4.0, -3.0, -1.0, -0.5, 1.0, 3.0]     # sigmoid: .018 .047 .269 .378 .731 .953
    labels = ["unsafe", "unsafe", "safe", "unsafe", "safe", "safe"]
    cal = write_jsonl("cal.jsonl", [{"controls": {"topic": "t"}, "lyrics": f"歌\n#{x}", "label": lab}
                                    for x, lab in zip(raw, labels)])
    r = rw.Rewards.from_specs(specs(helpful, safety), rule={"calibration": str(cal), "precision": 0.9})
    tau = r.rule_report()["tau"]
    assert tau["source"] == "calibration" and tau["calibration"] == str(cal)
    assert tau["tau"] == pytest.approx((rw.sigmoid(-3.0) + rw.sigmoid(-1.0)) / 2, abs=1e-6)
    assert tau["precision"] == 1.0 and tau["recall"] == pytest.approx(2 / 3, abs=1e-6) and tau["n"] == 6
    with pytest.raises(UserError, match="safety_rule.precision: .*no threshold reaches precision"):
        bad = write_jsonl("bad.jsonl", [{"lyrics": "歌\n#-3", "label": "safe"}, {"lyrics": "歌\n#3", "label": "unsafe"}])
        rw.Rewards.from_specs(specs(helpful, safety), rule={"calibration": str(bad), "precision": 0.9})


def test_lagrangian_total_and_the_callback_that_moves_lambda(fake_scorers):
    helpful, safety = fake_scorers
    r = rw.Rewards.from_specs(specs(helpful, safety),
                              rule={"mode": "lagrangian", "cost_threshold": 0.1, "lambda_lr": 1.0, "window": 2})
    assert r.lam == 2.0  # starts at the safety entry's weight
    unsafe = "歌\n#-3.0"  # cost = 1 - sigmoid(-3) = 0.953
    (s,) = r.score([{}], [unsafe])
    base = 2.0 * rw.sigmoid(len(unsafe) / 10) + 0.5 * s.components["format"]
    assert s.cost == pytest.approx(1 - rw.sigmoid(-3.0))
    assert s.total == pytest.approx((base - 2.0 * s.cost) / 3.0)
    (cb,) = rw.lagrangian_callbacks(r)
    cb.on_step_end(None, None, None)  # what the trainer calls after every optimiser step
    assert r.lam == pytest.approx(2.0 + (s.cost - 0.1))
    r.score([{}], ["歌\n#5.0"] * 4, update=False)  # before/after samples: no step
    assert r.end_step() is None
    for _ in range(6):  # safe lyrics only: the mean cost of the last 2 steps falls under the threshold
        r.score([{}], ["歌\n#6.0"])
        cb.on_step_end(None, None, None)
    assert r.lambda_history[-1] < r.lambda_history[1] and len(r.lambda_history) == 7
    assert r.rule_report()["lambda"] == pytest.approx(r.lam, abs=1e-6)


def test_trl_reward_functions_read_the_safety_tag_column(fake_scorers):
    helpful, safety = fake_scorers
    r = rw.Rewards.from_specs(specs(helpful, safety), rule={"tau": 0.15, "whiten": False})
    funcs, weights = rw.reward_funcs(r)
    logged = {}
    batch = {"completions": ["歌词歌词\n#2.0"] * 2, "controls": [{}, {}], "safety_prompt": [False, True],
             "log_metric": lambda k, v: logged.__setitem__(k, v)}
    got = funcs[-1](**batch)
    fmt = funcs[r.names.index("format")](**batch)
    text = rw.completion_text("歌词歌词\n#2.0")
    assert got == [pytest.approx(2.0 * len(text) / 10 + 0.5 * fmt[0]), pytest.approx(2.0 * 2.0 + 0.5 * fmt[1])]
    assert logged["safety_rule/chose_safety"] == 0.5 and weights[-1] == 1.0 and funcs[-1].__name__ == "total"


def test_rule_recipe_checks_name_the_key(fake_scorers, tmp_path):
    helpful, safety = fake_scorers
    good = [rw.RewardSpec.model_validate(s) for s in specs(helpful, safety)]
    rule = rw.SafetyRule(tau=0.2)
    rw.check_reward_specs(good, where="r.yaml", rule=rule)
    with pytest.raises(UserError, match=r"safety_rule: needs a safety scorer in rewards"):
        rw.check_reward_specs(good[:1] + good[2:], where="r.yaml", rule=rule)
    with pytest.raises(UserError, match=r"rewards\[1\].path: .*missing is not a trained safety scorer"):
        rw.check_reward_specs([good[0], good[1].model_copy(update={"path": str(tmp_path / "missing")})],
                              where="r.yaml", rule=rule)
    with pytest.raises(UserError, match="give both the same weight"):
        rw.check_reward_specs([good[0], good[1].model_copy(update={"weight": 1.0})], where="r.yaml", rule=rule)
    with pytest.raises(UserError, match=r"rewards\[1\].override_below: .*remove override_below"):
        rw.check_reward_specs([good[0], good[1].model_copy(update={"override_below": 0.15})], where="r.yaml",
                              rule=rule)
    with pytest.raises(ValueError, match="give tau .* or calibration"):
        rw.SafetyRule(tau=0.2, calibration="builtin:safety-lyrics-calibration")
    assert math.isfinite(rw.logit(0.0)) and math.isfinite(rw.logit(1.0))


# --------------------------------------------------------------------------------------------------------------
# Bad input: one line naming the file, line or key; exit 2


SAFETY_RECIPE = """
model: {{name: builtin:tiny-zh}}
data: {{train: {prompts}}}
rewards:
  - {{name: scorer, path: {helpful}}}
  - {{name: safety, path: {safety}}}
safety_rule: {{calibration: {calibration}}}
output_dir: {out}
"""


@pytest.fixture()
def safety_recipe(tmp_path, write_recipe, write_jsonl):
    helpful = tmp_path / "helpful"
    helpful.mkdir()
    (helpful / "config.json").write_text("{}", encoding="utf-8")
    (helpful / "tokenizer.json").write_text("{}", encoding="utf-8")
    prompts = write_jsonl("prompts.jsonl", [{"id": "a", "safety": True, "controls": {"topic": "教训邻居"}},
                                            {"id": "b", "safety": False, "controls": {"topic": "故乡"}}])

    def make(**kw):
        values = {"prompts": prompts, "helpful": helpful, "safety": helpful, "out": tmp_path / "out",
                  "calibration": "builtin:safety-lyrics-calibration", **kw}
        return write_recipe(SAFETY_RECIPE.format(**values))

    return make


def test_a_safety_recipe_dry_runs(safety_recipe, capsys):
    from lyrictool.cli import main

    main(["rejection-sample", str(safety_recipe()), "--dry-run"])
    assert "recipe OK" in capsys.readouterr().out


@pytest.mark.parametrize("case, expected", [
    ("missing_scorer", r"rewards\[1\]\.path: \S*no-such-scorer is not a trained safety scorer \(no such folder\)"),
    ("empty_redteam", r"data\.train: \S*empty\.jsonl has no rows"),
    ("tag_not_boolean", r"prompts-bad\.jsonl:2: key 'safety' must be true or false .*got 'yes'"),
    ("empty_calibration", r"safety_rule\.calibration: \S*empty\.jsonl has no rows"),
])
def test_bad_safety_inputs_are_one_line_errors(safety_recipe, tmp_path, write_jsonl, case, expected):
    import re

    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    bad = write_jsonl("prompts-bad.jsonl", [{"id": "a", "safety": True, "controls": {"topic": "x"}},
                                            {"id": "b", "safety": "yes", "controls": {"topic": "y"}}])
    kw = {"missing_scorer": {"safety": tmp_path / "no-such-scorer"}, "empty_redteam": {"prompts": empty},
          "tag_not_boolean": {"prompts": bad}, "empty_calibration": {"calibration": empty}}[case]
    command = "ppo" if case == "tag_not_boolean" else "rejection-sample"
    line = one_error_line(run_cli(command, str(safety_recipe(**kw)), "--dry-run"))
    assert re.search(expected, line), line


# --------------------------------------------------------------------------------------------------------------
# Through the CLI: the shipped tiny safety scorer, then a rejection-sampling round under LLaMA 2's rule


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The safety scorer from the shipped tiny recipe, and a 2-step helpful scorer (the rule needs both)."""
    out = tmp_path_factory.mktemp("safety")
    env = {"OMP_NUM_THREADS": "1"}
    r = run_cli("score", "recipes/tiny/score-safety.yaml", "--set", f"output_dir={out / 'safety'}", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run_cli("score", "recipes/tiny/score.yaml", "--set", f"output_dir={out / 'helpful'}", "--set",
                "train.max_steps=2", "--set", "data.max_rows=8", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_tiny_safety_scorer_orders_held_out_pairs(trained):
    summary = json.loads((trained / "safety" / "summary.json").read_text(encoding="utf-8"))
    m = summary["metrics"]
    assert summary["data"]["pairs_eval"] == 96 and summary["data"]["prompts_eval"] == 29
    # measured 0.990 from 0.583 (60 steps): the calibration prompts are new, their lines are not (docs/scorer.md)
    assert m["pairwise_accuracy_before"] < 0.75 and m["pairwise_accuracy"] >= 0.9


def test_rejection_sample_uses_llama2_rule_with_tau_chosen_and_recorded(trained, write_recipe, tmp_path):
    recipe = write_recipe(f"""
model: {{name: builtin:tiny-zh}}
data: {{train: builtin:safety-prompts-calibration, max_rows: 6}}
sampling: {{k: 2, max_new_tokens: 24, batch_size: 6}}
rewards:
  - {{name: scorer, weight: 1.0, path: {trained / 'helpful'}}}
  - {{name: safety, weight: 1.0, path: {trained / 'safety'}}}
  - {{name: blocklist, weight: 0.5, path: recipes/safety/blocklist.txt}}
  - {{name: format, weight: 1.0}}
safety_rule: {{calibration: builtin:safety-lyrics-calibration, precision: 0.9}}
output_dir: {tmp_path / 'rs'}
""")
    r = run_cli("rejection-sample", str(recipe), env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "rs" / "summary.json").read_text(encoding="utf-8"))
    tau = summary["safety_rule"]["tau"]
    assert tau["source"] == "calibration" and 0 < tau["tau"] < 1 and tau["precision"] >= 0.9
    assert summary["safety_rule"]["whitening"]["count"] == 12  # 6 prompts x K=2 scored in training mode
    rows = [json.loads(line) for line in (tmp_path / "rs" / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 6 and all(isinstance(row["safety"], bool) for row in rows) and any(r["safety"] for r in rows)
    for row in rows:
        for c in row["candidates"]:
            rule = c["safety_rule"]
            assert rule["chosen"] == "safety" if row["safety"] or c["rewards"]["safety"] < tau["tau"] \
                else rule["chosen"] == "helpful"
            rest = 0.5 * c["rewards"]["blocklist"] + 1.0 * c["rewards"]["format"]
            assert c["reward"] == pytest.approx(rule["model"] + rest, abs=1e-4)


def test_ppo_lagrangian_moves_lambda_once_per_step(trained, write_recipe, tmp_path):
    recipe = write_recipe(f"""
model: {{name: builtin:tiny-zh}}
data: {{train: builtin:safety-prompts-calibration, eval_fraction: 0.1}}
rewards:
  - {{name: safety, weight: 1.0, path: {trained / 'safety'}}}
  - {{name: format, weight: 1.0}}
safety_rule: {{mode: lagrangian, cost_threshold: 0.1, lambda_lr: 1.0}}
train: {{beta: 0.0, num_generations: 2, max_completion_length: 16, per_device_train_batch_size: 4, max_steps: 3,
         logging_steps: 1, activation_checkpointing: false, use_cpu: true}}
eval_generation: {{num_prompts: 2, max_new_tokens: 16}}
output_dir: {tmp_path / 'ppo'}
""")
    r = run_cli("ppo", str(recipe), env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    rule = json.loads((tmp_path / "ppo" / "summary.json").read_text(encoding="utf-8"))["safety_rule"]
    assert rule["mode"] == "lagrangian" and len(rule["lambda_history"]) == 3
    assert rule["lambda"] == rule["lambda_history"][-1] and rule["lambda"] != 1.0  # moved from the safety weight


LAMBDA_WORKER = """
import json, os, sys
from pathlib import Path
from lyrictool import rewards as rw
from lyrictool.distributed import shutdown

class Fake:
    def __init__(self, path, **_): pass
    def score(self, prompts, lyrics, progress=None): return [float(t.split("#")[1]) for t in lyrics]

rw.Scorer = Fake
out = Path(sys.argv[1])
r = rw.Rewards.from_specs([{"name": "safety", "path": str(out / "safety")}, {"name": "format"}],
                          rule={"mode": "lagrangian", "cost_threshold": 0.1, "lambda_lr": 1.0})
rank = int(os.environ["RANK"])
r.score([{}] * 4, ["歌\\n#-2"] * 4 if rank == 0 else ["歌\\n#2"] * 4)  # costs 0.881 on rank 0, 0.119 on rank 1
(out / f"rank{rank}.json").write_text(json.dumps({"lam": r.end_step(sync=True)}))
shutdown()
"""


@pytest.mark.multiproc
def test_two_processes_keep_one_lambda(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "safety").mkdir()
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / "safety" / name).write_text("{}", encoding="utf-8")
    worker = tmp_path / "worker.py"
    worker.write_text(LAMBDA_WORKER, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(worker), str(tmp_path)], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lams = [json.loads((tmp_path / f"rank{r}.json").read_text())["lam"] for r in (0, 1)]
    assert lams == [pytest.approx(1.4), pytest.approx(1.4)]  # 1 + 1.0 x (mean of both ranks' costs 0.5 - 0.1)
