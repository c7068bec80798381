"""MEASUREMENT ONLY (with the prototype in this commit): serve's own batcher in front of vLLM's offline engine
vs serve as a proxy to vLLM's AsyncLLM (continuous batching).  Both servers run at once, the same closed-loop load
goes to each in alternating rounds (so the shared box's load falls on both alike), and each server's CPU seconds
(uvicorn process + vLLM's EngineCore and worker) are read from /proc around each round.

    LYRICTOOL_CACHE=... python bench/serve_vllm_batcher_vs_proxy.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import Server, throughput  # noqa: E402


def tree_cpu(pid: int) -> float:
    p = psutil.Process(pid)
    total = 0.0
    for q in [p, *p.children(recursive=True)]:
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--per-client", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=48)
    args = ap.parse_args()
    out: dict = {"load_start": [round(x, 2) for x in os.getloadavg()], "rounds": []}
    with Server("recipes/tiny/serve-vllm.yaml", env={"LYRICTOOL_SERVE_VLLM_BATCHER": "1"}) as batcher, \
            Server("recipes/tiny/serve-vllm.yaml", env={"LYRICTOOL_SERVE_VLLM_BATCHER": "0"}) as proxy:
        out["startup_s"] = {"batcher": batcher.startup_s, "proxy": proxy.startup_s}
        servers = {"batcher": batcher, "proxy": proxy}
        for name, s in servers.items():  # warm-up round, not counted
            asyncio.run(throughput(s.base, args.clients, 1, args.max_tokens))
        for i in range(args.rounds):
            order = ["batcher", "proxy"] if i % 2 == 0 else ["proxy", "batcher"]
            row = {}
            for name in order:
                s = servers[name]
                c0 = tree_cpu(s.proc.pid)
                r = asyncio.run(throughput(s.base, args.clients, args.per_client, args.max_tokens))
                r["server_cpu_s"] = round(tree_cpu(s.proc.pid) - c0, 2)
                r["cpu_s_per_request"] = round(r["server_cpu_s"] / max(1, r["requests"]), 4)
                row[name] = r
                print(i, name, json.dumps(r), flush=True)
            out["rounds"].append(row)
    out["load_end"] = [round(x, 2) for x in os.getloadavg()]
    for name in ("batcher", "proxy"):
        rows = [r[name] for r in out["rounds"]]
        out[name] = {k: statistics.median(x[k] for x in rows)
                     for k in ("requests_per_s", "p50_s", "p99_s", "cpu_s_per_request")}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
