# ssga: every target creates and uses .venv itself, so a fresh clone needs only Python 3.10+.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= data
# Resolved here, not in the shell, so that make echoes the commands with their real values.
TEACHER ?= tag_similarity
WORKERS ?= $(shell nproc 2>/dev/null || echo 1)
BEAM ?= --runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=$(WORKERS)
# More flags for pipelines.dag, e.g. FLAGS="--verbose", FLAGS="--max-reject 0.8", FLAGS="--content-hash".
FLAGS ?=
# make bench BENCH=NAME runs bench/bench_NAME.py only; opt-in ones (BENCH=labels_scale: 20,000 images) run only so.
BENCH ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: help install test sample regions labels pretrain demo gallery bench clean

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

DAG = $(strip $(PY) -m pipelines.dag $(FLAGS))

regions: $(STAMP)  ## ingest detector regions (the sample's .npz form, with cls_prob) into $(DATA)/regions/<fingerprint> (skipped when complete)
	$(DAG) regions --data $(DATA)
TEACHER_FLAGS = --teacher $(TEACHER) $(foreach a,$(TEACHER_ARGS),--teacher-arg $(a))

labels: $(STAMP)  ## label DAG on $(DATA)/sample: regions -> phrases -> teacher -> labels, complete stages skipped (TEACHER=, TEACHER_ARGS="k=v ..", WORKERS=, BEAM="--runner=...", FLAGS="--verbose")
	$(DAG) labels --data $(DATA) $(TEACHER_FLAGS) $(BEAM)

pretrain: $(STAMP)  ## labels (skipped when complete), then pre-train on the current shards into $(DATA)/pretrain/<fp> (STEPS=, NPROC=n for torchrun DDP, ARGS="--batch-size 32 ...")
	$(DAG) pretrain --data $(DATA) $(TEACHER_FLAGS) --steps $(or $(STEPS),500) --nproc $(or $(NPROC),1) \
		$(foreach a,$(ARGS),--train-arg=$(a)) $(BEAM)

demo: $(STAMP)  ## sample corpus (200 images) -> label DAG -> a few minutes of CPU pre-training -> summary + gallery in $(DATA)/gallery
	$(DAG) demo --data $(DATA) --num-images $(or $(SIZE),200) --steps $(or $(STEPS),600) $(TEACHER_FLAGS) \
		--runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=$(WORKERS)

gallery: $(STAMP)  ## pseudo-label gallery (HTML + PNGs + loss curves) of the last DAG run in $(DATA)/gallery
	$(PY) -m pipelines.gallery --data $(DATA)

.PHONY: experiment
experiment: $(STAMP)  ## data-efficiency grid: REC and VQA side by side, grounding variants x pre-train/fine-tune data 1 and 1/8 (ARGS="--tasks rec,vqa,vcr,nlvr2,snli_ve", "--gpu", "--seeds 0,1,2 ...")
	$(PY) -m trainer.experiment --work runs/experiment $(ARGS)

.PHONY: compare
compare: $(STAMP)  ## alignment methods side by side on REC and VQA (--tasks): none, SSGA, μ-VLA (unpaired), partial OT, SSGA + partial OT (ARGS="--seeds 0,1 --pretrain-steps 300 ...")
	$(PY) -m trainer.experiment.compare --work runs/compare $(ARGS)

bench: $(STAMP)  ## run the benchmarks (figures printed and written to bench/results/); BENCH=NAME runs one
	$(PY) -m bench.run $(BENCH)

clean:  ## remove generated data (keeps .venv)
	rm -rf $(DATA) runs bench/results
