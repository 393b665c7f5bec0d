# Each target creates .venv on first use and installs what it needs into it.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= -q

.PHONY: test demo bench scale experiment clean

$(VENV)/.core: setup.py
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.bench: $(VENV)/.core
	$(PY) -m pip install -q -e '.[bench]'
	touch $@

test: $(VENV)/.test
	$(PY) -m pytest $(PYTEST_ARGS) tests

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
