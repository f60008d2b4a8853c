# ssga: every target creates and uses .venv itself, so a fresh clone needs only Python 3.10+.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= data
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help install test sample regions labels pretrain demo bench clean

help:  ## list the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 12

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install ssga with its dependencies

test: $(STAMP)  ## install, then run the whole test suite
	$(PY) -m pytest -q tests

sample: $(STAMP)  ## generate the synthetic grounded corpus into $(DATA)/sample (SIZE=, SEED=)
	$(PY) -m pipelines.synthetic --out $(DATA)/sample --num-images $${SIZE:-200} --seed $${SEED:-0}

regions: $(STAMP)  ## ingest detector regions into region shards
	$(PY) -m pipelines.regions --tsv $(DATA)/sample/regions.tsv --out $(DATA)/regions --num-shards 4

bench: $(STAMP)  ## run the benchmarks (figures printed and written to bench/results/)
	$(PY) -m bench.run

clean:  ## remove generated data (keeps .venv)
	rm -rf $(DATA) runs bench/results
