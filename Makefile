# DS-Lens. `make app` starts the app on the shipped checkpoints; `make test` runs the test suite.
# Both create .venv/ and install requirements.txt on first use (only Python 3.11+ is needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum requirements.txt | cut -d' ' -f1)
PORT ?= 8501

.PHONY: install app test bench eval clean-venv screenshots

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

app: $(STAMP)
	$(VENV)/bin/streamlit run app.py --server.headless true --server.port $(PORT) --browser.gatherUsageStats false

test: $(STAMP)
	$(PY) -m pytest

bench: $(STAMP)
	$(PY) bench/rollout.py

eval: $(STAMP)
	$(PY) -m ds_core eval --checkpoint $(CHECKPOINT) --sizes 3x3-3x9 --n 100

clean-venv:
	rm -rf $(VENV)

# README screenshots and browser timings: the end-to-end browser test with screenshots on
# (needs Debian's chromium: apt-get install chromium).
screenshots: $(STAMP)
	DS_LENS_SCREENSHOTS=docs/screenshots $(PY) -m pytest tests/test_browser.py -q -s
