# Two entry points: `make demo` (the main job) and `make test`. Both set everything up first and
# are safe to run again: the venv is rebuilt only when pyproject.toml or constraints.txt change.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
DEMO_OUT ?= runs/demo

.PHONY: setup data browser demo test lint fuzz bench clean

setup: $(STAMP) data browser

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "Python 3.11 is needed (apt-get install python3)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "python -m venv failed: installing Debian's python3-venv"; \
	  apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# Fashion-MNIST comes from Debian's package; $$RESNET_DATA may point elsewhere instead.
data:
	@if [ -n "$$RESNET_DATA" ] || [ -f $(FMNIST)/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's dataset-fashion-mnist"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    dataset-fashion-mnist; } || true; \
	elif command -v sudo >/dev/null 2>&1; then \
	  sudo apt-get install -y -qq dataset-fashion-mnist || true; \
	fi; \
	test -n "$$RESNET_DATA" || test -f $(FMNIST)/train-images-idx3-ubyte.gz || \
	  echo "warning: Fashion-MNIST not found; install dataset-fashion-mnist or set RESNET_DATA"

# Debian's chromium drives the web app's browser tests (Playwright, never `playwright install`);
# without apt the tests skip with that reason.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian's chromium (for the web app's browser tests)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    chromium >/dev/null; } || echo "warning: chromium not installed; browser tests will skip"; \
	else echo "note: chromium not installed (needs apt as root); browser tests will skip"; fi

# The main job: train the default ResNet on Fashion-MNIST, evaluate it, predict with it.
demo: setup
	rm -rf $(DEMO_OUT)
	$(BIN)/resnet train --out $(DEMO_OUT)
	$(BIN)/resnet val $(DEMO_OUT)
	$(BIN)/python -c "from resnet.data.fashion_mnist import write_samples; \
	write_samples('$(DEMO_OUT)/samples', 8)"
	$(BIN)/resnet predict $(DEMO_OUT)/best.pt $(DEMO_OUT)/samples --top-k 2
	@echo "demo done: the run folder $(DEMO_OUT)/ holds curves.png, confusion_matrix.png, summary.json"

# Two pytest workers with one thread each use the 2 cores better than one worker with two.
# The import contracts (layers, no circles) run first: a circle or an upward import fails the tests.
test: setup
	$(BIN)/lint-imports --no-cache
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --dist worksteal

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/lint-imports --no-cache

# Coverage-guided fuzzing (atheris) of every parser of untrusted bytes, FUZZ_SECONDS per harness,
# seeded from tests/fuzz/corpus/<harness>/; new inputs and crashes land in runs/fuzz/<harness>/.
FUZZ_SECONDS ?= 60
FUZZ_HARNESSES := image labels_csv config checkpoint safetensors coco dicom nifti zip_upload
fuzz: setup
	@failed=""; for h in $(FUZZ_HARNESSES); do \
	  echo "fuzzing $$h for $(FUZZ_SECONDS) s"; \
	  $(BIN)/python tests/fuzz/run.py $$h --seconds $(FUZZ_SECONDS) || failed="$$failed $$h"; \
	done; \
	test -z "$$failed" || { echo "crashes in:$$failed (inputs in runs/fuzz/<harness>/)"; exit 1; }

clean:
	rm -rf $(VENV) runs .pytest_cache
