"""The CLI: fast help without heavy imports, version, exit codes."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from conftest import run_cli

HEAVY = ("torch", "transformers", "trl", "datasets", "pypinyin", "peft", "accelerate")
COMMANDS = ("inject", "sft", "score", "rejection-sample", "ppo", "dpo", "eval", "serve", "rhyme", "demo")


@pytest.mark.parametrize("argv", [["--help"], ["sft", "--help"], ["ppo", "--help"], ["eval", "--help"]])
def test_help_imports_no_heavy_library(argv):
    code = (
        "import sys\n"
        "from lyrictool.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False).stdout
    assert "HEAVY []" in out, out[-500:]


def test_help_lists_every_command():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in COMMANDS:
        assert cmd in r.stdout


def test_help_is_fast():
    subprocess.run([sys.executable, "-m", "lyrictool", "--help"], capture_output=True, check=False)  # warm the page cache
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "lyrictool", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    times.sort()
    # The bar is 0.3 s on the reference machine; allow slack for a loaded CI box but catch a heavy import (>1 s).
    assert times[2] < 0.8, times


def test_version():
    from lyrictool import __version__

    r = run_cli("--version")
    assert r.returncode == 0 and __version__ in r.stdout


def test_usage_error_exits_2():
    r = run_cli("sft")
    assert r.returncode == 2 and "recipe" in r.stderr.lower()
    r = run_cli("no-such-command")
    assert r.returncode == 2


def test_missing_recipe_file_is_one_line_exit_2(tmp_path):
    r = run_cli("sft", str(tmp_path / "nope.yaml"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "recipe not found" in r.stderr and "Traceback" not in r.stderr


def test_debug_shows_traceback(tmp_path):
    r = run_cli("sft", str(tmp_path / "nope.yaml"), "--debug")
    assert r.returncode != 0 and "Traceback" in r.stderr
