"""The `lyrictool` command line: one thin function per subcommand (read the recipe, call one function).

Heavy libraries (torch, transformers, trl, datasets, pypinyin) are imported inside the commands, so
``lyrictool --help`` stays fast.  User errors print one red line and exit 2; internal errors exit 1;
``--debug`` shows the traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lyrictool import __version__

app = typer.Typer(
    name="lyrictool",
    help="Train and serve LLMs that write controllable Chinese song lyrics "
    "(rhyme by 十三辙 group, characters per line, verse/chorus structure, format).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)

# ---- shared options -------------------------------------------------------------------------------------------
RecipeArg = Annotated[Path, typer.Argument(help="YAML recipe (see recipes/ and docs/recipes.md).", show_default=False)]
SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a recipe key, YAML-typed: --set train.learning_rate=1e-4 (repeatable).",
                 show_default=False),
]
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Validate recipe, files and every data row; print the resolved recipe; "
                       "load no model.")
]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the last checkpoint in output_dir.")]
SchemeOpt = Annotated[
    str, typer.Option("--scheme", help="Rhyme scheme: shisanzhe (十三辙), zhonghua_xinyun, zhonghua_tongyun, final.")
]
FormatOpt = Annotated[str, typer.Option("--format", help="Output format: table or json.")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lyrictool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    debug: DebugOpt = False,
) -> None:
    """lyrictool: controllable Chinese lyrics generation, from knowledge injection to serving."""
    _setup_logging()


def _setup_logging() -> None:
    import logging

    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO, format="%(message)s", datefmt="[%X]",
                        handlers=[RichHandler(show_path=False, rich_tracebacks=False)])
    logging.getLogger("lyrictool").setLevel(logging.INFO)


def _run(fn, path: Path | None, command: str, overrides: list[str] | None, **kwargs) -> None:
    """Load and validate the recipe (if one is given), then run the command; user errors about a recipe key name
    the recipe file too."""
    from lyrictool.recipes import errors_name_recipe, load_recipe

    recipe = load_recipe(path, command, overrides) if path is not None else None
    with errors_name_recipe(recipe):
        fn(recipe, **kwargs)


# ---- training commands ----------------------------------------------------------------------------------------
@app.command()
def sft(recipe: RecipeArg, set_: SetOpt = None, dry_run: DryRunOpt = False, resume: ResumeOpt = False,
        debug: DebugOpt = False) -> None:
    """Supervised fine-tuning with control prompts (TRL SFTTrainer, completion-only loss, LoRA/QLoRA)."""
    from lyrictool.train.sft import run_sft

    _run(run_sft, recipe, "sft", set_, dry_run=dry_run, resume=resume)


@app.command()
def inject(recipe: RecipeArg, set_: SetOpt = None, dry_run: DryRunOpt = False, debug: DebugOpt = False) -> None:
    """Three-stage knowledge injection: memorize (continued pre-training) -> understand (QA) -> utilize (task)."""
    from lyrictool.train.inject import run_inject

    _run(run_inject, recipe, "inject", set_, dry_run=dry_run)


@app.command()
def score(
    recipe: RecipeArg,
    set_: SetOpt = None,
    dry_run: DryRunOpt = False,
    predict: Annotated[Path | None, typer.Option("--predict", help="Score every row of this lyrics JSONL "
                                                    "with the trained scorer instead of training.")] = None,
    output: Annotated[Path | None, typer.Option("--output", help="Where --predict writes scored rows.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Train the lyrics scorer (reward model) on ratings or preferences (TRL RewardTrainer), or --predict."""
    from lyrictool.train.score import run_score

    _run(run_score, recipe, "score", set_, dry_run=dry_run, predict=predict, output=output)


@app.command("rejection-sample")
def rejection_sample(recipe: RecipeArg, set_: SetOpt = None, dry_run: DryRunOpt = False,
                     debug: DebugOpt = False) -> None:
    """LLaMA-2-style rejection sampling: K samples per prompt, keep the best by scorer + rule rewards, SFT on them."""
    from lyrictool.train.rejection_sample import run_rejection_sample

    _run(run_rejection_sample, recipe, "rejection-sample", set_, dry_run=dry_run)


@app.command()
def dpo(recipe: RecipeArg, set_: SetOpt = None, dry_run: DryRunOpt = False, debug: DebugOpt = False) -> None:
    """Direct preference optimisation on chosen/rejected lyrics (TRL DPOTrainer)."""
    from lyrictool.train.dpo import run_dpo

    _run(run_dpo, recipe, "dpo", set_, dry_run=dry_run)


