# The front door: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv on first use: torch (the CPU wheel) first, then ede.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.ede-installed

# One thread per process: on 2 cores, a second busy process makes 2-thread
# torch/OpenBLAS runs collapse (their threads wait on each other for a core).
# Raise it where cores are known to be free.
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: install test lint demo serve bench-odds bench-pipeline-odds bench-pipeline bench-digits bench-images clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,bench,flows]'
	# deepod (a benchmark peer) pins torch<1.13.1 in its metadata but runs on current torch
	$(PY) -m pip install -q --no-deps deepod==0.4.1
	touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -q

demo: $(STAMP)
	$(PY) -m flows.demo

# A Prefect server on 127.0.0.1:4200, the work pools and deployments of prefect.yaml, a
# process worker per pool; Ctrl-C stops them all (flows/serve.py).
serve: $(STAMP)
	$(PY) -m flows.serve

# The ODDS benchmark of the README (needs ../shared/data/odds; about 12 minutes a ratio on 1 core).
bench-odds: $(STAMP)
	$(VENV)/bin/ede bench odds --data-dir ../shared/data/odds --seeds 10 --gamma-l 0.05 --json bench-odds-0.05.json
	$(VENV)/bin/ede bench odds --data-dir ../shared/data/odds --seeds 10 --gamma-l 0.01 --json bench-odds-0.01.json

# The production path on the same splits: the retraining flow with its defaults, beside
# ESAD's in-process defaults and the peers (benchmarks/pipeline_odds.py; needs ../shared/data/odds).
bench-pipeline-odds: $(STAMP)
	$(PY) benchmarks/pipeline_odds.py --data-dir ../shared/data/odds --seeds 5 --gamma-l 0.05 --json bench-pipeline-odds-0.05.json
	$(PY) benchmarks/pipeline_odds.py --data-dir ../shared/data/odds --seeds 5 --gamma-l 0.01 --json bench-pipeline-odds-0.01.json

# The retraining flow's cost as the table grows: generated 1M- and 4M-row tables, local
# storage and the loopback S3 server; time per task, driver and process-tree peaks.
bench-pipeline: $(STAMP)
	$(PY) benchmarks/pipeline_rows.py --rows 1000000 4000000 --s3 --json bench-pipeline.json

bench-digits: $(STAMP)
	$(VENV)/bin/ede bench digits --json bench-digits.json

bench-images: $(STAMP)
	$(VENV)/bin/ede bench images --json bench-images.json

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
