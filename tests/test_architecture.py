"""The layering of docs/architecture.md: every import inside lyrictool/ points down (or stays in its own unit),
and no modules import each other in a circle, not even inside one unit.

Imports are read with ``ast`` from every module, including the lazy ones inside functions and the ones under
``if TYPE_CHECKING:``, since this project imports most things lazily to keep ``--help`` fast.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lyrictool"

#: Bottom to top.  A unit may import itself and any unit listed before it, never one listed after it.
#: Units are the top-level modules and subpackages of lyrictool/, except that each command module under
#: train/ and commands/ is a unit of its own: commands never import each other (demo, above them, runs several).
LAYERS: list[tuple[str, ...]] = [
    ("__init__",),                          # the version
    ("errors",),                            # UserError, row_error, did_you_mean
    ("stats",),                             # t interval, bootstrap, win rate
    ("phonetics",),                         # syllables, finals, rhyme groups, the schemes
    ("lyrics",),                            # the lyrics document, hints
    ("controls",),                          # what a user can ask for; prompt text
    ("metrics",),                           # pure per-song scoring
    ("copying", "refusal"),                 # copying against a reference corpus; refusal phrases
    ("recipes",),                           # recipe loading, --set, shared sections
    ("distributed",),                       # several processes: barriers, sharded-model gather/save/merge
    ("checkpoints",),                       # the model cache; GGUF files converted into it
    ("vocab",),                             # vocabulary trimming: kept set, trimmed HF folder
    ("builtin_models",),                    # the built-in models: tiny ones built offline, the registry's Gemma
    ("modeling",),                          # model + tokenizer loading
    ("console",),                           # terminal output, --dry-run printout
    ("data",),                              # data I/O: records, lyrics rows, prompt rows, pairs, converters
    ("generation",),                        # the sampling interface; transformers and vLLM backends
    ("knowledge",),                         # knowledge corpora, injection datasets
    ("rewards",),                           # rule rewards, the scorer
    ("training",),                          # the shared train-and-save tail
    ("eval",),                              # systems, comparison, fluency, tables, report, MOS
    ("serve",),                             # the HTTP service, split by concern
    ("train.*", "commands.*"),              # one file per command
    ("demo",),                              # runs the commands end to end
    ("cli",),                               # the Typer app
    ("__main__",),                          # python -m lyrictool
]


def unit_of(module: str) -> str:
    """``lyrictool.train.sft`` -> ``train.sft``; ``lyrictool.eval.mos`` -> ``eval``; ``lyrictool`` -> ``__init__``."""
    parts = module.split(".")[1:]
    if not parts:
        return "__init__"
    if parts[0] in ("train", "commands"):
        return ".".join(parts[:2]) if len(parts) > 1 else parts[0]
    return parts[0]


def rank_of(unit: str) -> int:
    for rank, names in enumerate(LAYERS):
        for name in names:
            if unit == name or (name.endswith(".*") and unit.split(".")[0] == name[:-2]):
                return rank
    raise AssertionError(f"{unit}: not in LAYERS; add it to docs/architecture.md and to this test")


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every lyrictool import in the file, at any depth (functions, TYPE_CHECKING blocks)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "lyrictool"]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: use absolute imports (from lyrictool... import ...)"
            if node.module and node.module.split(".")[0] == "lyrictool":
                # `from lyrictool import rewards`, `from lyrictool.phonetics import engine` import the submodule
                package = PACKAGE.parent.joinpath(*node.module.split("."))
                out += [(node.lineno, f"{node.module}.{a.name}") if (package / a.name).is_dir()
                        or (package / f"{a.name}.py").is_file() else (node.lineno, node.module)
                        for a in node.names]
    return sorted(set(out))


def upward_imports(modules: dict[str, Path]) -> list[str]:
    """One message per import that points up or sideways; ``modules``: module name -> its file."""
    problems = []
    for module, path in modules.items():
        here = unit_of(module)
        for line, target in imported_modules(path):
            there = unit_of(target)
            if there != here and rank_of(there) >= rank_of(here):
                where = "above" if rank_of(there) > rank_of(here) else "beside"
                problems.append(f"{path.name}:{line}: {module} imports {target} ({there} is {where} {here})")
    return problems


def import_cycles(modules: dict[str, Path]) -> list[str]:
    """One message per group of modules that import each other in a circle (lazy and TYPE_CHECKING imports
    count: a cycle means two modules share one concept that needs a single home), with one circle's lines."""
    edges: dict[str, dict[str, int]] = {m: {} for m in modules}
    for module, path in modules.items():
        for line, target in imported_modules(path):
            if target in modules and target != module:
                edges[module].setdefault(target, line)
    # Tarjan's strongly connected components, iteratively (a component of 2+ modules contains a circle)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    problems = []
    for component in components:
        members = set(component)
        # one circle through the component's first module: breadth-first back to it, inside the component
        start = component[0]
        parent: dict[str, str] = {}
        frontier = [start]
        while frontier and start not in parent:
            nxt = []
            for node in frontier:
                for child in sorted(edges[node]):
                    if child in members and child not in parent:
                        parent[child] = node
                        nxt.append(child)
            frontier = nxt
        circle = [start]
        while circle[-1] != start or len(circle) == 1:
            circle.append(parent[circle[-1]])
        circle.reverse()
        hops = ", ".join(f"{modules[a].name}:{edges[a][b]} imports {b}" for a, b in itertools.pairwise(circle))
        problems.append(f"{' -> '.join(circle)} ({hops})")
    return problems


