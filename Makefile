# The two README commands: `make demo` and `make test`. Each creates .venv
# if missing and installs the pinned requirements (nothing else needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdir/demo
CONFIG ?= configs/demo.py
PYTEST_ARGS ?=

.PHONY: demo test test-fast tpu-extra bench format lint clean-venv

$(VENV)/.installed: requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

# Reference implementations for tests and benchmarks only (torch CPU,
# transformers, mergekit): `make demo` does not need them.
$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install -q -r requirements.txt -r requirements-test.txt
	touch $@

# The TPU extra (jax[tpu] = libtpu, about 700 MB): XLA:TPU compiles for
# compile-only devices on this CPU machine, so tests/test_tpu_compile.py
# runs instead of skipping. Not part of `make test` (the default install
# stays light); CI installs it (.ci/run: make tpu-extra, then make test).
$(VENV)/.installed-tpu: $(VENV)/.installed requirements-tpu.txt
	$(PY) -m pip install -q -r requirements-tpu.txt
	touch $@

tpu-extra: $(VENV)/.installed-tpu

demo: $(VENV)/.installed
	$(PY) -m demix_jax.main --config=$(CONFIG) --workdir=$(WORKDIR)

test: $(VENV)/.installed-test
	$(PY) -m pytest tests $(PYTEST_ARGS)

test-fast: $(VENV)/.installed-test
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)

bench: $(VENV)/.installed-test
	for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# The dev tools (pyink, ruff, mypy) are test requirements.
format: $(VENV)/.installed-test
	$(VENV)/bin/pyink demix_jax configs tests bench launch

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check demix_jax configs tests bench launch notebooks
	$(PY) notebooks/strip_outputs.py --check
	$(VENV)/bin/pyink --check demix_jax configs tests bench launch
	$(VENV)/bin/mypy demix_jax

clean-venv:
	rm -rf $(VENV)
