"""Beam's options for every stage: the user's flags as given, or the local DirectRunner with this project's defaults."""
from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions

IN_MEMORY = "in_memory"
MULTI_PROCESSING = "multi_processing"


def has_runner(beam_args: list[str]) -> bool:
    """Whether the user chose a runner (then every Beam flag is theirs to set)."""
    return any(a.startswith("--runner") for a in beam_args)


def pipeline_args(beam_args: list[str] | None, local_mode: str = MULTI_PROCESSING) -> list[str]:
    """The Beam flags a stage runs with.

    With ``--runner``: exactly as given (that runner's own defaults apply). Without: the local
    DirectRunner, because Beam's default runner (Prism) downloads a binary, which an offline machine
    cannot. The running mode is the user's ``--direct_running_mode`` or else ``local_mode``, whose
    choice is the stage's: the label stages run spaCy and a teacher model per record, CPU bound, so
    ``multi_processing`` with one worker process per core (unless ``--direct_num_workers`` says how
    many); region ingest is I/O bound and cheap per record, so ``in_memory`` (one process, no worker
    start-up, no pickling between processes), as is retrieval (``pipelines.retrieval.run``, in-process by its author's choice).
    """
    args = list(beam_args or [])
    if has_runner(args):
        return args
    args.append("--runner=DirectRunner")
    if not any(a.startswith("--direct_running_mode") for a in args):
        args.append(f"--direct_running_mode={local_mode}")
    if local_mode == MULTI_PROCESSING and not any(a.startswith("--direct_num_workers") for a in args):
        args.append(f"--direct_num_workers={os.cpu_count() or 1}")
    return args


def pipeline_options(beam_args: list[str] | None, local_mode: str = MULTI_PROCESSING) -> PipelineOptions:
    """:func:`pipeline_args` as Beam's options object."""
    return PipelineOptions(pipeline_args(beam_args, local_mode))
