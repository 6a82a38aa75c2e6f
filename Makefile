# Two entry points on a fresh machine: `make run` (the app on the embedded tiny zoo, no network)
# and `make test` (the whole suite: lint, unit, gradio_client and real-browser tests).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench chromium

# --no-compile: pip byte-compiles all 1.7 GB it installs (59 s here; 33 s without); Python compiles what is
# imported, on first import, and keeps it: unless PYTHONDONTWRITEBYTECODE is set (as on this project's machines),
# when every process would compile torch, transformers and gradio again (an import 6 s -> 12 s). Hence:
unexport PYTHONDONTWRITEBYTECODE
$(STAMP): requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -r requirements.txt -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)

run: setup
	GRADIO_ANALYTICS_ENABLED=False $(PY) app.py

# The browser tests drive Debian's Chromium (Playwright's own browser download cannot work offline).
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }

lint: setup
	$(VENV)/bin/ruff check .

test: setup chromium lint
	HF_HUB_OFFLINE=1 $(PY) -m pytest

bench: setup
	$(PY) -m decoding.bench diffusion
	$(PY) -m decoding.bench voting
