# visattn: `make demo` and `make test` do all set-up on a fresh Debian machine with Python 3.11.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
FMNIST := /usr/share/datasets/fashion-mnist
CHROMIUM := /usr/bin/chromium

.PHONY: install demo test lint typecheck pytest docs wheel-check clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, by itself: pip then keeps it when resolving the rest (no second, different torch).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch>=2.4" "torchvision>=0.19"
	$(BIN)/pip install --quiet -e ".[test,timm,viz,docs]"
	# grad-cam pulls opencv-python-headless, whose cv2 has no ximgproc (selective search); both ship cv2/,
	# so install the contrib build last for its files to win.
	$(BIN)/pip install --quiet --force-reinstall --no-deps opencv-contrib-python-headless
	$(BIN)/python -c "import cv2; assert hasattr(cv2, 'ximgproc'), 'cv2 lacks ximgproc'"
	touch $@

# Fashion-MNIST from Debian's package, when we may install packages (root) and it is missing.
$(FMNIST):
	@if [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq dataset-fashion-mnist || \
		 (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) >/dev/null; \
	else \
		echo "note: $(FMNIST) is missing; run 'sudo apt-get install dataset-fashion-mnist' for the demo"; \
	fi

# Headless Chromium (Debian's package) for the HTML report's browser test.
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then \
		(apt-get install -y -qq chromium || \
		 (apt-get update -qq && apt-get install -y -qq chromium)) >/dev/null; \
	else \
		echo "note: $(CHROMIUM) is missing; run 'sudo apt-get install chromium' for the report test"; \
	fi

install: $(VENV)/.installed $(FMNIST)

demo: install
	$(BIN)/visattn demo --out runs/demo

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: install
	$(BIN)/mypy

pytest: install $(CHROMIUM)
	$(BIN)/pytest -n 2 -m "not gpu" -q

# The documentation site, strict: a broken link, a missing page or an unresolved API reference fails.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# Build the wheel, install it with its dependencies into a fresh venv, run `visattn list` and one training
# step outside the repository. Not part of `test`: unpacking torch into a fresh venv takes minutes.
wheel-check:
	PYTHON=$(PYTHON) bash .ci/wheel_check.sh

test: lint typecheck pytest docs

clean:
	rm -rf $(VENV) runs site .pytest_cache .mypy_cache .ruff_cache
