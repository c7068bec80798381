"""Batcher in front of vLLM's offline engine vs proxy to AsyncLLM: same recipe, same load."""
import asyncio, json, os, sys, time, random
sys.path.insert(0, "/work/wt-serve/bench"); sys.path.insert(0, "/work/wt-serve")
import httpx
from serve_load import Server, throughput, chat_body, percentile

async def ttft(base, clients, per_client, max_tokens):
    firsts, totals = [], []
    async def one(seed, http):
        rng = random.Random(seed)
        for _ in range(per_client):
            body = chat_body(rng, max_tokens); body["stream"] = True
            t0 = time.perf_counter(); first = None
            async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                async for line in r.aiter_lines():
                    if '"content": "' in line and '"content": ""' not in line and first is None:
                        first = time.perf_counter() - t0
            totals.append(time.perf_counter() - t0); firsts.append(first if first is not None else totals[-1])
    async with httpx.AsyncClient(base_url=base, timeout=300, limits=httpx.Limits(max_connections=64)) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, http) for i in range(clients)))
        wall = time.perf_counter() - t0
    return {"requests": len(totals), "requests_per_s": round(len(totals) / wall, 2),
            "first_text_p50_s": round(percentile(firsts, 50), 3), "first_text_p99_s": round(percentile(firsts, 99), 3),
            "p50_s": round(percentile(totals, 50), 3)}

def main():
    out = {"load_start": os.getloadavg()}
    arms = sys.argv[1].split(",")
    for arm in arms:
        env = {"LYRICTOOL_SERVE_VLLM_BATCHER": "1" if arm == "batcher" else "0"}
        with Server("recipes/tiny/serve-vllm.yaml", env=env) as s:
            r = {"startup_s": s.startup_s}
            r["closed_loop"] = asyncio.run(throughput(s.base, 16, 6, 48))
            r["stream"] = asyncio.run(ttft(s.base, 16, 3, 96))
            print(arm, json.dumps(r), flush=True)
            out[arm] = r
    out["load_end"] = os.getloadavg()
    print(json.dumps(out, indent=1))

if __name__ == "__main__":
    main()
