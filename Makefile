# swiftlearn: `make help` lists the targets. `make lab` and `make test` create .venv when missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch/torchvision pair known to work together here; override on other platforms,
# e.g. `make test TORCH_SPEC="torch torchvision"`.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/0*.ipynb))
# Imagenette beside the clone (the project's machines keep it in ../shared), as an ABSOLUTE path:
# nbval runs each notebook from notebooks/, where a relative one would not resolve. Empty when
# absent; a SWIFTLEARN_DATA of your own wins. Everything else the recipes pass is absolute too.
export SWIFTLEARN_DATA ?= $(abspath $(firstword $(wildcard $(CURDIR)/../shared/data/imagenette2-224)))

.DEFAULT_GOAL := help
.PHONY: help install lab test test-unit test-notebooks test-browser notebooks figures diagrams bench lint format clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev,export,openvino]"
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install swiftlearn with all extras

lab: $(STAMP) ## open JupyterLab on notebooks/
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks/

lint: $(STAMP) ## ruff over the library, the tests and the notebooks
	$(BIN)/ruff check swiftlearn tests notebooks

test-unit: $(STAMP) ## unit tests (no browser)
	$(BIN)/pytest -m "not browser" --durations=15 tests

test-notebooks: $(STAMP) ## every notebook in smoke mode under nbval
	SWIFTLEARN_SMOKE=1 $(BIN)/pytest --nbval-lax --nbval-current-env --nbval-cell-timeout=600 notebooks

test: lint test-unit test-notebooks ## ruff + unit tests + notebooks (smoke mode): what CI runs

test-browser: $(STAMP) ## JupyterLab + headless Chromium: drive the 01, 03 and 05 explorers (needs /usr/bin/chromium)
	$(BIN)/pytest -m browser tests

notebooks: $(STAMP) ## re-execute every notebook in full mode (figures -> outputs/figures/)
	@for nb in $(NOTEBOOKS); do \
		echo "== $$nb"; \
		$(BIN)/jupyter nbconvert --to notebook --execute --inplace \
			--ExecutePreprocessor.timeout=7200 $$nb || exit 1; \
		$(BIN)/nbstripout --keep-output --keep-count $$nb; \
	done
	@echo "figures are in $(FIGURES_OUT)/; \`make figures\` copies the README's into assets/figures/"

# the figures README.md shows, and where full notebook runs write them (ignored by git)
README_FIGURES := $(notdir $(shell grep -o 'assets/figures/[A-Za-z0-9_.-]*' README.md | sort -u))
FIGURES_OUT := outputs/figures

figures: ## after `make notebooks`: refresh the README's figures in assets/figures/
	@missing=""; for f in $(README_FIGURES); do \
		test -f $(FIGURES_OUT)/$$f || missing="$$missing $$f"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "make figures: missing in $(FIGURES_OUT)/:$$missing" >&2; \
		echo "  full-mode notebook runs write them: run \`make notebooks\` first" \
			"(notebook 06's curves also need the Imagenette data)" >&2; \
		exit 1; \
	fi
	@mkdir -p assets/figures
	@for f in $(README_FIGURES); do cp -v $(FIGURES_OUT)/$$f assets/figures/$$f; done

diagrams: $(STAMP) ## redraw the diagrams in assets/figures/diagrams/ (swiftlearn.diagrams)
	$(BIN)/python -m swiftlearn.diagrams assets/figures/diagrams

bench: $(STAMP) ## latency and training-throughput tables of this CPU kind -> assets/bench/
	$(BIN)/swiftlearn bench --compile --int8 $(if $(SWIFTLEARN_DATA),--data $(SWIFTLEARN_DATA)) --out assets/bench
	$(BIN)/swiftlearn bench --suite train $(if $(SWIFTLEARN_DATA),--data $(SWIFTLEARN_DATA)) --out assets/bench

format: $(STAMP) ## ruff's autofixes (import order, upgrades; not `ruff format`)
	$(BIN)/ruff check --fix swiftlearn tests notebooks

clean: ## remove caches (keeps .venv)
	rm -rf .pytest_cache .ruff_cache tests/_artifacts
	find . -name __pycache__ -prune -exec rm -rf {} +
