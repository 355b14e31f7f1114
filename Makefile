# `make test` and `make demo` each set up .venv on a fresh machine, then run.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo lint bench bench-remote bench-root clean xrootd-server

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first, pinned: a bare requirement could pull a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

test: $(STAMP) xrootd-server
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports  # the layers of docs/architecture.md
	$(PY) -m pytest

# The XRootD server of the remote-reading tests, from apt where there is apt and it is
# missing; without it those tests skip, saying why.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)
xrootd-server:
	@command -v xrootd >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq xrootd-server xrootd-client >/dev/null; } || \
	  echo "could not install xrootd-server with apt: the XRootD tests will be skipped"

demo: $(STAMP)
	$(PY) examples/train_demo.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m ruff format --check .

bench: $(STAMP)
	$(PY) benchmarks/loader.py

bench-remote: $(STAMP) xrootd-server
	$(PY) benchmarks/remote.py

# ROOT's RDataLoader as a peer in the loader benchmark, from PyPI's `root` (~250 MB), in a
# venv of its own so that the project's never depends on it.
ROOT_VENV ?= .venv-root
bench-root: $(STAMP)
	[ -x $(ROOT_VENV)/bin/python ] || { $(PYTHON) -m venv $(ROOT_VENV) && \
	  $(ROOT_VENV)/bin/pip install --quiet root numpy; }
	$(PY) benchmarks/loader.py --root-python $(ROOT_VENV)/bin/python

clean:
	rm -rf $(VENV) demo-output .pytest_cache .ruff_cache
