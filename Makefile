# Each target creates .venv on first use and installs what it needs into it.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -q
# uv installs the same requirements as pip, in a fraction of the time. It does
# not read pip's configuration, so the wheel folders pip is configured with
# (find-links, e.g. where a CPU-only torch lies) are handed to it.
UV_INSTALL = $(VENV)/bin/uv pip install -q --python $(PY) \
	$(addprefix --find-links=,$(sort $(shell python3 -m pip config list 2>/dev/null \
	| sed -n "s/^[^=]*find-links='\(.*\)'$$/\1/p")))

.PHONY: test demo bench scale experiment clean

$(VENV)/.core: setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip uv
	$(UV_INSTALL) -e .
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(UV_INSTALL) -e '.[test]'
	touch $@

$(VENV)/.bench: $(VENV)/.core
	$(UV_INSTALL) -e '.[bench]'
	touch $@

# Two pytest-xdist workers keep two cores busy (a test's tracing and XLA
# compiles are mostly single-threaded); each test file runs whole on one
# worker, so its module fixtures are built once.
TEST_WORKERS ?= 2
test: $(VENV)/.test
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS) tests

demo: $(VENV)/.core
	$(PY) -m hyperprompt.demo

bench: $(VENV)/.bench
	$(PY) -m bench.run

# Compiles T5.1.1 base..XXL for TPU slices (libtpu, from the test extra) and
# writes the table into BENCHMARKS.md; resumes from bench/scale.json.
scale: $(VENV)/.test
	$(PY) -m bench.scale

experiment: $(VENV)/.core
	$(PY) -m study.run

clean:
	rm -rf $(VENV)
