# The verbs a user types. `make bench` and `make test` set everything up on a fresh clone.

PYTHON  ?= python3
TORCH   ?= 2.13.0
VENV    ?= .venv
PROFILE ?= standard
RESULTS ?= results
REPORT  ?= reports/bench.html

BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed

TORCH_VERSIONS ?= 2.12.1 2.13.0
BASE ?= $(word 2,$(shell ls -t $(RESULTS)/*.json 2>/dev/null))
NEW  ?= $(word 1,$(shell ls -t $(RESULTS)/*.json 2>/dev/null))

.PHONY: install bench report summary compare bench-matrix test test-fast lint docs clean browser slurm

# A venv that sees the system's packages, so a GPU machine's CUDA build of torch is reused;
# where there is no torch, the pinned (overridable) TORCH version is installed.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv --system-site-packages $(VENV)
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
	    echo "using installed torch $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	else \
	    $(BIN)/python -m pip install "torch==$(TORCH)"; \
	fi
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

install: $(STAMP)

# The main job: the default sweep on every device present, then the report of that run.
bench: install
	$(BIN)/jacbench run --profile $(PROFILE) --device all --results-dir $(RESULTS) --report $(REPORT)

report: install
	$(BIN)/jacbench report $(RESULTS)/*.json -o $(REPORT)

summary: install
	$(BIN)/jacbench summary

# Row-by-row comparison of two runs (default: the two newest results files).
compare: install
	$(BIN)/jacbench compare $(BASE) $(NEW) -o reports/compare.html

# The same sweep under several torch versions, one venv each under .venvs/, interleaved.
bench-matrix: install
	$(BIN)/jacbench matrix --torch-versions "$(TORCH_VERSIONS)" --profile $(PROFILE) -o reports/matrix.html

# The browser test drives Debian's Chromium; install it if it is missing and we can.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	    { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) ; } || \
	    echo "note: no Chromium; the browser test will be skipped"

# The SLURM tests start a real single-node cluster (tests/cluster/cluster.sh); install it if we can.
SLURM_PACKAGES := slurmctld slurmd slurm-client slurmdbd munge mariadb-server
slurm:
	@command -v slurmctld >/dev/null 2>&1 && command -v slurmdbd >/dev/null 2>&1 && command -v mariadbd >/dev/null 2>&1 || \
	    { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(SLURM_PACKAGES) >/dev/null) ; } || \
	    echo "note: no SLURM; the slurm tests will be skipped"

# The whole suite, in parallel workers (tests/conftest.py, NOTE: [Tests in parallel]), with the
# slowest tests listed at the end; `make test-fast` leaves out the end-to-end sweeps, the
# browser, the cluster and the tests that must run alone: the loop between edits. Three
# workers on 2 cores: much of a test's time is its child processes starting, or waiting.
WORKERS ?= 3
PARALLEL = -n $(WORKERS) --dist loadgroup

test: install browser slurm
	$(BIN)/python -m pytest $(PARALLEL) --durations=25

test-fast: install
	$(BIN)/python -m pytest $(PARALLEL) -m "not slow and not browser and not slurm and not alone"

# The layering of bench/ by stage (pyproject.toml's import contract); also a test of `make test`.
lint: install
	$(BIN)/lint-imports

# The manual (docs/, mkdocs.yml) as a site in build/site; a broken link or reference fails it,
# and `make test` builds it too (tests/test_docs.py).
docs: install
	$(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) .venvs build *.egg-info .pytest_cache $(RESULTS)/.partial
