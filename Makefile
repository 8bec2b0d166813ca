# CabinLink front door. `make demo` and `make test` bootstrap .venv by themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp
ARGS   ?=

.PHONY: help demo test test-fast bench registry mpy-check clean

help:
	@echo "make demo        run the CabinLink exchange on the simulated bus (ARGS=... passes options)"
	@echo "make test        bootstrap .venv and run the whole test suite"
	@echo "make bench       print the benchmark table"
	@echo "make registry    regenerate firmware/lib/cabinlink/registry.py from spec/registry.json"
	@echo "make mpy-check   compile every firmware file with mpy-cross"
	@echo "make clean       remove .venv and build output"

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

demo: $(STAMP)
	$(BIN)/cabinlink demo $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py $(ARGS)

registry: $(STAMP)
	$(BIN)/python -m cabinlink_tools.registry_gen --write

mpy-check: $(STAMP)
	$(BIN)/python -m cabinlink_tools.mpycheck

clean:
	rm -rf $(VENV) build *.egg-info out
