# The README's two commands. Both create .venv if it is missing and install everything into it.
#   make lab   - JupyterLab on notebooks/00_start_here.ipynb (127.0.0.1 only, token auth on)
#   make test  - unit tests + every notebook under nbval, in test mode (LORAKIT_FAST=1)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8888
# Test mode caches its tiny base model inside the checkout, so a fresh clone starts clean.
TEST_ENV := LORAKIT_FAST=1 LORAKIT_CACHE=$(CURDIR)/.cache/test MPLBACKEND=Agg PYTHONHASHSEED=0

.PHONY: lab test bench html clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# one pip call: the torch cap in requirements.txt then governs everything, -e . included
	$(BIN)/python -m pip install --quiet -r requirements.txt -e .
	touch $(STAMP)

# Jupyter refuses to run as root unless told; containers and CI machines often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(STAMP)
	$(BIN)/jupyter lab notebooks/00_start_here.ipynb --ServerApp.ip=127.0.0.1 --ServerApp.port=$(PORT) $(ROOT_FLAG)

test: $(STAMP)
	sh scripts/install_browser.sh
	$(TEST_ENV) $(BIN)/python -m pytest -q --durations=15 --timeout=600 \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=300 tests notebooks

# CPU benchmarks against the references (ratios measured in the same run), then the course runtime.
# Writes bench/results/cpu-*.txt; the README quotes them. Takes ~30-40 min on 2 cores.
bench: $(STAMP)
	mkdir -p bench/results
	MPLBACKEND=Agg $(BIN)/python bench/bench_quant.py | tee bench/results/cpu-quant.txt
	MPLBACKEND=Agg $(BIN)/python bench/bench_lora.py | tee bench/results/cpu-lora.txt
	MPLBACKEND=Agg $(BIN)/python bench/course_runtime.py | tee bench/results/cpu-course-runtime.txt

# a static, readable copy of the executed notebooks (figures included); FAST=1 for test sizes
html: $(STAMP)
	$(BIN)/python scripts/render_html.py $(if $(FAST),--fast)
	@echo "read notebooks/_build/html/index.html"

clean:
	rm -rf $(VENV) .cache
