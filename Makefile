# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Spark's classes as a JVM class-data-sharing archive: each stage's driver JVM starts faster.
ARCHIVE := $(VENV)/spark-classes.jsa
export SPARK_CLASS_ARCHIVE ?= $(abspath $(ARCHIVE))

# The model server's own environment (requirements-serve.txt: KServe cannot share Airflow's psutil).
SERVE_VENV  ?= .venv-serve
SERVE_STAMP := $(SERVE_VENV)/.installed

.PHONY: venv serve-venv demo test test-serve test-deploy lock lock-serve clean benchmark browser

venv: $(STAMP)

# The environment is rebuilt only when the lock file changes. uv installs the same pinned versions as
# pip in less than half the time (docs/benchmarks.md); pip is the fallback where uv cannot run.
$(STAMP): requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet uv \
	  && $(VENV)/bin/uv pip install --quiet --python $(PY) -r requirements.lock \
	  || { $(PY) -m pip install --quiet --upgrade pip && $(PY) -m pip install --quiet -r requirements.lock; }
	@touch $@

serve-venv: $(SERVE_STAMP)

$(SERVE_STAMP): requirements-serve.lock $(STAMP)
	$(PYTHON) -m venv $(SERVE_VENV)
	$(VENV)/bin/uv pip install --quiet --python $(SERVE_VENV)/bin/python -r requirements-serve.lock \
	  || $(SERVE_VENV)/bin/python -m pip install --quiet -r requirements-serve.lock
	@touch $@

# Rebuilt with the environment (the archive is only valid for the Spark jars and JDK it saw).
$(ARCHIVE): $(STAMP)
	$(PY) -m pipeline spark-archive --out $@

demo: venv $(ARCHIVE)
	$(PY) -m devtools demo $(DEMO_ARGS)

test: venv browser $(ARCHIVE)
	$(PY) -m pytest $(PYTEST_ARGS)

# The model server's tests (tests/serving): models trained on a synthetic store, served by
# `python -m serving` from .venv-serve, compared with `infer`'s Parquet; the page in
# chromium; `mlflow models serve` of the champion outside this checkout. About 10 minutes.
test-serve: venv serve-venv browser $(ARCHIVE)
	$(PY) -m pytest -m serve tests/serving -n 0 $(PYTEST_ARGS)

# The deployment test: docker-compose.yml brought up for real on loopback, a night through it and
# faults survived (tests/deploy). Installs and starts a Docker engine where there is none (root and
# apt), and stops the engine it started. Up to 40 minutes; not part of `make test`.
test-deploy: venv $(ARCHIVE)
	$(PY) -m pip install --quiet -r requirements-deploy.txt
	$(PY) -m pytest -m deploy tests/deploy -n 0 --timeout 3600 $(PYTEST_ARGS)

# The report's browser test needs Debian's chromium: installed where apt can (as root), else the
# test says in its skip reason that it did not run.
browser:
	@command -v chromium >/dev/null 2>&1 \
	 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	      && (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1)) \
	      && echo "installed chromium for the report's browser test"; } \
	 || echo "chromium is not installed and cannot be installed here (needs root and apt): the report's browser test will be skipped"

# Re-resolve the top-level requirements and pin the result.
lock:
	rm -rf /tmp/wit-lock && $(PYTHON) -m venv /tmp/wit-lock
	/tmp/wit-lock/bin/pip install --quiet -r requirements.txt
	/tmp/wit-lock/bin/pip freeze --exclude-editable > requirements.lock

lock-serve: venv
	$(VENV)/bin/uv pip compile requirements-serve.txt -p 3.11 --quiet -o requirements-serve.lock

benchmark: venv
	$(PY) benchmarks/ingest_benchmark.py

clean:
	rm -rf .state data/2* data/sample
