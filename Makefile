# Two commands on a fresh machine: `make run` (the main job) and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test bench demo clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0  # first, pinned: the CPU wheel on this disk (an unpinned torch pulls CUDA)
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps "lmms-eval>=0.7,<0.8"  # the lmms extra holds what it needs (setup.cfg)
	touch $(STAMP)

install: $(STAMP)

# The main job: accuracy of the embedded Fashion-MNIST ViT (none vs ToMe vs PiToMe, five keep ratios), speed and
# fidelity of a real DINOv2 ViT-S/14 at 224 px where merging pays, and a plain summary (out/overview/).
run: $(STAMP)
	$(PY) -m pitome_hf.cli overview --output out/overview

test: $(STAMP) browser
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) -m pitome_hf.cli benchmark vit --batch-size 32

# The Space's browser test (tests/test_space.py) drives Debian's chromium through chromedriver: install both when
# missing. Needs root and apt-get; elsewhere the test is skipped with its reason.
.PHONY: browser
browser:
	@if [ -n "$(SKIP_BROWSER)" ]; then echo "SKIP_BROWSER set: the browser test will be skipped"; \
	elif command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing chromium and chromium-driver (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	else echo "chromium/chromedriver missing and apt-get unusable here (not root?): the browser test will be skipped"; fi

# The Space locally, on http://127.0.0.1:7860 (GRADIO_SERVER_PORT, PITOME_SPACE_MODEL: see spaces/README.md).
demo: $(STAMP)
	@$(PY) -c "import gradio" 2>/dev/null || $(PY) -m pip install -q -e ".[demo]"
	GRADIO_SERVER_NAME=127.0.0.1 $(PY) spaces/app.py

clean:
	rm -rf $(VENV) build *.egg-info
