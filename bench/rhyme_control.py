"""Does phonetic knowledge plus hints make a model rhyme as asked?  Three arms on the 宋词 corpus.

Data: 宋词 from the chinese-poetry corpus (``--data``, default ../shared/data/chinese-poetry/songci), converted
by ``lyrictool data chinese-poetry``'s converter; songs whose lines mostly share one rhyme group (the derived
``rhyme`` control) and that are short enough for the tiny model.  Prompt = the tune name (词牌, ``title``) and
the requested rhyme group; held-out songs give the test prompts.

Arms, all `lyrictool inject` runs of the built-in tiny model with the same SFT (utilize) stage budget:
  plain SFT             utilize only, no hints
  SFT + hints           utilize only, targets carry 〔group〕 before each line's last character
  phonetic + SFT+hints  memorize + understand builtin:phonetic (the characters of the training songs),
                        then the same SFT with hints
  SFT + hints, matched  (--arms hints_matched) SFT with hints for as many steps as the three stages above
                        together: is it the knowledge, or just more training?

Metric: rhyme accuracy = share of generated lines whose last sung syllable is in the requested group
(lyrictool.metrics.song_metrics), one sample per held-out prompt.  Floor: the requested group's base rate
(share of all training line-ends in that group, averaged over the prompts) -- what a model that ignores the
request scores.  Ceiling reference: the held-out songs themselves.

    .venv/bin/python bench/rhyme_control.py            # prints a table, writes runs/bench/rhyme_control/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_songs(data: Path, max_lines: int, max_chars: int) -> list[dict]:
    from lyrictool.controls import derive_controls
    from lyrictool.data.convert import iter_chinese_poetry
    from lyrictool.phonetics import syllable_count

    songs = []
    for row, _where in iter_chinese_poetry(data):
        if row is None:
            continue
        lines = row["lyrics"].split("\n")
        if len(lines) > max_lines or sum(syllable_count(x) for x in lines) > max_chars:
            continue
        rhyme = derive_controls(row["lyrics"], ["rhyme"]).get("rhyme")
        if rhyme:
            songs.append({"lyrics": row["lyrics"], "controls": {"title": row["controls"].get("title"),
                                                                "rhyme": rhyme}})
    return songs


def hint_diagnostics(raw_texts: list[str], requested: list[str]) -> dict:
    """For models that write hints: how often the hint names the requested group, and how often the character
    after a hint really is in the hinted group (commit to a group, then find a character of it)."""
    import re

    from lyrictool.lyrics import strip_hints
    from lyrictool.phonetics import rhyme_group

    hint = re.compile(r"〔([^〔〕]+)〕")
    lines = asked = agree = 0
    for text, want in zip(raw_texts, requested):
        for line in text.split("\n"):
            m = hint.search(line)
            if not m:
                continue
            lines += 1
            asked += m.group(1) == want
            agree += rhyme_group(strip_hints(line)) == m.group(1)
    if not lines:
        return {}
    return {"hinted_lines": lines, "hint_is_requested_group": asked / lines, "char_matches_its_hint": agree / lines}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "chinese-poetry" / "songci")
    ap.add_argument("--train-songs", type=int, default=3000)
    ap.add_argument("--test-prompts", type=int, default=100)
    ap.add_argument("--max-lines", type=int, default=10)
    ap.add_argument("--max-chars", type=int, default=50)
    ap.add_argument("--sft-steps", type=int, default=250)
    ap.add_argument("--mem-steps", type=int, default=150)
    ap.add_argument("--qa-steps", type=int, default=80)
    ap.add_argument("--chars", type=int, default=400, help="characters described by the phonetic knowledge")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--arms", default="plain,hints,phonetic")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 when the machine is busy)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "rhyme_control")
    ap.add_argument("--reuse", action="store_true", help="re-evaluate arms already trained in --out")
    args = ap.parse_args()

    import torch

    from lyrictool.data import write_jsonl
    from lyrictool.generation import generate_lyrics
    from lyrictool.metrics import song_metrics
    from lyrictool.modeling import load_model
    from lyrictool.phonetics import line_groups
    from lyrictool.recipes import ModelSpec
    from lyrictool.train.inject import InjectRecipe, run_inject

    busy = os.getloadavg()[0] > (os.cpu_count() or 1) * 0.5
    torch.set_num_threads(args.threads or (1 if busy else (os.cpu_count() or 1)))
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    songs = load_songs(args.data, args.max_lines, args.max_chars)
    random.Random(args.seed).shuffle(songs)
    test, train = songs[: args.test_prompts], songs[args.test_prompts: args.test_prompts + args.train_songs]
    train_path = out / "train.jsonl"
    write_jsonl(train_path, train)
    print(f"{len(songs)} usable 宋词; {len(train)} train, {len(test)} test prompts", flush=True)

    line_ends = Counter(g for s in train for g in line_groups(s["lyrics"].split("\n")) if g)
    total = sum(line_ends.values())
    floor = sum(line_ends[s["controls"]["rhyme"]] / total for s in test) / len(test)
    reference = sum(song_metrics(s["lyrics"], {"rhyme": s["controls"]["rhyme"]})["rhyme_accuracy"]
                    for s in test) / len(test)

    sft_train = {"max_steps": args.sft_steps, "learning_rate": args.lr, "per_device_train_batch_size": args.batch,
                 "gradient_checkpointing": False, "max_length": 256, "lr_scheduler_type": "cosine",
                 "warmup_steps": 0.05, "dataloader_pin_memory": False}
    knowledge_train = dict(sft_train, per_device_train_batch_size=32)

    def utilize(hints: str, steps: int | None = None) -> dict:
        train = dict(sft_train, max_steps=steps or args.sft_steps)
        return {"name": "utilize", "train": train, "eval_generation": {"num_prompts": 0},
                "data": {"train": str(train_path), "controls": ["title", "rhyme"], "derive": ["rhyme"],
                         "hints": hints}}

    arm_stages = {
        "plain": ("plain SFT", [], [utilize("none")]),
        "hints": ("SFT + hints", [], [utilize("line_end")]),
        "hints_matched": ("SFT + hints, as many steps as the injection arm's three stages", [],
                          [utilize("line_end", args.sft_steps + args.mem_steps + args.qa_steps)]),
        "phonetic": ("phonetic injection + SFT + hints",
                     [{"builtin": "phonetic", "chars_from": str(train_path), "max_chars": args.chars}],
                     [{"name": "memorize", "train": dict(knowledge_train, max_steps=args.mem_steps)},
                      {"name": "understand", "train": dict(knowledge_train, max_steps=args.qa_steps)},
                      utilize("line_end")]),
    }
    results = {}
    for key in args.arms.split(","):
        label, knowledge, stages = arm_stages[key]
        recipe = InjectRecipe.model_validate({
            "model": {"name": "builtin:tiny-zh"}, "knowledge": knowledge, "augment": {"paraphrases": 2},
            "qa_eval_fraction": 0.1, "qa_eval_max": 100 if knowledge else 0, "stages": stages,
            "output_dir": str(out / key), "seed": args.seed})
        recipe._source = "bench/rhyme_control.py"
        print(f"== {label}", flush=True)
        done = out / key / "summary.json"
        summary = json.loads(done.read_text(encoding="utf-8")) if args.reuse and done.exists() else run_inject(recipe)
        lm = load_model(ModelSpec(name=str(out / key)), announce=False)
        controls = [s["controls"] for s in test]
        samples = generate_lyrics(lm.model, lm.tokenizer, controls, n=1, max_new_tokens=160,
                                  temperature=args.temperature, top_p=0.95, batch_size=32, seed=args.seed)
        scores = [song_metrics(s[0].text, c)["rhyme_accuracy"] for s, c in zip(samples, controls)]
        hinted = hint_diagnostics([s[0].raw for s in samples], [c["rhyme"] for c in controls])
        res = {"rhyme_accuracy": sum(scores) / len(scores), "n_prompts": len(scores),
               "songs_mostly_in_group": sum(x >= 0.5 for x in scores) / len(scores), **hinted,
               "stages": [{k: s.get(k) for k in ("name", "steps", "train_loss_first", "train_loss_last", "time_s",
                                                 "knowledge_qa")} for s in summary["stages"]],
               "examples": [{"controls": c, "lyrics": s[0].text} for s, c in list(zip(samples, controls))[:3]]}
        results[label] = res
        print(f"-> {label}: rhyme accuracy {res['rhyme_accuracy']:.3f} (n={len(scores)} prompts)", flush=True)

    total_s = time.perf_counter() - t0
    summary = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
               "train_songs": len(train), "test_prompts": len(test), "base_rate_floor": floor,
               "reference_songs": reference, "arms": results, "total_time_s": round(total_s, 1),
               "threads": torch.get_num_threads()}
    (out / "results.json").write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    print("\n| arm | rhyme accuracy vs requested group | songs with >= half the lines in it | n prompts |")
    print("|---|---|---|---|")
    print(f"| floor: requested group's base rate | {floor:.3f} | - | {len(test)} |")
    for label, r in results.items():
        diag = (f" (hints name the requested group on {r['hint_is_requested_group']:.0%} of lines; the character "
                f"after a hint is in its group on {r['char_matches_its_hint']:.0%})" if "hinted_lines" in r else "")
        print(f"| {label}{diag} | {r['rhyme_accuracy']:.3f} | {r['songs_mostly_in_group']:.3f} | {r['n_prompts']} |")
    print(f"| reference: the held-out songs themselves | {reference:.3f} | - | {len(test)} |")
    print(f"\ntotal {total_s / 60:.1f} min ({torch.get_num_threads()} threads); results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
