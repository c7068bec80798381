"""The installed package, not the source checkout, runs the demo: everything it needs ships in the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import REPO


def _run(cmd: list[str], cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, check=False, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{cmd}\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    return r


def test_wheel_runs_the_demo_from_an_empty_folder(tmp_path):
    # build from a copy of what the wheel is made of, so the build leaves nothing in the checkout
    src = tmp_path / "src"
    src.mkdir()
    shutil.copytree(REPO / "lyrictool", src / "lyrictool", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run(pip + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", str(src), "-w", str(tmp_path / "dist")],
         cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("lyrictool-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for data in ("songs.jsonl", "ratings.jsonl", "preferences.jsonl", "prompts.jsonl", "eval-prompts.jsonl"):
        assert f"lyrictool/data/demo/{data}" in names
    assert "lyrictool/data/vocab/gemma-3-270m.json" in names  # the trimmed Gemma's kept set: no ../shared in a wheel

    site = tmp_path / "site"
    _run(pip + ["install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], cwd=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}

    where = _run([sys.executable, "-c", "import lyrictool; print(lyrictool.__file__)"], cwd=empty, env=env)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout  # the installed copy, not the checkout

    script = site / "bin" / "lyrictool"  # the console script the wheel installs
    help_ = _run([str(script), "demo", "--help"], cwd=empty, env=env)
    assert "--output-dir" in help_.stdout and "--dry-run" in help_.stdout

    dry = _run([sys.executable, "-m", "lyrictool", "demo", "--dry-run", "--output-dir", "out"], cwd=empty, env=env)
    files = [line.split(": ", 1)[1].rsplit(" (", 1)[0] for line in dry.stdout.splitlines()
             if line.strip().startswith("builtin:")]
    assert len(files) == 4, dry.stdout  # songs, ratings, sampling prompts, eval prompts
    for f in files:
        assert Path(f).is_relative_to(site) and Path(f).is_file(), f
    assert "recipes OK" in dry.stdout
    assert list(empty.iterdir()) == []  # a dry run writes nothing
