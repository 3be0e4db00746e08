# The README's two commands. Both create .venv if it is missing and install everything into it.
#   make lab   - JupyterLab on notebooks/00_start_here.ipynb (127.0.0.1 only, token auth on)
#   make test  - unit tests + every notebook under nbval, in test mode (LORAKIT_FAST=1)
# Repairs (README, "When something is broken"):
#   make check                   - the environment check, with the course's Python (never installs)
#   make reinstall               - install requirements.lock into .venv again
#   make clean lab               - delete .venv and start again (add PYTHON=python3.12 for another Python)
# Versions (README, "What gets installed"):
#   make lab TORCH=cpu           - Linux: torch's CPU build from PyTorch's CPU index (not the CUDA one)
#   make lock                    - upgrade .venv to the newest releases requirements.txt allows; write requirements.lock
#   make test-latest             - the suite against the newest releases, in .venv-latest (LOCK=0)
# For instructors (README, "For instructors"):
#   make wheelhouse              - every wheel the course installs, in wheelhouse/ (copy it to a USB stick)
#   make wheelhouse-multi        - the same for several (OS, architecture, Python) into one folder
#   make lab WHEELHOUSE=path     - install from that folder with no package index at all (also make test)
#   make wheel                   - dist/lorakit-*.whl (to upload to Colab when its install cell fails)
#   make slides                  - reveal.js slides of every notebook in notebooks/_build/slides/
# For contributors (README, "Contributing"):
#   make lint                    - ruff check + ruff format --check (CI runs it before the tests)
#   make format                  - ruff check --fix, then ruff format (what make lint asks for)
#   make results NB=03           - recompute notebook 03's long sweeps at learner size and ship them
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PORT   ?= 8888
# LOCK=1 (default): the exact versions of requirements.lock; LOCK=0: the newest releases that the
# floors of requirements.txt allow (what Colab and `pip install` users get).
LOCK   ?= 1
SOURCE := $(if $(filter 0,$(LOCK)),requirements.txt,requirements.lock)
UPGRADE := $(if $(filter 0,$(LOCK)),--upgrade --upgrade-strategy eager)
# TORCH=cpu: on Linux the package index's torch is the CUDA build (several GB of nvidia-* wheels);
# PyTorch's own CPU index has the CPU build (`+cpu`, which pip prefers at an equal version).
TORCH  ?=
TORCH_INDEX := $(if $(filter cpu,$(TORCH)),--extra-index-url https://download.pytorch.org/whl/cpu)
# Offline install: WHEELHOUSE=path makes every pip call use that folder and no index at all.
# Always quoted: a USB stick is often mounted as ".../NO NAME".
WHEELHOUSE ?=
WHEELHOUSE_DIR ?= wheelhouse
PIP_SOURCE := $(if $(WHEELHOUSE),--no-index --find-links "$(WHEELHOUSE)")
# Test mode caches its tiny base model inside the checkout, so a fresh clone starts clean.
TEST_ENV := LORAKIT_FAST=1 LORAKIT_CACHE="$(CURDIR)/.cache/test" MPLBACKEND=Agg PYTHONHASHSEED=0

# torch's OpenMP threads: sleep while waiting instead of spinning. Exported here, so JupyterLab's
# kernels, the tests and the benchmarks all inherit it before torch starts. Measured by
# bench/bench_threads.py (bench/results/cpu-threads.txt): with another program busy on the
# cores, spinning threads make a training step several times slower. OMP_WAIT_POLICY is read by
# GNU OpenMP (Linux) and LLVM/Intel OpenMP (macOS, Windows); KMP_BLOCKTIME=0 is the latter's
# own spelling of the same thing. Set either yourself to override.
export OMP_WAIT_POLICY ?= PASSIVE
export KMP_BLOCKTIME ?= 0

.PHONY: results lab test test-latest test-realshape check reinstall lock bench html clean wheel wheelhouse wheelhouse-multi slides lint format test-teardown

# `make lab PYTHON=python3.12` over a .venv made by another Python starts again from scratch.
PY_ID := import sys; print(*sys.version_info[:3], sys.base_prefix)
ifneq ($(filter command line environment,$(origin PYTHON)),)
  WANT_ID := $(shell $(PYTHON) -c '$(PY_ID)' 2>/dev/null)
  HAVE_ID := $(shell test -d "$(VENV)" && "$(BIN)/python" -c '$(PY_ID)' 2>/dev/null)
  ifeq ($(WANT_ID),)
    $(error PYTHON=$(PYTHON) does not run here: name an installed Python 3.10-3.12, e.g. PYTHON=python3.12)
  endif
  ifneq ($(HAVE_ID),)
    ifneq ($(HAVE_ID),$(WANT_ID))
      OTHER_PYTHON := other-python
    endif
  endif
endif

.PHONY: other-python
other-python:
	@echo "$(VENV) was not made by PYTHON=$(PYTHON): deleting it to start again"
	rm -rf "$(VENV)"

$(STAMP): $(SOURCE) pyproject.toml $(OTHER_PYTHON)
	@# a .venv whose Python no longer runs (upgraded away, or half made) is made again
	@if ! "$(BIN)/python" -c '' 2>/dev/null; then \
	  $(PYTHON) -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 12))' 2>/dev/null || { \
	    echo "'$(PYTHON)' is not Python 3.10-3.12 ($$($(PYTHON) --version 2>&1)). Install one (python.org," \
	         "Homebrew: brew install python@3.12) and run: make lab PYTHON=python3.12"; exit 1; }; \
	  echo "creating $(VENV) with $(PYTHON)"; rm -rf "$(VENV)"; $(PYTHON) -m venv "$(VENV)"; fi
	# with a wheelhouse: first check it holds every wheel needed, naming any missing one
	$(if $(WHEELHOUSE),"$(BIN)/python" scripts/check_wheelhouse.py "$(WHEELHOUSE)" -r $(SOURCE) --project . pip)
	"$(BIN)/python" -m pip install --quiet $(PIP_SOURCE) --upgrade pip
	# one pip call: the pins (or the torch cap of requirements.txt) then govern everything, -e . included
	"$(BIN)/python" -m pip install --quiet $(PIP_SOURCE) $(TORCH_INDEX) $(UPGRADE) -r $(SOURCE) -e .
	"$(BIN)/python" -m lorakit.check --write-stamp "$(STAMP)" $(SOURCE) $(or $(TORCH),default)

