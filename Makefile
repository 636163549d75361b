# Two entry points: `make demo` and `make test`. Each sets itself up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch first, so nothing pulls a multi-GB CUDA build (see README).
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test lint setup clean protos

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/i2i demo

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest

# Regenerate the protocol modules (src/i2i/v1, src/i2i/oip) from protos/; commit the result.
protos: setup
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=src --grpc_python_out=src \
		--pyi_out=src protos/i2i/v1/translator.proto
	$(BIN)/python -m grpc_tools.protoc -I protos --python_out=src --grpc_python_out=src \
		--pyi_out=src protos/i2i/oip/model_config.proto protos/i2i/oip/grpc_service.proto

clean:
	rm -rf $(VENV) demo .pytest_cache .ruff_cache .mypy_cache
