# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: venv demo test lock clean benchmark

venv: $(STAMP)

# The environment is rebuilt only when the lock file changes.
$(STAMP): requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	@touch $@

demo: venv
	$(PY) -m pipeline demo $(DEMO_ARGS)

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

# Re-resolve the top-level requirements and pin the result.
lock:
	rm -rf /tmp/wit-lock && $(PYTHON) -m venv /tmp/wit-lock
	/tmp/wit-lock/bin/pip install --quiet -r requirements.txt
	/tmp/wit-lock/bin/pip freeze --exclude-editable > requirements.lock

benchmark: venv
	$(PY) benchmarks/ingest_benchmark.py

clean:
	rm -rf .state data/2* data/sample