def package_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_points_down():
    problems = upward_imports(package_modules())
    assert not problems, "imports that do not point down (docs/architecture.md):\n" + "\n".join(problems)


def test_no_import_cycles():
    cycles = import_cycles(package_modules())
    assert not cycles, ("modules that import each other (give the shared concept one home, so the arrow points "
                        "one way):\n" + "\n".join(cycles))


def test_the_cycle_check_catches_lazy_and_long_cycles(tmp_path):
    def module(name: str, code: str) -> Path:
        path = tmp_path / name
        path.write_text(code, encoding="utf-8")
        return path

    modules = {
        # eval.mos <-> eval.study: one unit, so the layer check allows it; one of the two imports is lazy
        "lyrictool.eval.mos": module("mos.py", "def f():\n    from lyrictool.eval.study import Study\n"),
        "lyrictool.eval.study": module("study.py", "from lyrictool.eval.mos import ASPECTS\n"),
        # app -> routes -> service -> app, through `from package import submodule` (resolved on disk), the last
        # one under TYPE_CHECKING
        "lyrictool.serve.app": module("app.py", "from lyrictool.serve import routes\n"),
        "lyrictool.serve.routes": module("routes.py", "\nimport lyrictool.serve.service\n"),
        "lyrictool.serve.service": module("service.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                                        "    from lyrictool.serve.app import App\n"),
        # imports one way only: no cycle
        "lyrictool.eval.rating_form": module("rating_form.py", "import json\n"),
        "lyrictool.eval.report": module("report.py", "from lyrictool.eval import rating_form\n"),
    }
    assert upward_imports(modules) == []
    assert import_cycles(modules) == [
        ("lyrictool.eval.mos -> lyrictool.eval.study -> lyrictool.eval.mos "
         "(mos.py:2 imports lyrictool.eval.study, study.py:1 imports lyrictool.eval.mos)"),
        ("lyrictool.serve.app -> lyrictool.serve.routes -> lyrictool.serve.service -> lyrictool.serve.app "
         "(app.py:1 imports lyrictool.serve.routes, routes.py:2 imports lyrictool.serve.service, "
         "service.py:3 imports lyrictool.serve.app)"),
    ]


def test_every_unit_is_placed_and_documented():
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    for module in package_modules():
        unit = unit_of(module)
        rank_of(unit)  # raises for a unit missing from LAYERS
        if unit != "__init__":
            assert f"`{unit.split('.')[0]}" in doc, f"{unit}: not in docs/architecture.md"


def test_the_check_catches_lazy_upward_and_sideways_imports(tmp_path):
    lazy_up = tmp_path / "metrics.py"
    lazy_up.write_text("def f():\n    from lyrictool.eval.systems import COMPARED_METRICS\n", encoding="utf-8")
    typing_up = tmp_path / "controls.py"
    typing_up.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import lyrictool.serve.app\n",
                         encoding="utf-8")
    sideways = tmp_path / "dpo.py"
    sideways.write_text("from lyrictool.train.score import AspectWeights\nfrom lyrictool.training import Timer\n",
                        encoding="utf-8")
    down = tmp_path / "eval.py"
    down.write_text("from lyrictool import metrics\nfrom lyrictool.eval.mos import ASPECTS\n", encoding="utf-8")
    problems = upward_imports({"lyrictool.metrics": lazy_up, "lyrictool.controls": typing_up,
                               "lyrictool.train.dpo": sideways, "lyrictool.commands.eval": down})
    assert problems == [
        "metrics.py:2: lyrictool.metrics imports lyrictool.eval.systems (eval is above metrics)",
        "controls.py:3: lyrictool.controls imports lyrictool.serve.app (serve is above controls)",
        "dpo.py:1: lyrictool.train.dpo imports lyrictool.train.score (train.score is beside train.dpo)",
    ]


@pytest.mark.parametrize("module", ["lyrictool.errors", "lyrictool.phonetics", "lyrictool.metrics"])
def test_the_bottom_imports_nothing_heavy(module):
    """Pure domain code stays importable without torch (rewards and metrics run per sample)."""
    import subprocess
    import sys

    code = f"import sys, {module}; print([m for m in ('torch', 'transformers', 'trl') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
