# Developer entry points. `make run` and `make test` work from a fresh clone.
# Another interpreter gets its own venv, so `make test PYTHON=python3.12` leaves
# .venv alone (the cached llama.cpp wheel serves every Python version).
PYTHON ?= python3
VENV ?= $(if $(filter python3,$(PYTHON)),.venv,.venv-$(notdir $(PYTHON)))
MODEL_FILE := SmolLM2-135M-Instruct.Q4_1.gguf
MODEL := models/$(MODEL_FILE)
RUN_ARGS ?=

.PHONY: setup models run test test-fast test-fleet check lint typecheck bench clean

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml scripts/setup-venv.sh scripts/llama-wheel.sh
	PYTHON=$(PYTHON) scripts/setup-venv.sh $(VENV)
	touch $@

models: $(MODEL)

$(MODEL): | $(VENV)/.setup-done
	$(VENV)/bin/python scripts/fetch_default_model.py models

run: setup models
	$(VENV)/bin/rkllmd --models-dir ./models --load $(basename $(MODEL_FILE)) $(RUN_ARGS)

# tests/fleet needs Debian's haproxy; it has its own target (CI runs both).
test: setup models
	$(VENV)/bin/pytest -q --ignore=tests/fleet

# Three daemons behind a real HAProxy running docs/scale-out.md's configuration,
# and behind LiteLLM's proxy (its own venv, built once under ~/.cache/rkllmd).
test-fleet: setup
	litellm=$$(scripts/litellm-venv.sh) && RKLLMD_TEST_LITELLM=$$litellm $(VENV)/bin/pytest -q tests/fleet

# The inner loop: unit tests, and the transports through real worker processes that
# host a deterministic fake backend instead of llama.cpp (about a minute).
FAST_TESTS := tests/test_*.py tests/catalog tests/chat tests/structured tests/systemd tests/http tests/rpc
test-fast: setup models
	_RKLLMD_TEST_BACKEND=fake $(VENV)/bin/pytest -q $(FAST_TESTS)

check: lint typecheck

lint: setup
	$(VENV)/bin/ruff check daemon ctl tests bench scripts
	$(VENV)/bin/ruff format --check daemon ctl

typecheck: setup
	$(VENV)/bin/mypy

bench: setup models
	$(VENV)/bin/python bench/control.py
	$(VENV)/bin/python bench/registry.py
	$(VENV)/bin/python bench/footprint.py

clean:
	rm -rf .venv .venv-* .mypy_cache .ruff_cache .pytest_cache

.PHONY: test-package test-arm64
# Packages are built and tested in containers (needs root; see docs/packaging.md).
# DIST: bookworm (Debian 12, Python 3.11) or trixie (Debian 13, Python 3.13).
DIST ?= bookworm
# Build the .deb in a DIST container and test it in a booted DIST container.
test-package: models
	DIST=$(DIST) tests/packaging/run.sh
# The same for arm64 under qemu-user-static, plus the RKLLM test double on aarch64.
test-arm64: models
	DIST=$(DIST) ARCH=arm64 tests/packaging/run.sh
