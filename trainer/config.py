"""Training configuration: one typed dataclass, overridable from a JSON/YAML file and from the CLI.

Precedence: dataclass defaults < ``--config FILE`` < ``--field value`` flags. Every field is a flag
(``--batch-size 8`` and ``--batch_size 8`` both work); booleans take ``true/false``; optional fields
take ``none``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class TrainConfig:
    # ---- data
    regions: str = "data/regions"  # directory (or gs://, s3://... URL) of regions-%06d.tar
    labels: str = "data/labels"  # directory or URL of labels-%06d.tar (same indices and keys)
    out: str = "runs/pretrain"  # run directory: checkpoints, TensorBoard, losses.jsonl
    tokenizer: str = "minilm"  # "minilm" (the packaged all-MiniLM-L6-v2 vocab) or a local BERT dir
    max_text_len: int = 36  # WordPiece tokens incl. [CLS]/[SEP]
    max_regions: int = 36  # first regions of an image (detectors sort by confidence)
    num_workers: int = -1  # DataLoader workers per process; -1 (auto): 2 on CPU, on a GPU the process's share of the cores less one, at most 8
    shuffle_buffer: int = 64  # examples; also the pool ITM negatives are drawn from
    bad_input: str = "raise"  # "raise": stop with the reason; "skip": log, count and go on
    # ---- masking and negatives
    mlm_prob: float = 0.15  # of text tokens; 80% [MASK], 10% random, 10% kept
    region_mask_prob: float = 0.15  # of regions; features zeroed, target = detector class dist.
    itm_neg_prob: float = 0.5  # share of examples made ITM negatives (caption swapped within the buffer, or edited)
    itm_hard_neg_share: float = 0.0  # share of ITM negatives that are same-image hard negatives (one word changed); 0: swaps only
    itm_mask_negatives: bool = True  # mask negatives' tokens/regions as positives' (no targets), as ViLBERT does; false: unmasked, a shortcut to the ITM label
    # ---- hierarchical region-phrase sampling
    unmatched_phrase_share: float = 0.2  # share of phrases without a positive that are kept
    max_pos_per_phrase: int = 4  # P
    max_neg_per_phrase: int = 8  # N
    neg_per_pos: float = 3.0  # global negatives per positive within an example
    hard_negatives: str = "none"  # "none" | "iou" (highest IoU below threshold) | "score"
    hard_negative_share: float = 0.5  # share of each phrase's negatives taken hardest-first
    iou_threshold: float | None = None  # None: the shard's `align`; else iou >= this is positive
    soft_targets: bool = False  # positives' target = teacher confidence instead of 1
    # ---- model
    model: str = "single"  # "single" (VL-BERT-like) | "dual" (ViLBERT-like)
    text_init: str = "random"  # "random" | "minilm" | a local BERT-family checkpoint dir
    hidden_size: int = 128  # text (and single-stream) width when text_init is "random"
    num_layers: int = 2  # text layers when text_init is "random"
    num_heads: int = 4
    intermediate_size: int = 256
    v_hidden_size: int = 128  # dual-stream visual width
    v_layers: int = 1  # dual-stream visual self-attention layers
    co_layers: int = 1  # dual-stream co-attention blocks
    location: str = "spe"  # "spe" (sine-cosine of the box) | "5d" (ViLBERT's linear 5-d)
    phrase_repr: str = "lstm"  # "lstm" (phrase level) | "mean" (token level)
    dropout: float = 0.1
    # ---- alignment method (issue #14): what aligns words with regions
    #   "ssga": the teacher's pseudo labels (grounding loss, λ_gnd) — the default
    #   "none": no alignment loss (MLM + MRC + ITM only; λ_gnd ignored)
    #   "partial_ot": GroundedBERT — partial OT between token and region states (λ_pot) + the ITM term, no teacher
    #   "ssga+partial_ot": both
    #   "mu_vla": μ-VLA on unpaired data — the retrieval shards (--retrieval), region–tag → + region–phrase
    #             → + image–sentence; --labels is not read
    method: str = "ssga"
    lambda_pot: float = 1.0  # weight of the partial-OT local loss
    pot_mass: float = 0.5  # s: the fraction of token/region mass partial OT transports
    pot_reg: float = 0.05  # entropic regularisation of the plan
    pot_iters: int = 100  # Bregman projection iterations
    retrieval: str = ""  # μ-VLA: directory of retrieval-%06d.tar (pipelines.retrieval output), same indices as --regions
    mu_region_phrase_at: int = 0  # μ-VLA curriculum: step where region–phrase joins region–tag
    mu_image_sentence_at: int = 0  # ... and where image–sentence joins (>= mu_region_phrase_at)
    mu_itm_warmup_epochs: int = 1  # μ-VLA: ITM on retrieved pairs is unweighted for this many epochs, then weighted by the model's own score
    lambda_mrfr: float = 1.0  # μ-VLA: masked region feature regression (region–tag)
    lambda_r2t: float = 1.0  # μ-VLA: phrase-guided masked region-to-token classification (region–phrase)
    # ---- loss
    lambda_word: float = 1.0
    lambda_img: float = 1.0
    lambda_align: float = 1.0
    lambda_gnd: float = 20.0
    # ---- optimisation
    steps: int = 200  # optimizer steps (the length of the LR schedule)
    stop_at: int | None = None  # end this invocation after this step (checkpointed); resume later
    batch_size: int = 16  # examples per process per micro-batch
    grad_accum: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 20
    clip: float = 1.0
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    cpu_threads: int = 0  # torch threads per process on CPU; 0: cores / processes - loader workers
    bf16: bool = True  # autocast on GPU (ignored on CPU)
    compile: str = "auto"  # torch.compile the model: "off" | "on" | "auto" (CUDA only, eager again if torch cannot compile a graph; 1.23x model-only on an H200)
    compile_backend: str = "inductor"  # torch.compile backend ("eager"/"aot_eager" to debug)
    # ---- logging and checkpoints
    log_every: int = 10
    ckpt_every: int = 100
    keep_ckpts: int = 2
    resume: bool = True  # continue from out/latest.json when present
    progress: bool | None = None  # None ("auto"): a progress bar only when stderr is a terminal; true/false force it
    verbose: bool = False  # transformers' and Hugging Face Hub's own log lines and progress bars

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ---------------------------------------------------------------------------------------------


def _base_type(tp: Any) -> tuple[type, bool]:
    """``float | None`` → (float, True); ``int`` → (int, False)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _parse_value(name: str, raw: Any, tp: Any) -> Any:
    base, optional = _base_type(tp)
    if optional and (raw is None or (isinstance(raw, str) and raw.lower() in ("none", "null"))):
        return None
    if optional and base is bool and isinstance(raw, str) and raw.lower() == "auto":
        return None
    if base is bool:
        if isinstance(raw, bool):
            return raw
        s = str(raw).lower()
        if s in ("1", "true", "yes", "on"):
            return True
        if s in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"--{name}: expected true/false, got {raw!r}")
    try:
        return base(raw)
    except (TypeError, ValueError) as e:
        raise ValueError(f"--{name}: cannot read {raw!r} as {base.__name__}") from e


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any], source: str) -> TrainConfig:
    """New config with ``overrides`` applied; unknown keys are an error naming ``source``."""
    hints = typing.get_type_hints(TrainConfig)
    values = cfg.to_dict()
    for key, raw in overrides.items():
        name = key.replace("-", "_")
        if name not in hints:
            raise ValueError(f"{source}: unknown config key {key!r}")
        values[name] = _parse_value(name, raw, hints[name])
    return TrainConfig(**values)


