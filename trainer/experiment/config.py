"""The grid's settings: variants, their pre-training configs, splits, and ``ExperimentConfig``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any



VARIANTS: dict[str, dict[str, Any]] = {
    "none": {"lambda_gnd": 0.0, "phrase_repr": "lstm", "location": "5d"},
    "token": {"lambda_gnd": 20.0, "phrase_repr": "mean", "location": "5d"},
    "phrase": {"lambda_gnd": 20.0, "phrase_repr": "lstm", "location": "5d"},
    "phrase_spe": {"lambda_gnd": 20.0, "phrase_repr": "lstm", "location": "spe"},
    "scratch": {"lambda_gnd": 0.0, "phrase_repr": "lstm", "location": "5d"},  # not pre-trained
}
LABELS = {
    "none": "no grounding loss",
    "token": "grounding, token level",
    "phrase": "grounding, phrase level",
    "phrase_spe": "phrase level + SPE",
    "scratch": "no pre-training",
}
EVAL_SPLITS = ("val", "testA", "testB")
NEEDS = ("shape", "colour", "size", "spatial")  # what a synthetic expression needs to be unique


@dataclass
class ExperimentConfig:
    work: str = "runs/experiment"
    variants: list[str] = field(default_factory=lambda: ["none", "token", "phrase", "phrase_spe"])
    pretrain_fractions: list[float] = field(default_factory=lambda: [1.0, 0.125])
    finetune_fractions: list[float] = field(default_factory=lambda: [1.0, 0.125])
    seeds: list[int] = field(default_factory=lambda: [0, 1])  # --seeds 0,1,2: about 1.5x the time
    scratch: bool = True  # add the no-pre-training floor (cheap: fine-tuning only)
    corpus_seed: int = 0
    pretrain_images: int = 400
    rec_images: int = 250
    feature_dim: int = 64
    teacher: str = "simulated"
    teacher_args: list[str] = field(default_factory=lambda: ["miss_rate=0.2", "false_rate=0.3"])
    # A 2-layer, 128-wide model from scratch needs a larger learning rate than BERT-base's 1e-4 / 4e-5:
    # at 2e-4 fine-tuning stays on the "pick any object" plateau (~30 %, the text unread) for
    # hundreds of steps. 1,500 pre-training steps: at 600 the grounding loss is still at 0.42 (0.18 at 1,500).
    pretrain_steps: int = 1500
    pretrain_batch: int = 16
    pretrain_lr: float = 5e-4
    finetune_steps: int = 400
    finetune_batch: int = 32
    finetune_lr: float = 1e-3
    finetune_head: str = "grounding"  # trainer.finetune_rec --head: "grounding" (pre-trained f_align) | "linear" (ViLBERT's)
    hidden_size: int = 128
    num_layers: int = 2
    model: str = "single"
    extra_pretrain_args: list[str] = field(default_factory=list)  # more trainer.train flags, e.g. --text-init minilm
    jobs: int = 2  # runs in parallel (each gets cores / jobs torch threads)
    device: str = "auto"


# ---------------------------------------------------------------------------------------------
# Running subprocesses
