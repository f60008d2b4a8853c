"""The data-efficiency grid: does grounding alignment from pseudo labels help downstream, more so with less data?

    python -m trainer.experiment --work runs/experiment            # the default grid (make experiment)
    python -m trainer.experiment --work W --variants none,phrase --seeds 0 --pretrain-steps 50   # smaller
    python -m trainer.experiment --work W --tasks rec,vqa,vcr,nlvr2,snli_ve                      # all five tasks
    python -m trainer.experiment --work W --gpu                  # the resolving size (seeds, evaluation) on a GPU

Tasks (``--tasks``, default ``rec,vqa``): each fine-tunes from the same pre-training runs (pre-training is
task independent, so it is run once) on its data over the downstream corpus's scenes, written in the
task's published layout by its generator (``pipelines.synthetic.TASK``): REC (RefCOCO+ protocol),
VQA 2.0 (official accuracy), VCR (Q→AR), NLVR2 (accuracy), SNLI-VE (accuracy). The default is REC and
VQA because together they fit the CPU budget (60 minutes on a quiet 2-core machine); VCR, NLVR2 and
SNLI-VE each add 36 more fine-tunings, roughly 15–25 minutes there (a guess, not timed at these settings).

Grid: pre-training variant × pre-training data × fine-tuning data × seed, on the synthetic corpus.

| variant | TrainConfig |
|---|---|
| ``none`` | ``lambda_gnd 0`` (no grounding loss), 5-d location |
| ``token`` | ``lambda_gnd 20``, ``phrase_repr mean`` (token level), 5-d location |
| ``phrase`` | ``lambda_gnd 20``, ``phrase_repr lstm`` (phrase level), 5-d location |
| ``phrase_spe`` | ``lambda_gnd 20``, ``phrase_repr lstm``, ``location spe`` |
| ``scratch`` (optional) | no pre-training at all (random init, 5-d location): the floor |

Data, all produced here by the project's own CLIs (subprocesses, so the trainer never imports
``pipelines``), under ``WORK/data``:

- a *pre-training* corpus (``--pretrain-images``, generator seed ``--corpus-seed``) → region shards →
  pseudo labels from ``--teacher``. Pre-training data 1/8 = the pseudo labels of a seeded 1/8 of its
  images (the label pipeline runs on those images' captions; the other images get empty label
  samples, which the trainer skips). The subset is fixed by ``--corpus-seed``, not the run seed.
  Every pre-training run takes the same number of steps (same compute; the 1/8 runs repeat data).
- a disjoint *downstream* corpus (``--rec-images``, seed ``--corpus-seed + 1``) whose REFER
  expressions and region shards feed :mod:`trainer.finetune_rec`; fine-tuning 1/8 = a seeded 1/8 of
  its train expressions (seeded by the run seed), same number of steps.

Outputs in ``WORK``: ``results.csv`` (one row per fine-tuning run, ``task`` and ``score`` columns),
``results.md`` (the tasks' scores side by side per cell, mean ± std over seeds, gains over ``none``, the
verdict and the power calculation per task, pseudo-label precision/recall), ``results.png`` (a panel per task).

Power (``stats.seeds_needed``): from each data axis's between-seed s.d. of the gain's growth and the
binomial evaluation noise at the measured evaluation size, the seeds and evaluation size that resolve
a 2-point growth at ±2 s.e. ``--gpu`` (= ``--preset gpu``) runs that size: see :data:`GPU_PRESET`.
Finished runs are reused on a re-run when their settings are the same (``spec.json`` in each run
directory: the command, and for a fine-tuning its pre-training's command); a run made with other
settings is removed and redone. The data likewise: each product under ``WORK/data`` has a
``NAME.spec.json`` beside it (corpus: image count, seed, feature width; regions: the corpus's spec;
labels: teacher, teacher arguments, caption subset, the regions' spec), and one made with other
settings is removed and rebuilt, with everything made from it, runs included. The report's teacher
and label quality come from the labels' manifests, the labels the runs were trained on.
"""
from __future__ import annotations

import argparse
import logging
import shlex
import sys

from trainer.experiment.config import DEFAULT_TASKS, TASKS, VARIANTS, ExperimentConfig, check_tasks
from trainer.experiment.jobs import run_grid

# The resolving size: the power calculation (stats.seeds_needed) on the CPU grid's measured REC seed variance
# (3 seeds, trainer/README.md "What the grid shows": growth s.e. 5.6 / 5.3 / 4.3 pts, so s.d. 9.7 / 9.2 / 7.4 pts
# per seed, at n = 426 evaluation expressions from 250 downstream images) asks for 95 / 85 / 56 seeds at n and
# at most 86 at 4 n (the largest size any axis recommends): 86 seeds, 1,000 downstream images. VQA's seed
# variance at the default size is not measured yet; its first --gpu run's power table says whether it needs more.
# Any flag given beside --gpu overrides these.
GPU_PRESET = {"seeds": list(range(86)), "rec_images": 1000, "device": "cuda", "jobs": 8}
PRESETS = {"cpu": {}, "gpu": GPU_PRESET}


def _floats(s: str) -> list[float]:
    return [float(x) for x in s.split(",") if x]


def _task_steps(s: str) -> dict[str, int]:
    """``vqa=300,vcr=200`` → ``{"vqa": 300, "vcr": 200}``."""
    out = {}
    for item in (x for x in s.split(",") if x):
        name, _, n = item.partition("=")
        if name not in TASKS or name == "rec" or not n.isdigit():
            raise ValueError(f"--task-steps: {item!r} is not TASK=STEPS with TASK one of {','.join(t for t in TASKS if t != 'rec')} (REC: --finetune-steps)")
        out[name] = int(n)
    return out


