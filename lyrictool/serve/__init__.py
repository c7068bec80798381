"""`lyrictool serve`: an OpenAI-compatible lyrics server (FastAPI + uvicorn, the `serve` extra).

config.py (ServeRecipe), schemas.py (request bodies), expansion.py (query expansion table), backends.py
(transformers / vLLM), batching.py (the request queue), postprocess.py (hints, layout, controls check),
app.py (the HTTP app and run_serve).  See docs/serve.md.
"""
