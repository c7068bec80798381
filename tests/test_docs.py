"""The docs: generated reference pages are current, links resolve, documented commands exist."""

from __future__ import annotations

import importlib.util
import re

from conftest import REPO

DOCS = REPO / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_reference_pages_are_current():
    gen = _generator()
    for page, make in gen.PAGES.items():
        assert (DOCS / page).read_text(encoding="utf-8") == make(), \
            f"docs/{page} is stale: run `python docs/gen_reference.py` and commit the result"


def test_recipe_reference_covers_every_recipe_field():
    from lyrictool.recipes import RECIPES, recipe_class

    page = (DOCS / "recipes.md").read_text(encoding="utf-8")
    for command in RECIPES:
        assert f"## `lyrictool {command}`" in page
        try:
            cls = recipe_class(command)
        except ImportError:
            continue
        for name, field in cls.model_fields.items():
            assert f"| `{name}` |" in page
            if field.description:
                assert field.description.replace("|", "\\|").replace("\n", " ") in page


def test_check_mode_detects_a_stale_page(tmp_path, monkeypatch):
    gen = _generator()
    monkeypatch.setattr(gen, "DOCS", tmp_path)
    for page, make in gen.PAGES.items():
        (tmp_path / page).write_text(make(), encoding="utf-8")
    assert gen.main(["--check"]) == 0
    (tmp_path / "recipes.md").write_text("# old\n", encoding="utf-8")
    assert gen.main(["--check"]) == 1


def test_links_between_pages_resolve():
    pages = list(DOCS.glob("*.md")) + [REPO / "README.md"] * (REPO / "README.md").is_file()
    for page in pages:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_commands_named_in_the_docs_exist():
    import typer

    from lyrictool.cli import app

    commands = set(typer.main.get_command(app).commands)
    for page in DOCS.glob("*.md"):
        for name in re.findall(r"`lyrictool ([a-z][a-z-]+)", page.read_text(encoding="utf-8")):
            assert name in commands, f"{page.name} documents `lyrictool {name}`, which does not exist"