# The environment check with the course's Python; with no working .venv, with $(PYTHON), so it
# still answers (and says what to run). Never installs anything.
check:
	@if "$(BIN)/python" -c '' 2>/dev/null; then "$(BIN)/python" -m lorakit.check; \
	else $(PYTHON) -m lorakit.check; fi

reinstall:
	rm -f "$(STAMP)"
	$(MAKE) "$(STAMP)"

# requirements.lock: .venv upgraded to the newest releases requirements.txt allows, frozen.
lock: $(STAMP)
	"$(BIN)/python" -m pip install --quiet $(PIP_SOURCE) $(TORCH_INDEX) --upgrade --upgrade-strategy eager -r requirements.txt -e .
	"$(BIN)/python" scripts/write_lock.py > requirements.lock.tmp
	mv requirements.lock.tmp requirements.lock
	"$(BIN)/python" -m lorakit.check --write-stamp "$(STAMP)" requirements.lock $(or $(TORCH),default)

# The whole suite against the newest releases (its own venv, so .venv keeps the lock).
test-latest:
	$(MAKE) test VENV=.venv-latest LOCK=0

# Every wheel `make lab`/`make test` install (requirements.lock, lorakit itself, pip and the build
# backend for `-e .`) for THIS machine's platform and Python, in one folder. Needs an index.
wheelhouse: $(STAMP)
	"$(BIN)/python" -m pip wheel --quiet --prefer-binary $(TORCH_INDEX) --wheel-dir "$(WHEELHOUSE_DIR)" -r $(SOURCE) . pip setuptools
	"$(BIN)/python" scripts/check_wheelhouse.py "$(WHEELHOUSE_DIR)" -r $(SOURCE) --project . pip
	"$(BIN)/python" -c "import sys, platform; print('built for', platform.system(), platform.machine(), 'CPython', platform.python_version())" | tee -a "$(WHEELHOUSE_DIR)/PLATFORM.txt"
	du -sh "$(WHEELHOUSE_DIR)"

# One folder for a room of mixed laptops, built on one machine: binary wheels for each
# (platform tag, Python) pair, plus lorakit, pip and setuptools. Each laptop's pip (and
# check_wheelhouse.py) then picks the wheels its own tags accept. A pair that the lock's exact
# versions do not exist for is named (FAILED ...) and skipped.
PLATFORMS ?= manylinux_2_28_x86_64 manylinux_2_28_aarch64 macosx_14_0_arm64 win_amd64
PYTHONS   ?= 3.10 3.11 3.12
wheelhouse-multi: $(STAMP)
	@for p in $(PLATFORMS); do for v in $(PYTHONS); do echo "== $$p CPython $$v"; \
	  "$(BIN)/python" -m pip download --quiet --only-binary=:all: --platform $$p --python-version $$v \
	    --implementation cp $(TORCH_INDEX) -r $(SOURCE) -d "$(WHEELHOUSE_DIR)" || echo "FAILED $$p CPython $$v"; \
	  echo "$$p CPython $$v" >> "$(WHEELHOUSE_DIR)/PLATFORM.txt"; done; done
	"$(BIN)/python" -m pip wheel --quiet --no-deps --wheel-dir "$(WHEELHOUSE_DIR)" .
	"$(BIN)/python" -m pip download --quiet --only-binary=:all: -d "$(WHEELHOUSE_DIR)" pip setuptools
	du -sh "$(WHEELHOUSE_DIR)"

