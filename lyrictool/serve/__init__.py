"""`lyrictool serve`: an OpenAI-compatible lyrics server (FastAPI + uvicorn, the `serve` extra).

config.py (ServeRecipe), schemas.py (request bodies), errors.py (OpenAI-shaped errors), metrics.py (Prometheus),
middleware.py (API key, body cap), backends.py (transformers / vLLM), batching.py (the request queue: our batcher
for transformers, admission in front of vLLM's continuous batching), service.py (limits, generation, expansion),
routes.py (the endpoints), streaming.py (SSE), expansion.py (query expansion table), postprocess.py (hints,
layout, controls check), app.py (create_app).  The command, run_serve, is lyrictool.commands.serve.  See
docs/serve.md.
"""
