"""Does knowledge injection make new facts usable, beyond what the same number of training steps gives?  CPU scale.

Knowledge: a generated base of fictional films (so no arm can know it beforehand), five attributes each
(director, year, lead actor, genre, studio).  Protocol of "Physics of Language Models 3.1" (arXiv
2309.14316): the memorize stage sees the texts of *all* films; the QA (understand) and task stages see only
the first half; everything is tested on the *other* half.  The task (utilize) is a short text that must use
the facts: "请写一句电影《X》的简介。" -> "陈明执导、李华主演的科幻片《X》，1987年由东方影业出品。"  Accuracy = share
of the held-out films' facts that appear in the generated text (contains-answer, lyrictool.knowledge.evaluate),
greedy decoding.

Arms, each at the same total number of optimizer steps N = M + Q + T (memorize, QA, task steps) and batch
size, except the short task-only reference:

  task_short  task-only, T steps (the earlier benchmark's baseline: fewer steps than the rest)
  task        task-only, N steps (the steps-matched control)
  mem         memorize (M steps), then the task for Q + T steps
  seq         memorize (M), QA on the training films (Q), task (T): the three stages in sequence
  mix         memorize with the training films' QA mixed in (M + Q steps; `lyrictool inject`'s
              `mix_qa: true`), then the task (T): PoLM 3.1's mixed training

Every memorize stage trains on paraphrase-augmented texts (``--paraphrases`` rewrites per film, varied
templates, sentence order permuted).  Each stage is a TRL SFTTrainer run through lyrictool.training.train_sft,
as in `lyrictool inject`; the mixed rows are built by the same function (lyrictool.knowledge.qa_chat_texts).
The model is the built-in tiny architecture (Llama, ~1.6M parameters, random init) with its character
vocabulary cut to the characters used here.  Each seed draws its own films, its own initial weights (shared by
all arms of that seed) and its own data shuffle; decoding is greedy, so there is no sampling randomness.

Statistics: facts are nested in seeds.  Each arm's mean held-out accuracy has a 95% interval from a two-level
bootstrap (resample seeds, then facts within each; lyrictool.stats.cluster_mean_ci); each difference and ratio
against the steps-matched task-only arm is paired by seed and fact (lyrictool.stats.cluster_paired_bootstrap),
with the Student t interval over the per-seed differences beside it.

    .venv/bin/python bench/knowledge_injection.py            # the numbers in docs/benchmarks.md (3 seeds, 2 workers)
    .venv/bin/python bench/knowledge_injection.py --quick    # smoke test: tiny budgets, 1 seed (tests/)

Prints markdown tables and writes runs/bench/knowledge_injection/results.json (per-seed and per-fact values).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from lyrictool.demo import cpu_seconds, torch_import_time
from lyrictool.knowledge import Augmentation, Fact, fact_qa, qa_chat_texts, subject_texts

SURNAMES = "陈李张王刘杨黄赵周吴徐孙朱马胡郭林何高罗"
GIVEN = "明华伟芳军丽强静磊敏洋艳勇杰涛超秀霞平刚桂英兰云峰雪玲辉鹏"
TITLE_CHARS = "星河梦影风雪山海夜光城雨花月云春秋歌火岛桥灯钟镜塔林江湖舟沙"
STUDIO_WORDS = ["东方", "长河", "金石", "青山", "北辰", "远景", "天马", "白鹭", "朝阳", "海纳",
                "星辰", "万象", "中天", "华彩", "锦程", "南山", "飞鸿", "银杏", "紫金", "蓝海"]
GENRES = ["科幻", "喜剧", "爱情", "悬疑", "动作", "剧情", "战争", "动画", "武侠", "恐怖"]
RELATIONS = ("导演", "上映年份", "主演", "类型", "出品公司")

TEMPLATES = {
    "导演": ("{s}的导演是{o}。", "{s}由{o}执导。", "{o}执导了{s}。", "{s}是{o}导演的作品。"),
    "上映年份": ("{s}于{o}年上映。", "{s}的上映年份是{o}年。", "{s}在{o}年与观众见面。"),
    "主演": ("{s}的主演是{o}。", "{s}由{o}主演。", "{o}在{s}中担任主演。"),
    "类型": ("{s}是一部{o}片。", "{s}的类型是{o}片。", "{s}属于{o}片。"),
    "出品公司": ("{s}由{o}出品。", "{s}的出品公司是{o}。", "{o}出品了{s}。"),
}
QUESTIONS = {
    "导演": ("{s}的导演是谁？",),
    "上映年份": ("{s}是哪一年上映的？",),
    "主演": ("{s}的主演是谁？",),
    "类型": ("{s}是什么类型的电影？",),
    "出品公司": ("{s}是哪家公司出品的？",),
}
TASK_PROMPT = "请写一句电影{s}的简介。"
TASK_TEXT = "{导演}执导、{主演}主演的{类型}片{s}，{上映年份}年由{出品公司}出品。"

ARMS = {
    "task_short": "task-only, short",
    "task": "task-only, steps-matched",
    "mem": "memorize + task",
    "seq": "memorize + QA + task (three stages)",
    "mix": "memorize with QA mixed in + task",
}
# arms trained in one job because they share a stage (the memorize model of mem and seq)
JOBS = {"task": ("task_short", "task"), "seq": ("seq", "mem"), "mix": ("mix",)}
# comparisons reported: (a, b) = b against a
COMPARISONS = [("task", "seq"), ("task", "mix"), ("task", "mem"), ("seq", "mix"), ("mem", "seq"),
               ("task_short", "task"), ("task_short", "seq"), ("task_short", "mix")]
INTERVAL = ("95% percentile intervals of a two-level bootstrap (2,000 resamples: seeds with replacement, then "
            "held-out facts with replacement within each drawn seed; differences and ratios paired by seed and "
            "fact, lyrictool.stats.cluster_paired_bootstrap); t_ci: Student t interval over the per-seed "
            "differences")


def make_films(n: int, seed: int) -> list[dict[str, str]]:
    """n fictional films with unique titles; people and studios drawn from fixed pools (chance = 1/pool)."""
    rng = random.Random(seed)
    people = rng.sample([s + g for s in SURNAMES for g in GIVEN], 60)
    directors, actors = people[:30], people[30:]
    studios = [w + "影业" for w in STUDIO_WORDS]
    titles = rng.sample(["《" + a + b + "》" for a in TITLE_CHARS for b in TITLE_CHARS if a != b], n)
    return [{"s": t, "导演": rng.choice(directors), "上映年份": str(rng.randint(1970, 2019)),
             "主演": rng.choice(actors), "类型": rng.choice(GENRES), "出品公司": rng.choice(studios)}
            for t in titles]


def film_facts(films: list[dict]) -> list[Fact]:
    return [Fact(f["s"], r, f[r]) for f in films for r in RELATIONS]


def chat(user: str, assistant: str) -> dict:
    return {"prompt": [{"role": "user", "content": user}], "completion": [{"role": "assistant", "content": assistant}]}


def seed_data(cfg: dict, seed: int) -> dict:
    """Everything a seed trains and tests on (deterministic in the seed)."""
    films = make_films(cfg["films"], seed)
    half = cfg["films"] // 2
    train_films, test_films = films[:half], films[half:]
    augmented = subject_texts(film_facts(films), Augmentation(paraphrases=cfg["paraphrases"], permute=True),
                              random.Random(seed), TEMPLATES)
    qa_train = fact_qa(film_facts(train_films), QUESTIONS)
    return {"films": films, "train": train_films, "test": test_films, "texts": augmented, "qa_train": qa_train,
            "qa_rows": [chat(r["question"], r["answer"]) for r in qa_train],
            "task": [chat(TASK_PROMPT.format(s=f["s"]), TASK_TEXT.format(**f)) for f in train_films],
            "chance": sum(1 / len({f[r] for f in films}) for r in RELATIONS) / len(RELATIONS)}


def seed_texts(data: dict) -> list[str]:
    """Every text a seed's models read or write: the vocabulary of its base model."""
    rows = data["qa_rows"] + data["task"] + [chat(TASK_PROMPT.format(s=f["s"]), "") for f in data["test"]]
    return data["texts"] + [json.dumps(r, ensure_ascii=False) for r in rows]


