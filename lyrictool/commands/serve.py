"""`lyrictool serve`: the recipe with the command line's flags on top, the model loaded, then uvicorn until stopped."""

from __future__ import annotations

import logging

from lyrictool.errors import UserError
from lyrictool.recipes import ModelSpec, with_flags
from lyrictool.serve.app import create_app
from lyrictool.serve.backends import load_backend
from lyrictool.serve.config import ServeRecipe

log = logging.getLogger("lyrictool")


def run_serve(recipe: ServeRecipe | None, model: str | None = None, host: str | None = None, port: int | None = None,
              api_key: str | None = None) -> None:
    """`lyrictool serve`: load the model, then serve until Ctrl-C / SIGTERM (in-flight requests finish)."""
    import importlib.util

    for module in ("fastapi", "uvicorn", "prometheus_client"):
        if importlib.util.find_spec(module) is None:
            raise UserError(f"serve needs {module}: pip install 'lyrictool[serve]'")
    if recipe is None:
        if not model:
            raise UserError("give a serve recipe (e.g. recipes/tiny/serve.yaml) or --model PATH")
        recipe = ServeRecipe(model=ModelSpec(name=model))
    recipe = with_flags(recipe, {"model.name": model, "host": host, "port": port})
    if recipe.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        log.warning("binding %s without --api-key: anyone who can reach this address can use the model",
                    recipe.host)
    import uvicorn

    if recipe.seed is not None:
        import torch

        torch.manual_seed(recipe.seed)
    backend = load_backend(recipe)
    app = create_app(recipe, backend, api_key)
    log.info("lyrictool serve: http://%s:%d/v1 (model id %s%s)", recipe.host, recipe.port, recipe.model_id(),
             ", API key required" if api_key else "")
    if recipe.pages.playground:
        log.info("playground: http://%s:%d/", recipe.host, recipe.port)
    if recipe.pages.rate:
        log.info("blind rating: http://%s:%d/rate#token=... (%s)", recipe.host, recipe.port,
                 f"study {recipe.pages.study}" if recipe.pages.study else "no study: set pages.study")
    try:
        uvicorn.run(app, host=recipe.host, port=recipe.port, log_level="warning",
                    timeout_graceful_shutdown=int(recipe.limits.shutdown_timeout_s) or None)
    finally:
        close = getattr(backend, "close", None)
        if close is not None:  # vLLM: stop the engine's processes before the interpreter tears down
            close()
