# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Keep Keras, torch and matplotlib caches inside the repository, not in $HOME.
export KERAS_HOME := $(CURDIR)/.cache/keras
export TORCH_HOME := $(CURDIR)/.cache/torch
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export TF_CPP_MIN_LOG_LEVEL := 2
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-slow install clean-data

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) run_experiment.py

# `make test` leaves out the tests marked slow (each over ~10 s: end-to-end runs, full-size
# networks, kill-and-resume, multi-worker training); `make test-slow` runs only those. CI
# runs both.
test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" tests

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow tests

clean-data:
	rm -rf dataset/COCO dataset/*.h5 training/weights* eval/results train_domain_classifier/log train_domain_classifier/results results
