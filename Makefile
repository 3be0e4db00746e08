# The README's two commands. Both create .venv if it is missing and install everything into it.
#   make lab   - JupyterLab on notebooks/00_start_here.ipynb (127.0.0.1 only, token auth on)
#   make test  - unit tests + every notebook under nbval, in test mode (LORAKIT_FAST=1)
# For instructors (README, "For instructors"):
#   make wheelhouse              - every wheel the course installs, in wheelhouse/ (copy it to a USB stick)
#   make lab WHEELHOUSE=path     - install from that folder with no package index at all (also make test)
#   make slides                  - reveal.js slides of every notebook in notebooks/_build/slides/
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8888
# Offline install: WHEELHOUSE=path makes every pip call use that folder and no index at all.
WHEELHOUSE ?=
WHEELHOUSE_DIR ?= wheelhouse
PIP_SOURCE := $(if $(WHEELHOUSE),--no-index --find-links $(abspath $(WHEELHOUSE)))
# Test mode caches its tiny base model inside the checkout, so a fresh clone starts clean.
TEST_ENV := LORAKIT_FAST=1 LORAKIT_CACHE=$(CURDIR)/.cache/test MPLBACKEND=Agg PYTHONHASHSEED=0

.PHONY: lab test bench html clean wheelhouse slides

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# with a wheelhouse: first check it holds every wheel needed, naming any missing one
	$(if $(WHEELHOUSE),$(BIN)/python scripts/check_wheelhouse.py $(abspath $(WHEELHOUSE)) -r requirements.txt --project . pip)
	$(BIN)/python -m pip install --quiet $(PIP_SOURCE) --upgrade pip
	# one pip call: the torch cap in requirements.txt then governs everything, -e . included
	$(BIN)/python -m pip install --quiet $(PIP_SOURCE) -r requirements.txt -e .
	touch $(STAMP)

# Every wheel `make lab`/`make test` install (requirements.txt, lorakit itself, pip and the build
# backend for `-e .`) for THIS machine's platform and Python, in one folder. Needs an index.
wheelhouse: $(STAMP)
	$(BIN)/python -m pip wheel --quiet --prefer-binary --wheel-dir $(WHEELHOUSE_DIR) -r requirements.txt . pip setuptools
	$(BIN)/python scripts/check_wheelhouse.py $(WHEELHOUSE_DIR) -r requirements.txt --project . pip
	$(BIN)/python -c "import sys, platform; print('built for', platform.system(), platform.machine(), 'CPython', platform.python_version())" | tee $(WHEELHOUSE_DIR)/PLATFORM.txt
	du -sh $(WHEELHOUSE_DIR)

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

# reveal.js slides of every notebook, sized for a projector (executed first at learner size, for
# the figures and sliders; FAST=1 for test sizes; REUSE=1 converts the last run's executed copies
# again without running anything), viewable with no network: reveal.js and MathJax are copied
# from npm into notebooks/_build/slides/_assets. A failing notebook is reported; the rest are built.
slides: $(STAMP)
	$(BIN)/python scripts/make_slides.py $(if $(FAST),--fast) $(if $(REUSE),--reuse)
	@echo "open notebooks/_build/slides/index.html"

clean:
	rm -rf $(VENV) .cache