def parse_args(argv: list[str] | None = None) -> ExperimentConfig:
    """The grid's settings from the command line; a bad task or variant name raises ``ValueError`` (one line)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", choices=tuple(PRESETS), default="cpu")
    pre.add_argument("--gpu", action="store_true")
    known, _ = pre.parse_known_args(argv)
    preset = "gpu" if known.gpu else known.preset
    d = ExperimentConfig(**PRESETS[preset])
    ap = argparse.ArgumentParser(prog="python -m trainer.experiment", description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=tuple(PRESETS), default="cpu",
                    help="cpu: the default grid (REC + VQA in 60 min on 2 cores); gpu: the power calculation's resolving size on CUDA "
                         f"({len(GPU_PRESET['seeds'])} seeds, {GPU_PRESET['rec_images']} downstream images, {GPU_PRESET['jobs']} runs at a time)")
    ap.add_argument("--gpu", action="store_true", help="= --preset gpu")
    ap.add_argument("--work", default=d.work, help="work directory (data, runs, results)")
    ap.add_argument("--tasks", default=",".join(d.tasks),
                    help=f"comma list of {','.join(TASKS)} (default {','.join(DEFAULT_TASKS)}: the pair that fits the CPU budget)")
    ap.add_argument("--task-steps", default="", metavar="TASK=N,...",
                    help="fine-tuning steps of non-REC tasks (default " + ", ".join(f"{t} {TASKS[t].steps}" for t in TASKS if t != "rec") + ")")
    ap.add_argument("--variants", default=",".join(d.variants), help=f"comma list of {list(VARIANTS)[:4]}")
    ap.add_argument("--pretrain-fractions", default="1,0.125")
    ap.add_argument("--finetune-fractions", default="1,0.125")
    ap.add_argument("--seeds", default=",".join(map(str, d.seeds)))
    ap.add_argument("--no-scratch", dest="scratch", action="store_false", help="leave out the no-pre-training floor")
    ap.add_argument("--corpus-seed", type=int, default=d.corpus_seed)
    ap.add_argument("--pretrain-images", type=int, default=d.pretrain_images)
    ap.add_argument("--rec-images", "--downstream-images", dest="rec_images", type=int, default=d.rec_images,
                    help="images of the downstream corpus, whose scenes every task's data is over")
    ap.add_argument("--feature-dim", type=int, default=d.feature_dim)
    ap.add_argument("--teacher", default=d.teacher, help="label pipeline teacher (simulated, tag_similarity, oracle, ...)")
    ap.add_argument("--teacher-arg", action="append", default=None, metavar="K=V", help="teacher parameter, repeatable (default: miss_rate=0.2 false_rate=0.3 for simulated)")
    ap.add_argument("--pretrain-steps", type=int, default=d.pretrain_steps)
    ap.add_argument("--pretrain-batch", type=int, default=d.pretrain_batch)
    ap.add_argument("--pretrain-lr", type=float, default=d.pretrain_lr)
    ap.add_argument("--finetune-steps", type=int, default=d.finetune_steps)
    ap.add_argument("--finetune-batch", type=int, default=d.finetune_batch)
    ap.add_argument("--finetune-lr", type=float, default=d.finetune_lr)
    ap.add_argument("--finetune-head", default=d.finetune_head, choices=("grounding", "linear"),
                    help="REC region scorer: the pre-trained grounding head (expression as phrase) or ViLBERT's new linear head")
    ap.add_argument("--hidden-size", type=int, default=d.hidden_size)
    ap.add_argument("--num-layers", type=int, default=d.num_layers)
    ap.add_argument("--model", default=d.model, choices=("single", "dual"))
    ap.add_argument("--pretrain-arg", action="append", default=[], metavar="FLAG", help="extra trainer.train argument, repeatable (e.g. --pretrain-arg=--text-init --pretrain-arg=minilm)")
    ap.add_argument("--jobs", type=int, default=d.jobs, help="runs in parallel")
    ap.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda"))
    a = ap.parse_args(argv)
    tasks = check_tasks([t for t in a.tasks.split(",") if t])
    bad = [v for v in a.variants.split(",") if v and (v not in VARIANTS or v == "scratch")]
    if bad:
        raise ValueError(f"--variants: unknown variant {bad[0]!r}; choose from {','.join(v for v in VARIANTS if v != 'scratch')}")
    teacher_args = a.teacher_arg if a.teacher_arg is not None else (d.teacher_args if a.teacher == "simulated" else [])
    return ExperimentConfig(
        work=a.work, tasks=tasks, task_steps=_task_steps(a.task_steps), variants=[v for v in a.variants.split(",") if v], pretrain_fractions=_floats(a.pretrain_fractions),
        finetune_fractions=_floats(a.finetune_fractions), seeds=[int(s) for s in a.seeds.split(",") if s], scratch=a.scratch,
        corpus_seed=a.corpus_seed, pretrain_images=a.pretrain_images, rec_images=a.rec_images, feature_dim=a.feature_dim,
        teacher=a.teacher, teacher_args=teacher_args, pretrain_steps=a.pretrain_steps, pretrain_batch=a.pretrain_batch,
        pretrain_lr=a.pretrain_lr, finetune_steps=a.finetune_steps, finetune_batch=a.finetune_batch, finetune_lr=a.finetune_lr, finetune_head=a.finetune_head,
        hidden_size=a.hidden_size, num_layers=a.num_layers, model=a.model, extra_pretrain_args=a.pretrain_arg, jobs=a.jobs, device=a.device,
    )


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    try:
        cfg = parse_args(args)
    except ValueError as e:  # a user's mistake: one line, exit 2
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    md = run_grid(cfg, shlex.join(["python", "-m", "trainer.experiment", *args]))
    print(md.read_text())