def load_config_file(path: str | Path) -> dict[str, Any]:
    text = Path(path).read_text()
    if str(path).endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text) or {}
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of field → value")
    return data


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    """Defaults < ``--config`` file < ``--field value`` flags."""
    parser = argparse.ArgumentParser(description="SSGA pre-training", allow_abbrev=False)
    parser.add_argument("--config", help="JSON or YAML file of field: value")
    for f in dataclasses.fields(TrainConfig):
        flags = {f"--{f.name}", f"--{f.name.replace('_', '-')}"}
        parser.add_argument(*sorted(flags), dest=f.name, default=None, metavar="VALUE", help=f"default: {f.default!r}")
    args = parser.parse_args(argv)
    cfg = TrainConfig()
    if args.config:
        cfg = apply_overrides(cfg, load_config_file(args.config), args.config)
    cli = {k: v for k, v in vars(args).items() if k != "config" and v is not None}
    return validate(apply_overrides(cfg, cli, "command line"))


METHODS = ("ssga", "none", "partial_ot", "ssga+partial_ot", "mu_vla")


def validate(cfg: TrainConfig) -> TrainConfig:
    choices = {
        "bad_input": ("raise", "skip"),
        "hard_negatives": ("none", "iou", "score"),
        "model": ("single", "dual"),
        "location": ("spe", "5d"),
        "phrase_repr": ("lstm", "mean"),
        "device": ("auto", "cpu", "cuda"),
        "compile": ("auto", "on", "off"),
        "method": METHODS,
    }
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {getattr(cfg, name)!r}")
    for name in ("mlm_prob", "region_mask_prob", "itm_neg_prob", "itm_hard_neg_share", "unmatched_phrase_share", "hard_negative_share"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {getattr(cfg, name)}")
    if cfg.num_workers < -1:
        raise ValueError(f"num_workers must be >= 0 (0: load in the training process) or -1 (auto), got {cfg.num_workers}")
    if cfg.batch_size < 1 or cfg.grad_accum < 1 or cfg.steps < 0:
        raise ValueError("batch_size and grad_accum must be >= 1 and steps >= 0")
    if "://" in str(cfg.out):  # --regions/--labels stream from URLs; checkpoints are written with torch/atomic renames
        raise ValueError(f"--out {cfg.out}: the run directory (checkpoints, TensorBoard, losses) must be a local or mounted "
                         "directory; --regions and --labels may be URLs (gs://, s3://, ...)")
    if not 0.0 < cfg.pot_mass <= 1.0 or cfg.pot_reg <= 0 or cfg.pot_iters < 1:
        raise ValueError(f"pot_mass must lie in (0, 1], pot_reg be > 0 and pot_iters >= 1 (got {cfg.pot_mass}, {cfg.pot_reg}, {cfg.pot_iters})")
    if cfg.method == "mu_vla":
        if not cfg.retrieval:
            raise ValueError("--method mu_vla trains on retrieval shards: give --retrieval DIR (the output of python -m pipelines.retrieval)")
        if not 0 <= cfg.mu_region_phrase_at <= cfg.mu_image_sentence_at:
            raise ValueError(f"the μ-VLA curriculum needs 0 <= mu_region_phrase_at ({cfg.mu_region_phrase_at}) <= mu_image_sentence_at ({cfg.mu_image_sentence_at})")
    return cfg

