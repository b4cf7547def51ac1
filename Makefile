PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the versions the tests and benchmarks ran on (a constraints file: `make lock` rewrites it)
LOCK := requirements/lock.txt

.PHONY: demo test test-slow lint lock bench validation clean

$(STAMP): pyproject.toml $(LOCK)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/dormancy demo --out out/demo

# docs/validation.md (+ .csv, .png): published numbers beside the model's; REPLICATES=200 for
# the acceptance of issue 14; POSTERIOR=fits/clever_posterior.json: the trial rows become the
# posterior predictive check over its draws
REPLICATES ?= 40
POSTERIOR ?=
validation: $(STAMP)
	$(BIN)/python scripts/validation.py --replicates $(REPLICATES) --seed 1 --out docs \
		$(if $(POSTERIOR),--posterior $(POSTERIOR))

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=15

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/lint-imports --no-logo

# record the versions now in .venv (after upgrading there and re-running tests and benchmarks):
# pip-compile (in its own venv) resolves pyproject's deps + dev extra, pinned to `pip freeze`
lock: $(STAMP)
	test -x $(VENV)/lock-tools/bin/pip-compile || \
	  ($(PY) -m venv $(VENV)/lock-tools && $(VENV)/lock-tools/bin/pip install --quiet pip-tools==7.6.2)
	$(BIN)/pip freeze --exclude-editable > $(VENV)/freeze.txt
	$(VENV)/lock-tools/bin/pip-compile --quiet --strip-extras --extra dev \
	  --annotation-style line --no-emit-index-url --no-emit-find-links \
	  -c $(VENV)/freeze.txt -o $(LOCK) pyproject.toml
	touch $(STAMP)

bench: $(STAMP)
	$(BIN)/python benchmarks/simulate_bench.py

clean:
	rm -rf $(VENV) out