# lorakit as one wheel (dist/), e.g. to upload to Colab when its install cell cannot reach GitHub
wheel: $(STAMP)
	"$(BIN)/python" -m pip wheel --quiet --no-deps --wheel-dir dist .
	@ls dist/lorakit-*.whl

# Jupyter refuses to run as root unless told; containers and CI machines often are root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(STAMP)
	"$(BIN)/jupyter" lab notebooks/00_start_here.ipynb --ServerApp.ip=127.0.0.1 --ServerApp.port=$(PORT) $(ROOT_FLAG)

test: $(STAMP)
	sh scripts/install_browser.sh
	$(TEST_ENV) "$(BIN)/python" -m pytest -q --durations=15 --timeout=600 \
		--nbval-lax --nbval-current-env --nbval-cell-timeout=300 tests notebooks

# notebook 10's 2-rank run launched 20 times in a row: every launch must end cleanly (issue 27,
# 12b: a finished rank once aborted at teardown in ~1 launch of 15). A few minutes: apart from make test.
test-teardown: $(STAMP)
	LORAKIT_TEARDOWN=20 $(TEST_ENV) "$(BIN)/python" -m pytest -q -s --timeout=1800 tests/test_teardown.py

# ruff, configured in pyproject.toml ([tool.ruff]): lint rules that catch bugs, and one format.
lint: $(STAMP)
	"$(BIN)/ruff" check .
	"$(BIN)/ruff" format --check .

# fixes first (sorting imports moves lines), then the format, so that make lint passes after it
format: $(STAMP)
	"$(BIN)/ruff" check --fix .
	"$(BIN)/ruff" format .

# notebook 09's path at SmolLM2-360M's real shapes (random weights), float32 and bfloat16 compute:
# minutes and ~8-10 GB of RAM each, so apart from `make test`; CI (.ci/run) runs both. One process
# per dtype: both dtypes in one process peaked at 18.5 GB of RAM, too close to CI's 24 GB.
test-realshape: $(STAMP)
	LORAKIT_REALSHAPE=1 $(TEST_ENV) "$(BIN)/python" -m pytest -q -s --durations=5 --timeout=3600 tests/test_realshape.py -k float32
	LORAKIT_REALSHAPE=1 $(TEST_ENV) "$(BIN)/python" -m pytest -q -s --durations=5 --timeout=3600 tests/test_realshape.py -k bfloat16

# CPU benchmarks against the references (ratios measured in the same run), then the course runtime.
# Writes bench/results/cpu-*.txt; the README quotes them. Takes ~30-40 min on 2 cores.
bench: $(STAMP)
	mkdir -p bench/results
	MPLBACKEND=Agg "$(BIN)/python" bench/bench_threads.py | tee bench/results/cpu-threads.txt
	MPLBACKEND=Agg "$(BIN)/python" bench/bench_quant.py | tee bench/results/cpu-quant.txt
	MPLBACKEND=Agg "$(BIN)/python" bench/bench_lora.py | tee bench/results/cpu-lora.txt
	MPLBACKEND=Agg "$(BIN)/python" bench/bench_fast_default.py | tee bench/results/cpu-fast-default.txt
	MPLBACKEND=Agg "$(BIN)/python" bench/course_runtime.py | tee bench/results/cpu-course-runtime.txt

# the shipped learner-size sweep results of notebook NB (lorakit/results/NB_*.json, with their
# provenance cards): the notebook run at learner size, recomputing everything and writing the files
results: $(STAMP)
	@test -n "$(NB)" || { echo "say which notebook: make results NB=03 (or NB='03 04')"; exit 2; }
	LORAKIT_RECOMPUTE=1 LORAKIT_SHIP_RESULTS=1 MPLBACKEND=Agg \
		"$(BIN)/python" bench/course_runtime.py $(NB) --sizes learner

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
	rm -rf "$(VENV)" .cache
