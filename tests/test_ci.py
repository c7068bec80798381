"""The CI entry points: the GitHub workflow can run at all, and both it and .ci/run lint before testing."""

from __future__ import annotations

from pathlib import PurePosixPath

import yaml
from conftest import REPO


def _steps() -> list[dict]:
    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8"))
    return workflow["jobs"]["test"]["steps"]


def test_workflow_checks_out_only_inside_the_workspace():
    # actions/checkout refuses a path outside $GITHUB_WORKSPACE, which once stopped the workflow before the tests.
    for step in _steps():
        if str(step.get("uses", "")).startswith("actions/checkout"):
            path = PurePosixPath((step.get("with") or {}).get("path", "."))
            assert not path.is_absolute() and ".." not in path.parts, step


def test_workflow_lays_out_the_corpus_where_the_tests_read_it():
    script = "\n".join(step.get("run", "") for step in _steps())
    for name in ("songci", "yuanqu", "shijing"):
        assert f"../shared/data/chinese-poetry/{name}" in script


def test_ruff_runs_before_the_tests_in_both_entry_points():
    runs = [step.get("run", "") for step in _steps()]
    lint = next(i for i, r in enumerate(runs) if "make lint" in r or "ruff check" in r)
    test = next(i for i, r in enumerate(runs) if "make test" in r or "pytest" in r)
    assert lint < test
    ci_run = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert ci_run.index("make lint") < ci_run.index("make test")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert "ruff check lyrictool tests bench" in makefile
