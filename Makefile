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

regions: $(STAMP)  ## ingest detector regions (the sample's .npz form, with cls_prob) into region shards in $(DATA)/regions
	$(PY) -m pipelines.regions --npz-dir $(DATA)/sample/regions_npz --out $(DATA)/regions --num-shards 4

labels: $(STAMP)  ## pseudo labels: phrases -> teacher -> IoU match -> label shards in $(DATA)/labels (TEACHER=, WORKERS=)
	$(PY) -m pipelines.label_pipeline --captions $(DATA)/sample/captions.tsv --regions $(DATA)/regions --out $(DATA)/labels \
		--teacher $${TEACHER:-tag_similarity} --objects-vocab $(DATA)/sample/objects_vocab.txt --flickr30k $(DATA)/sample/flickr30k \
		--runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=$${WORKERS:-$$(nproc)}

pretrain: $(STAMP)  ## pre-train on $(DATA)/regions + $(DATA)/labels (CPU; NPROC=n for torchrun DDP; ARGS="--steps 500 --text-init minilm")
	@if [ -n "$${NPROC}" ]; then \
	  $(VENV)/bin/torchrun --standalone --nproc_per_node $${NPROC} -m trainer.train --regions $(DATA)/regions --labels $(DATA)/labels --out runs/pretrain $(ARGS); \
	else \
	  $(PY) -m trainer.train --regions $(DATA)/regions --labels $(DATA)/labels --out runs/pretrain $(ARGS); fi

bench: $(STAMP)  ## run the benchmarks (figures printed and written to bench/results/)
	$(PY) -m bench.run

clean:  ## remove generated data (keeps .venv)
	rm -rf $(DATA) runs bench/results
