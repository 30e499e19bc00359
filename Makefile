# Two commands do all setup: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck pytest proto proto-check bench reliability clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

## make run: first node of a new mesh, data in ./.tw-mesh, local API on 127.0.0.1:50052
## (its bearer token: ./.tw-mesh/api.token; the node logs where clients find it)
run: $(STAMP)
	$(VENV)/bin/tw-mesh join --data-dir ./.tw-mesh

## make test: ruff, mypy and the whole pytest suite
test: $(STAMP) system-deps
	$(PY) tools/gen_proto.py --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -q --durations=15

lint: $(STAMP)
	$(VENV)/bin/ruff check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(VENV)/bin/pytest -q --durations=15

## make proto: regenerate proto/*_pb2*.py from proto/*.proto
proto: $(STAMP)
	$(PY) tools/gen_proto.py

## system packages some tests need (installed only where missing; root on CI)
system-deps:
	@bash tools/system_deps.sh

bench: $(STAMP)
	$(PY) -m benchmarks

## make reliability: the long suite — every test incl. slow ones, 10,000 fuzz inputs per method;
## -rfEP prints what each passing test measured (inputs and status codes per method, faults, load)
reliability: $(STAMP) system-deps
	TW_FUZZ_EXAMPLES=10000 $(VENV)/bin/pytest -q -rfEP -m "slow or not slow" --timeout 3600

clean:
	rm -rf $(VENV) .tw-mesh build *.egg-info