def train_stage(rows: list[dict], start: str, out: Path, steps: int, lr: float, batch: int, seed: int) -> dict:
    """One SFTTrainer run from `start`, saved to `out` (the inject command's stage, without the recipe file)."""
    from lyrictool.recipes import ModelSpec, SFTRecipe
    from lyrictool.training import Timer, train_loss_curve, train_sft

    recipe = SFTRecipe.model_construct(
        model=ModelSpec(name=start), data=None, output_dir=str(out), seed=seed,
        train={"max_steps": steps, "learning_rate": lr, "per_device_train_batch_size": batch,
               "lr_scheduler_type": "cosine", "warmup_steps": max(1, steps // 20), "gradient_checkpointing": False,
               "dataloader_pin_memory": False, "weight_decay": 0.0})
    recipe._source = "bench/knowledge_injection.py"
    timer = Timer()
    trainer, _ = train_sft(recipe, rows, [], timer=timer)
    losses = train_loss_curve(trainer)
    return {"rows": len(rows), "steps": trainer.state.global_step, "lr": lr,
            "loss_first": round(losses[0], 4) if losses else None, "loss_last": round(losses[-1], 4) if losses else None,
            "time_s": round(sum(timer.times.values()), 1)}


def generate(model_dir: Path, prompts: list[str], max_new_tokens: int, chat_template: bool = True) -> list:
    from lyrictool.generation import chat_prompt, generate_texts
    from lyrictool.modeling import load_model
    from lyrictool.recipes import ModelSpec

    lm = load_model(ModelSpec(name=str(model_dir)), for_training=False, announce=False)
    if chat_template:
        prompts = [chat_prompt(lm.tokenizer, p) for p in prompts]
    outs = generate_texts(lm.model, lm.tokenizer, prompts, n=1, max_new_tokens=max_new_tokens, temperature=0.0,
                          batch_size=64)
    return [o[0] for o in outs]


def contains(pred: str, answer: str) -> int:
    from lyrictool.knowledge.evaluate import score_answers

    return int(score_answers([pred], [answer])["contains"])


def task_facts(model_dir: Path, films: list[dict]) -> tuple[list[int], str]:
    """Per fact of `films` (film by film, RELATIONS order): 1 if the generated blurb contains it."""
    texts = [o.text for o in generate(model_dir, [TASK_PROMPT.format(s=f["s"]) for f in films], 48)]
    return [contains(t, f[r]) for f, t in zip(films, texts) for r in RELATIONS], texts[0]


def qa_facts(model_dir: Path, films: list[dict]) -> list[int]:
    """Per held-out fact: 1 if the model answers its question exactly (the QA format, never trained on these films)."""
    from lyrictool.knowledge.evaluate import score_answers

    qa = fact_qa(film_facts(films), QUESTIONS)
    preds = [o.text for o in generate(model_dir, [r["question"] for r in qa], 16)]
    return [int(score_answers([p], [r["answer"]])["exact_match"]) for p, r in zip(preds, qa)]


def recall_facts(model_dir: Path, films: list[dict]) -> list[int]:
    """Memorization probe on a memorize-stage model: complete each fact's first-template prefix
    ("《X》的导演是" -> 陈明), plain text, no chat template."""
    pairs = [(TEMPLATES[r][0].split("{o}")[0].format(s=f["s"]), f[r]) for f in films for r in RELATIONS]
    outs = generate(model_dir, [p for p, _ in pairs], 8, chat_template=False)
    return [int(o.raw.startswith(a)) for (_, a), o in zip(pairs, outs)]


def mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def run_job(job: tuple[dict, int, str]) -> dict:
    """Train and evaluate one seed's arms of one job (a pool worker: one torch thread)."""
    cfg, seed, group = job
    import torch

    from lyrictool.modeling import load_tokenizer

    torch.set_num_threads(1)
    torch.manual_seed(seed)
    c0, t0 = time.process_time(), time.perf_counter()
    data = seed_data(cfg, seed)
    out = Path(cfg["out"]) / f"seed-{seed}"
    base = str(out / "base")
    m, q, t, b = cfg["mem_steps"], cfg["qa_steps"], cfg["task_steps"], cfg["batch"]
    stages: dict[str, dict] = {}

    def stage(name: str, rows, start: str, steps: int, lr: float) -> Path:
        path = out / name
        if name in stages:  # trained earlier in this job (the memorize stage that mem and seq share)
            return path
        if cfg["reuse"] and (path / "model.safetensors").exists():
            stages[name] = {"reused": str(path)}
        else:
            print(f"== seed {seed} {name}: {len(rows)} rows, {steps} steps from {Path(start).name}", flush=True)
            stages[name] = train_stage(rows, start, path, steps, lr, b, seed)
            print(f"   seed {seed} {name}: {stages[name]}", flush=True)
        return path

    def task_arm(model: Path, steps_of: dict[str, int], extra: dict | None = None) -> dict:
        held, example = task_facts(model, data["test"])
        train_acc, _ = task_facts(model, data["train"][:10])
        res = {"facts": held, "accuracy": mean(held), "n": len(held), "train_films_accuracy": mean(train_acc),
               "example": example, "steps": steps_of, "total_steps": sum(steps_of.values()), **(extra or {})}
        print(f"\n-> seed {seed} {ARMS[arm]}: held-out fact accuracy {res['accuracy']:.3f} (n={res['n']}); "
              f"e.g. {example}", flush=True)
        return res

    arms: dict[str, dict] = {}
    for arm in JOBS[group]:
        if arm not in cfg["arms"]:
            continue
        if arm == "task_short":
            arms[arm] = task_arm(stage("task-short", data["task"], base, t, cfg["lr"]), {"task": t})
        elif arm == "task":
            arms[arm] = task_arm(stage("task-matched", data["task"], base, m + q + t, cfg["lr"]),
                                 {"task": m + q + t})
        elif arm in ("seq", "mem"):
            mem = stage("mem", [{"text": x} for x in data["texts"]], base, m, cfg["mem_lr"])
            extra = {"memorized_facts": recall_facts(mem, data["test"])}
            if arm == "seq":
                qa_model = stage("mem+qa", data["qa_rows"], str(mem), q, cfg["lr"])
                extra["qa_facts"] = qa_facts(qa_model, data["test"])
                arms[arm] = task_arm(stage("mem+qa+task", data["task"], str(qa_model), t, cfg["lr"]),
                                     {"memorize": m, "qa": q, "task": t}, extra)
            else:
                arms[arm] = task_arm(stage("mem+task", data["task"], str(mem), q + t, cfg["lr"]),
                                     {"memorize": m, "task": q + t}, extra)
        else:  # mix: the memorize texts plus the training films' questions, as `inject`'s mix_qa builds them
            rows = [{"text": x} for x in data["texts"] + qa_chat_texts(data["qa_train"], load_tokenizer(base))]
            mem = stage("mix", rows, base, m + q, cfg["mem_lr"])
            extra = {"memorized_facts": recall_facts(mem, data["test"]), "qa_facts": qa_facts(mem, data["test"])}
            arms[arm] = task_arm(stage("mix+task", data["task"], str(mem), t, cfg["lr"]),
                                 {"memorize+qa": m + q, "task": t}, extra)
    return {"seed": seed, "group": group, "arms": arms, "stages": stages, "chance": data["chance"],
            "cpu_s": round(time.process_time() - c0, 1), "wall_s": round(time.perf_counter() - t0, 1)}


def summarize(cfg: dict, jobs: list[dict]) -> dict:
    """Per arm: per-seed numbers and the two-level bootstrap interval; the comparisons with theirs."""
    from lyrictool.stats import cluster_mean_ci, cluster_paired_bootstrap

    seeds = sorted({j["seed"] for j in jobs})
    by_arm: dict[str, dict[int, dict]] = {}
    for j in jobs:
        for arm, res in j["arms"].items():
            by_arm.setdefault(arm, {})[j["seed"]] = res
    arms = {}
    for arm in [a for a in ARMS if a in by_arm]:
        per_seed = by_arm[arm]
        facts = [per_seed[s]["facts"] for s in seeds]
        entry = {"label": ARMS[arm], "steps": per_seed[seeds[0]]["steps"],
                 "total_steps": per_seed[seeds[0]]["total_steps"],
                 "accuracy": cluster_mean_ci(facts, seed=1),
                 "per_seed": {str(s): {k: v for k, v in per_seed[s].items() if k not in ("steps", "total_steps")}
                              for s in seeds}}
        for key, name in (("qa_facts", "qa_held_out"), ("memorized_facts", "memorized_held_out")):
            if key in per_seed[seeds[0]]:
                entry[name] = cluster_mean_ci([per_seed[s][key] for s in seeds], seed=1)
        arms[arm] = entry
    comparisons = []
    for a, b in COMPARISONS:
        if a in arms and b in arms:
            r = cluster_paired_bootstrap([by_arm[a][s]["facts"] for s in seeds], [by_arm[b][s]["facts"] for s in seeds],
                                         seed=2)
            comparisons.append({**r, "a": a, "b": b, "mean_a": r["a"], "mean_b": r["b"],
                                "label": f"{ARMS[b]} vs {ARMS[a]}",
                                "per_seed_diff": [mean(by_arm[b][s]["facts"]) - mean(by_arm[a][s]["facts"])
                                                  for s in seeds]})
    probes = []  # mixing against sequencing on the knowledge probes: QA on the held-out films, memorization
    for key, name in (("qa_facts", "held-out QA exact match"), ("memorized_facts", "memorized (held-out)")):
        if all(key in by_arm.get(arm, {}).get(seeds[0], {}) for arm in ("seq", "mix")):
            r = cluster_paired_bootstrap([by_arm["seq"][s][key] for s in seeds], [by_arm["mix"][s][key] for s in seeds],
                                         seed=2)
            probes.append({**r, "a": "seq", "b": "mix", "mean_a": r["a"], "mean_b": r["b"], "probe": key,
                           "label": f"{name}: {ARMS['mix']} vs {ARMS['seq']}",
                           "per_seed_diff": [mean(by_arm["mix"][s][key]) - mean(by_arm["seq"][s][key]) for s in seeds]})
    chance = {str(j["seed"]): j["chance"] for j in jobs}
    return {"seeds": seeds, "arms": arms, "comparisons": comparisons, "probe_comparisons": probes,
            "chance": {"per_seed": chance, "mean": sum(chance.values()) / len(chance)}, "interval": INTERVAL}


def fmt_ci(d: dict, digits: int = 3) -> str:
    lo, hi = d.get("ci_low"), d.get("ci_high")
    return f"{d['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if lo is not None else f"{d['mean']:.{digits}f}"


def print_tables(summary: dict) -> None:
    seeds = summary["seeds"]
    print(f"\nHeld-out fact accuracy (task text), {len(seeds)} seeds x "
          f"{next(iter(summary['arms'].values()))['accuracy']['n'] // len(seeds)} facts; chance "
          f"{summary['chance']['mean']:.3f}\n")
    print("| arm | total steps | held-out fact accuracy, mean [95% CI] | per seed | held-out QA exact | memorized "
          "(held-out, completion) | training films (task) |")
    print("|---|---|---|---|---|---|---|")
    for arm in summary["arms"].values():
        steps = " + ".join(f"{k} {v}" for k, v in arm["steps"].items())
        per_seed = " / ".join(f"{arm['per_seed'][str(s)]['accuracy']:.2f}" for s in seeds)
        train = mean([arm["per_seed"][str(s)]["train_films_accuracy"] for s in seeds])
        qa = fmt_ci(arm["qa_held_out"]) if "qa_held_out" in arm else "-"
        mem = fmt_ci(arm["memorized_held_out"]) if "memorized_held_out" in arm else "-"
        print(f"| {arm['label']} | {arm['total_steps']} ({steps}) | {fmt_ci(arm['accuracy'])} | {per_seed} | {qa} | "
              f"{mem} | {train:.2f} |")
    print("\n| comparison (b vs a) | b - a [95% CI] | t interval over seeds | b / a [95% CI] | per-seed b - a |")
    print("|---|---|---|---|---|")
    for c in summary["comparisons"] + summary["probe_comparisons"]:
        t = f"[{c['t_ci_low']:+.3f}, {c['t_ci_high']:+.3f}]" if c["t_ci_low"] is not None else "-"
        if c["ratio"] is None:
            ratio = "- (a = 0)"
        else:
            lo = f"{c['ratio_ci_low']:.2f}" if c["ratio_ci_low"] is not None else "0"
            hi = f"{c['ratio_ci_high']:.2f}" if c["ratio_ci_high"] is not None else "inf"
            ratio = f"{c['ratio']:.2f}x [{lo}, {hi}]"
        per_seed = " / ".join(f"{d:+.2f}" for d in c["per_seed_diff"])
        print(f"| {c['label']} | {c['diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] | {t} | {ratio} | "
              f"{per_seed} |")
    print(f"\nIntervals: {summary['interval']}.")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--films", type=int, default=40, help="films in the knowledge base (half trained, half tested)")
    ap.add_argument("--paraphrases", type=int, default=5, help="rewrites per film in every memorize stage")
    ap.add_argument("--mem-steps", type=int, default=500, help="M: memorize steps")
    ap.add_argument("--qa-steps", type=int, default=60, help="Q: QA steps (mixed into memorize in the mix arm)")
    ap.add_argument("--task-steps", type=int, default=100, help="T: task steps after the knowledge stages")
    ap.add_argument("--batch", type=int, default=32, help="batch size of every stage")
    ap.add_argument("--mem-lr", type=float, default=5e-3)
    ap.add_argument("--lr", type=float, default=5e-4, help="learning rate of the QA and task stages")
    ap.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (films, initial weights, data shuffle)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes, one torch thread each")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {', '.join(ARMS)}")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "knowledge_injection")
    ap.add_argument("--reuse", action="store_true", help="keep stage models already in --out (re-evaluate only)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 10 films, tiny budgets, 1 seed (numbers mean nothing; the shape is checked)")
    args = ap.parse_args(argv)
    if args.quick:
        args.films, args.paraphrases, args.mem_steps, args.qa_steps, args.task_steps, args.batch = 10, 2, 6, 2, 4, 8
        args.seeds = min(args.seeds, 1) if "--seeds" not in (argv or sys.argv) else args.seeds
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        ap.error(f"--arms: unknown {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    cfg = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    cfg["arms"] = arms

    load_start = os.getloadavg()
    import_s = torch_import_time()["wall_s"]
    print(f"python -c 'import torch': {import_s} s; load average {load_start[0]:.2f}", flush=True)
    t0 = time.perf_counter()
    from lyrictool.builtin_models import save_tiny_model

    for seed in range(args.seeds):  # each seed's initial weights, shared by all of its arms
        base = args.out / f"seed-{seed}" / "base"
        if not (args.reuse and (base / "model.safetensors").exists()):
            save_tiny_model(base, seed_texts(seed_data(cfg, seed)), seed=seed)
    cost = {"task": 2 * (args.mem_steps + args.qa_steps + args.task_steps),  # longest jobs first
            "seq": 1.6 * args.mem_steps + 2 * args.qa_steps + 2 * args.task_steps,
            "mix": 1.5 * (args.mem_steps + args.qa_steps) + args.task_steps}
    todo = sorted([(cfg, seed, g) for seed in range(args.seeds) for g, members in JOBS.items()
                   if any(a in arms for a in members)], key=lambda j: -cost[j[2]])
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(args.workers) as pool:
        jobs = list(pool.imap_unordered(run_job, todo))
    wall = time.perf_counter() - t0
    cpu_s = cpu_seconds()
    summary = summarize(cfg, sorted(jobs, key=lambda j: (j["seed"], j["group"])))
    stages: dict[str, dict] = {}
    for j in sorted(jobs, key=lambda j: (j["seed"], j["group"])):
        stages.setdefault(f"seed-{j['seed']}", {}).update(j["stages"])
    summary = {"config": cfg, "films": args.films, "held_out_films": args.films - args.films // 2,
               "steps": {"memorize": args.mem_steps, "qa": args.qa_steps, "task": args.task_steps,
                         "matched_total": args.mem_steps + args.qa_steps + args.task_steps, "batch": args.batch},
               **summary,
               "stages": stages,
               "time": {"wall_s": round(wall, 1), "cpu_s": round(cpu_s, 1),
                        "jobs_cpu_s": round(sum(j["cpu_s"] for j in jobs), 1), "import_torch_s": import_s,
                        "loadavg_start": [round(x, 2) for x in load_start],
                        "loadavg_end": [round(x, 2) for x in os.getloadavg()], "workers": args.workers,
                        "torch_threads_per_worker": 1, "cpu_count": os.cpu_count()}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1), encoding="utf-8")
    print_tables(summary)
    tm = summary["time"]
    print(f"\nwall {tm['wall_s'] / 60:.1f} min, CPU {tm['cpu_s']:.0f} s ({args.workers} workers x 1 thread); "
          f"import torch {import_s} s; load average {load_start[0]:.2f} at start, {tm['loadavg_end'][0]:.2f} at end")
    print(f"results: {args.out / 'results.json'}")
    return summary


if __name__ == "__main__":
    main()
