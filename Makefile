# The two commands of the README: `make demo` (the main job) and `make test` (what CI runs).
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin

.PHONY: install demo serve test lint world world-quick clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: this machine kind keeps the CPU build of 2.13.0 on disk (/opt/wheels);
	# an unpinned torch would download a multi-GB CUDA build.
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install  ## service + worker on embedded defaults, then a real erasure over HTTP
	$(BIN)/zerase demo

serve: install
	$(BIN)/zerase serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# One pytest process per core, each module whole on one of them (its fixtures train once), each with one torch
# thread: the tiny model's kernels gain little from a second thread, and two processes use both cores all along.
# Every session makes its own database, Redis prefix, S3 server and temporary files (tests/service/conftest.py).
test: lint  ## ruff, mypy, then the whole suite on real Postgres, Redis and an S3 API
	OMP_NUM_THREADS=1 $(PY) -m pytest -n auto --dist loadfile --no-loadscope-reorder; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc

world: install  ## rebuild the bundled tiny model: a build, then two more cycles of its transformer (~80 min on 2 cores)
	$(BIN)/zerase world build --out var/world-base
	$(BIN)/zerase world build --continue-from var/world-base --transformer-steps 2500 --out var/world-cycle2
	$(BIN)/zerase world build --continue-from var/world-cycle2 --transformer-steps 2500 --out zerase/assets/tiny-world

world-quick: install
	$(BIN)/zerase world build --quick --out var/tiny-world-quick

clean:
	rm -rf var/ .pytest_cache .mypy_cache .ruff_cache
