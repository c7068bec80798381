"""Does three-stage knowledge injection make new facts usable?  A small, honest reproduction on CPU.

Knowledge: a generated base of fictional films (so no arm can know it beforehand), five attributes each
(director, year, lead actor, genre, studio).  Protocol of "Physics of Language Models 3.1" (arXiv
2309.14316): the memorize stage sees the texts of *all* films; the understand stage (QA) and the task
stage see only the first half; everything is tested on the *other* half.  The task (utilize) is a short
text that must use the facts: "请写一句电影《X》的简介。" -> "陈明执导、李华主演的科幻片《X》，1987年由东方影业
出品。"  Accuracy = share of the held-out films' facts that appear in the generated text (contains-answer,
lyrictool.knowledge.evaluate), greedy decoding.

Arms (each ends with the same task stage, same steps):
  task-only              task on the training films, from the random-init model
  memorize+task          memorize one fixed text per film, then the task
  memorize+QA+task       + the understand stage (QA on the training films) before the task
  augmented (all three)  memorize with paraphrase augmentation (several rewrites per film, varied templates,
                         sentence order permuted), then QA, then the task
  retrieval (RAG)        task-only, with the film's knowledge text in the prompt (train and test)

Each stage is a TRL SFTTrainer run through lyrictool.training.train_sft, as in `lyrictool inject`; the
memorize stage is trained once per variant and shared by the arms that start from it.  The model is the
built-in tiny model (builtin:tiny-zh, ~1.6M parameters, random init, character tokenizer).

    .venv/bin/python bench/knowledge_injection.py                 # defaults: the numbers in docs/benchmarks.md
    .venv/bin/python bench/knowledge_injection.py --films 40 --mem-steps 100   # a quicker look

Prints a table and writes runs/bench/knowledge_injection/results.json.
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

from lyrictool.knowledge import Augmentation, Fact, fact_qa, subject_texts

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
RAG_PROMPT = "资料：{doc}\n请写一句电影{s}的简介。"
TASK_TEXT = "{导演}执导、{主演}主演的{类型}片{s}，{上映年份}年由{出品公司}出品。"


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


def fixed_text(film: dict) -> str:
    return subject_texts(film_facts([film]), Augmentation(paraphrases=1, permute=False), random.Random(0),
                         TEMPLATES)[0]


def chat(user: str, assistant: str) -> dict:
    return {"prompt": [{"role": "user", "content": user}], "completion": [{"role": "assistant", "content": assistant}]}


def task_rows(films: list[dict], rag: bool) -> list[dict]:
    return [chat(RAG_PROMPT.format(doc=fixed_text(f), s=f["s"]) if rag else TASK_PROMPT.format(s=f["s"]),
                 TASK_TEXT.format(**f)) for f in films]


def small_vocab_base(texts: list[str], out: Path, seed: int) -> str:
    """The built-in tiny model's architecture and config, with a character vocabulary cut down to the characters
    this benchmark uses (~300 instead of 6,894): the output layer is then no longer half the compute, which
    halves the wall time on CPU.  Same chat template, same special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from lyrictool import modeling

    chars = modeling.SPECIAL_TOKENS + sorted(set(modeling.EXTRA_CHARS + modeling.CHINESE_PUNCT + "".join(
        chr(i) for i in range(32, 127)) + "".join(texts)))
    tk = Tokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(chars)}, unk_token="<|unk|>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<|unk|>", pad_token="<|pad|>",
                                  eos_token="<|im_end|>", bos_token=None,
                                  additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
                                  clean_up_tokenization_spaces=False)
    tok.chat_template = modeling.CHAT_TEMPLATE
    model = modeling.build_tiny_model(tok, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


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
    return {"rows": len(rows), "steps": trainer.state.global_step, "loss_first": losses[0], "loss_last": losses[-1],
            "time_s": round(sum(timer.times.values()), 1)}


def generate(model_dir: Path, prompts: list[str], max_new_tokens: int) -> list[str]:
    from lyrictool.generation import chat_prompt, generate_texts
    from lyrictool.modeling import load_model
    from lyrictool.recipes import ModelSpec

    lm = load_model(ModelSpec(name=str(model_dir)), announce=False)
    outs = generate_texts(lm.model, lm.tokenizer, [chat_prompt(lm.tokenizer, p) for p in prompts], n=1,
                          max_new_tokens=max_new_tokens, temperature=0.0, batch_size=64)
    return [o[0].text for o in outs]


def task_accuracy(model_dir: Path, films: list[dict], rag: bool) -> dict:
    from lyrictool.knowledge.evaluate import score_answers

    prompts = [RAG_PROMPT.format(doc=fixed_text(f), s=f["s"]) if rag else TASK_PROMPT.format(s=f["s"]) for f in films]
    texts = generate(model_dir, prompts, 48)
    preds, answers = [], []
    for f, text in zip(films, texts):
        for r in RELATIONS:
            preds.append(text)
            answers.append(f[r])
    scores = score_answers(preds, answers)
    return {"n": scores["n"], "accuracy": scores["contains"], "example": texts[0]}


def recall_accuracy(model_dir: Path, films: list[dict]) -> float:
    """Memorization probe on a memorize-stage model: complete each fact's first-template prefix
    ("《X》的导演是" -> 陈明), plain text, no chat template."""
    from lyrictool.generation import generate_texts
    from lyrictool.modeling import load_model
    from lyrictool.recipes import ModelSpec

    lm = load_model(ModelSpec(name=str(model_dir)), announce=False)
    pairs = [(TEMPLATES[r][0].split("{o}")[0].format(s=f["s"]), f[r]) for f in films for r in RELATIONS]
    outs = generate_texts(lm.model, lm.tokenizer, [p for p, _ in pairs], max_new_tokens=8, temperature=0.0,
                          batch_size=64)
    return sum(o[0].raw.startswith(a) for (_, a), o in zip(pairs, outs)) / len(pairs)


def qa_accuracy(model_dir: Path, films: list[dict]) -> dict:
    from lyrictool.knowledge.evaluate import score_answers

    qa = fact_qa(film_facts(films), QUESTIONS)
    preds = generate(model_dir, [r["question"] for r in qa], 16)
    return score_answers(preds, [r["answer"] for r in qa])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--films", type=int, default=40, help="films in the knowledge base (half trained, half tested)")
    ap.add_argument("--paraphrases", type=int, default=5, help="rewrites per film in the augmented arm")
    ap.add_argument("--mem-steps", type=int, default=500)
    ap.add_argument("--qa-steps", type=int, default=60)
    ap.add_argument("--task-steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--mem-lr", type=float, default=5e-3)
    ap.add_argument("--lr", type=float, default=5e-4, help="learning rate of the QA and task stages")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "knowledge_injection")
    ap.add_argument("--arms", default="task,mem,memqa,aug,rag", help="comma-separated subset of arms")
    ap.add_argument("--reuse", action="store_true", help="keep stage models already in --out (to vary later stages)")
    ap.add_argument("--vocab", choices=("bench", "builtin"), default="bench",
                    help="bench: builtin:tiny-zh's architecture with only the characters used here (2x faster); "
                         "builtin: builtin:tiny-zh itself")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: 1 when the machine is busy, else all cores; oversubscribed "
                         "threads make small-model training several times slower)")
    args = ap.parse_args()

    import torch

    busy = os.getloadavg()[0] > (os.cpu_count() or 1) * 0.5
    torch.set_num_threads(args.threads or (1 if busy else (os.cpu_count() or 1)))
    torch.manual_seed(args.seed)
    films = make_films(args.films, args.seed)
    train_films, test_films = films[: args.films // 2], films[args.films // 2:]
    plain = [{"text": fixed_text(f)} for f in films]
    rng = random.Random(args.seed)
    augmented = [{"text": t} for t in subject_texts(film_facts(films), Augmentation(paraphrases=args.paraphrases,
                                                                                    permute=True), rng, TEMPLATES)]
    qa_rows = [chat(r["question"], r["answer"]) for r in fact_qa(film_facts(train_films), QUESTIONS)]
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    stages: dict[str, dict] = {}
    arms = args.arms.split(",")

    def stage(name: str, rows, start: str, steps: int, lr: float) -> str:
        path = out / name
        if args.reuse and (path / "model.safetensors").exists():
            stages.setdefault(name, {"reused": str(path)})
        if name not in stages:
            print(f"== {name}: {len(rows)} rows, {steps} steps from {Path(start).name}", flush=True)
            stages[name] = train_stage(rows, start, path, steps, lr, args.batch, args.seed)
            print(f"   {stages[name]}", flush=True)
        return str(path)

    all_text = "".join(r["text"] for r in augmented + plain) + "".join(json.dumps(r, ensure_ascii=False) for r in
                                                               task_rows(films, rag=True) + qa_rows)
    all_text += TASK_PROMPT + RAG_PROMPT + "".join(t for qs in QUESTIONS.values() for t in qs)
    if args.vocab == "builtin":
        base = "builtin:tiny-zh"
    elif args.reuse and (out / "base" / "model.safetensors").exists():
        base = str(out / "base")
    else:
        base = small_vocab_base([all_text], out / "base", args.seed)
    task = task_rows(train_films, rag=False)
    results = {}
    arm_defs = {
        "task": ("task-only", lambda: stage("task-only", task, base, args.task_steps, args.lr), False, False),
        "mem": ("memorize+task", lambda: stage("mem+task", task, stage("mem", plain, base, args.mem_steps,
                                                                         args.mem_lr), args.task_steps, args.lr),
                False, False),
        "memqa": ("memorize+QA+task", lambda: stage("mem+qa+task", task, stage(
            "mem+qa", qa_rows, stage("mem", plain, base, args.mem_steps, args.mem_lr), args.qa_steps, args.lr),
            args.task_steps, args.lr), False, "mem+qa"),
        "aug": (f"augmented x{args.paraphrases} memorize+QA+task", lambda: stage("aug+qa+task", task, stage(
            "aug+qa", qa_rows, stage("aug", augmented, base, args.mem_steps, args.mem_lr), args.qa_steps, args.lr),
            args.task_steps, args.lr), False, "aug+qa"),
        "rag": ("retrieval in prompt (RAG), task-only", lambda: stage("rag-task", task_rows(train_films, rag=True),
                                                                      base, args.task_steps, args.lr), True, False),
    }
    for key in arms:
        label, run, rag, qa_stage = arm_defs[key]
        model_dir = Path(run())
        res = task_accuracy(model_dir, test_films, rag)
        if qa_stage:
            res["qa_held_out"] = qa_accuracy(out / qa_stage, test_films)
        mem_stage = {"mem": "mem", "memqa": "mem", "aug": "aug"}.get(key)
        if mem_stage:
            res["memorized_held_out"] = recall_accuracy(out / mem_stage, test_films)
        res["train_films_task"] = task_accuracy(model_dir, train_films[:10], rag)["accuracy"]
        results[label] = res
        print(f"-> {label}: held-out fact accuracy {res['accuracy']:.3f} (n={res['n']}); e.g. {res['example']}",
              flush=True)

    total = time.perf_counter() - t0
    summary = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
               "films": len(films), "test_films": len(test_films), "stages": stages, "arms": results,
               "total_time_s": round(total, 1), "threads": torch.get_num_threads()}
    (out / "results.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    chance = sum(1 / len({f[r] for f in films}) for r in RELATIONS) / len(RELATIONS)
    summary["chance"] = chance
    (out / "results.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    print("\n| arm | held-out fact accuracy (task text) | n | held-out QA exact match | memorized (held-out, "
          "completion) | train-film task accuracy |")
    print("|---|---|---|---|---|---|")
    print(f"| chance (a value drawn from each attribute's pool) | {chance:.3f} | | | | |")
    for label, r in results.items():
        qa = r.get("qa_held_out")
        mem = r.get("memorized_held_out")
        print(f"| {label} | {r['accuracy']:.3f} | {r['n']} | " + (f"{qa['exact_match']:.3f}" if qa else "-")
              + " | " + (f"{mem:.3f}" if mem is not None else "-") + f" | {r['train_films_task']:.2f} |")
    first = results.get("task-only", {}).get("accuracy")
    aug_key = next((k for k in results if k.startswith("augmented")), None)
    if first is not None and aug_key:
        ratio = results[aug_key]["accuracy"] / first if first else float("inf")
        print(f"\naugmented injection / task-only = {ratio:.1f}x; total {total / 60:.1f} min "
              f"({torch.get_num_threads()} threads)")
    print(f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