@app.command()
def ppo(recipe: RecipeArg, set_: SetOpt = None, dry_run: DryRunOpt = False, debug: DebugOpt = False) -> None:
    """Online RL with several rewards. TRL removed PPOTrainer in 1.13: this runs TRL's PPO-family GRPOTrainer
    (clipped PPO objective, group-relative advantages, no critic) or RLOOTrainer (algorithm: rloo)."""
    from lyrictool.train.ppo import run_ppo

    _run(run_ppo, recipe, "ppo", set_, dry_run=dry_run)


# ---- evaluation and tools -------------------------------------------------------------------------------------
@app.command("eval")
def eval_(
    recipe: Annotated[Path | None, typer.Argument(help="Eval recipe: generate from models, then score.",
                                                     show_default=False)] = None,
    input: Annotated[list[Path] | None, typer.Option("--input", help="Score existing lyrics JSONL instead "
                                                        "(rows {lyrics, controls}); repeat to compare systems.")] = None,
    fmt: FormatOpt = "table",
    output: Annotated[Path | None, typer.Option("--output", help="Write the JSON result here.")] = None,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="Skip malformed rows (counted) "
                                               "instead of stopping.")] = False,
    scheme: Annotated[str | None, typer.Option(
        "--scheme", help="Rhyme scheme: shisanzhe (十三辙), zhonghua_xinyun, zhonghua_tongyun, final; beats the "
        "recipe's scheme.  [default: the recipe's, else shisanzhe]", show_default=False)] = None,
    mos_sheet: Annotated[Path | None, typer.Option("--mos-sheet", help="Export a blinded MOS rating sheet "
                                                      "(CSV).")] = None,
    mos_ratings: Annotated[list[Path] | None, typer.Option("--mos-ratings", help="Filled MOS sheets to "
                                                              "aggregate (repeatable).")] = None,
    mos_study: Annotated[Path | None, typer.Option("--mos-study", help="Create a browser MOS study (SQLite) "
                                                      "for `serve` /rate, or add --mos-raters to one.")] = None,
    mos_raters: Annotated[str | None, typer.Option("--mos-raters", help="Rater names for --mos-study, "
                                                      "comma-separated (default rater1,rater2,rater3).")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write a self-contained HTML report.")] = None,
    set_: SetOpt = None,
    dry_run: DryRunOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Objective metrics (rhyme, rhythm, structure, format), scorer and knowledge accuracy; compare systems; MOS."""
    from lyrictool.commands.eval import run_eval

    _run(run_eval, recipe, "eval", set_,
         inputs=input or [], fmt=fmt, output=output, skip_invalid=skip_invalid, scheme=scheme,
         mos_sheet=mos_sheet, mos_ratings=mos_ratings or [], report=report, dry_run=dry_run, mos_study=mos_study,
         mos_raters=[n for n in (mos_raters or "").split(",") if n.strip()] or None)


@app.command()
def serve(
    recipe: Annotated[Path | None, typer.Argument(help="Serve recipe (recipes/tiny/serve.yaml).",
                                                     show_default=False)] = None,
    model: Annotated[str | None, typer.Option("--model", help="Serve this model folder instead of a "
                                                 "recipe.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Bind address (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default 8000).")] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="LYRICTOOL_API_KEY",
                                                   help="Require Authorization: Bearer KEY.")] = None,
    set_: SetOpt = None,
    debug: DebugOpt = False,
) -> None:
    """An OpenAI-compatible lyrics server with controls, query expansion, batching and limits."""
    from lyrictool.commands.serve import run_serve

    _run(run_serve, recipe, "serve", set_, model=model, host=host, port=port, api_key=api_key)


@app.command()
def rhyme(
    text: Annotated[str | None, typer.Argument(help="Lyrics text (lines separated by newlines or '/').",
                                                  show_default=False)] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read lyrics from this file ('-' = stdin).")]
    = None,
    scheme: SchemeOpt = "shisanzhe",
    fmt: FormatOpt = "table",
    strictness: Annotated[str, typer.Option("--strictness", help="strict, or near: near rhymes (人辰~中东) share "
                                            "a pattern letter.")] = "strict",
    skip_particles: Annotated[bool, typer.Option("--skip-particles", help="虚字脚: rhyme on the syllable before a "
                                                 "trailing particle (吗 吧 了 的 ...); off: the particle rhymes.")]
    = False,
    debug: DebugOpt = False,
) -> None:
    """Per line: the last sung syllable, its pinyin final, tone, rhyme group and letter in its section's rhyme
    pattern (A A B B; X = rhymes with no other line of the section)."""
    from lyrictool.commands.rhyme import run_rhyme

    run_rhyme(text, str(file) if file is not None else None, scheme, fmt, strictness, skip_particles)


@app.command()
def demo(
    output_dir: Annotated[Path, typer.Option("--output-dir", help="Where the demo writes its runs.")]
    = Path("runs/demo"),
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check the recipes and read every data file the demo "
                                          "uses; train nothing.")] = False,
    quick: Annotated[bool, typer.Option("--quick", help="Every step for one or two optimizer steps on a few prompts: "
                                        "checks the whole chain in seconds; the models learn nothing.")] = False,
    debug: DebugOpt = False,
) -> None:
    """The whole method on the built-in tiny model, offline, in minutes: inject -> SFT with hints -> scorer ->
    rejection sampling -> eval of base vs final."""
    from lyrictool.demo import dry_run as demo_dry_run
    from lyrictool.demo import run_demo

    if dry_run:
        demo_dry_run(output_dir)
    else:
        run_demo(output_dir, quick=quick)


data_app = typer.Typer(help="Convert public corpora into lyrics rows {lyrics, controls}.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("chinese-poetry")
def data_chinese_poetry(
    source: Annotated[Path, typer.Argument(help="A chinese-poetry JSON file or folder (宋词 ci.song.*.json, "
                                           "元曲 yuanqu.json).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output JSONL of lyrics rows.")],
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many rows.")] = None,
    debug: DebugOpt = False,
) -> None:
    """Convert the chinese-poetry JSON format (tune name / title becomes a control; lines kept)."""
    from lyrictool.commands.convert import run_convert_chinese_poetry

    run_convert_chinese_poetry(source, output, limit=limit)


@data_app.command("flames")
def data_flames(
    source: Annotated[Path, typer.Argument(help="Flames_1k_Chinese.jsonl (e.g. ../shared/data/safety/flames/), "
                                           "read in place.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output JSONL of song-request prompt rows.")],
    n: Annotated[int | None, typer.Option("--n", help="Sample this many prompts (seeded); all when omitted.")] = 200,
    judge_share: Annotated[float, typer.Option("--judge-share", help="Share of the sample (by prompt, per "
                                               "dimension) marked split: judge; the rest split: scorer.")] = 0.5,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    debug: DebugOpt = False,
) -> None:
    """Turn Flames prompts into red-team song requests {id, category, safety: true, split, controls}."""
    from lyrictool.commands.convert import run_convert_flames

    run_convert_flames(source, output, n=n, judge_share=judge_share, seed=seed)


# ---- entry point ----------------------------------------------------------------------------------------------
def _err_console():
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI: user errors -> one red line, exit 2; internal errors -> exit 1; tracebacks with --debug."""
    try:  # typer >= 0.24 vendors click; older releases use click itself
        from typer._click import exceptions as click_exceptions
    except ImportError:  # pragma: no cover
        from click import exceptions as click_exceptions

    from lyrictool.errors import UserError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        rv = app(args=args, standalone_mode=False, prog_name="lyrictool")
    except UserError as e:
        if debug:
            raise
        from rich.markup import escape

        _err_console().print(f"[bold red]error:[/] {escape(str(e))}")
        sys.exit(2)
    except typer.Abort:
        _err_console().print("aborted")
        sys.exit(130)
    except click_exceptions.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except ModuleNotFoundError as e:
        if debug:
            raise
        if (e.name or "").startswith("lyrictool."):
            _err_console().print(f"[bold red]not built yet:[/] this command needs {e.name}, which is not part of "
                                 "this version")
        else:
            _err_console().print(f"[bold red]missing dependency:[/] {e.name} (pip install it, or the extra that "
                                 "provides it)")
        sys.exit(1)
    except KeyboardInterrupt:
        _err_console().print("interrupted")
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as e:
        if debug:
            raise
        _err_console().print(f"[bold red]internal error:[/] {type(e).__name__}: {e} (run with --debug for the "
                             "traceback; please report it)")
        sys.exit(1)
    from lyrictool.distributed import shutdown

    shutdown()
    if isinstance(rv, int) and rv:
        sys.exit(rv)


if __name__ == "__main__":  # pragma: no cover
    main()
