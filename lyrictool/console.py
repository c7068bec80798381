"""The terminal: one rich console for results, one for progress on stderr, --format, and the --dry-run printout."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from lyrictool.errors import UserError

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

FORMATS = ("table", "json")


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose one of: {', '.join(FORMATS)}")


def print_dry_run(recipe, checks: dict[str, Any]) -> None:
    """Check the model settings (without loading weights) and print the resolved recipe and data checks."""
    from rich.syntax import Syntax

    from lyrictool.modeling import check_model_spec
    from lyrictool.recipes import ModelSpec, dump_recipe, recipe_source

    if isinstance(getattr(recipe, "model", None), ModelSpec):
        checks = {**check_model_spec(recipe.model), **checks}

    console.print(f"[bold green]recipe OK[/] {recipe_source(recipe)}")
    console.print(Syntax(dump_recipe(recipe), "yaml", theme="ansi_dark", background_color="default"))
    for k, v in checks.items():
        console.print(f"  {k}: {v}")
    console.print("dry run: no model loaded, nothing written")
