"""Beam's options for every stage: the user's flags as given, or the local DirectRunner with this project's defaults.

``--runner=DaskRunner`` (or ``dask``) is this project's :mod:`pipelines.runners.dask`: Beam 2.77's own
DaskRunner computes only the last transform's output, so every other sink of a pipeline silently never
runs; naming Beam's class path is refused with a one-line error that points at the fixed runner.
"""
from __future__ import annotations

import os

from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.cli import UserError

DASK_NAMES = ("dask", "daskrunner")  # what Beam would map to its own DaskRunner
DASK_RUNNER = "pipelines.runners.dask.DaskRunner"
BEAM_DASK_RUNNER = "apache_beam.runners.dask.dask_runner.DaskRunner"

IN_MEMORY = "in_memory"
MULTI_PROCESSING = "multi_processing"


def has_runner(beam_args: list[str]) -> bool:
    """Whether the user chose a runner (then every Beam flag is theirs to set)."""
    return any(a.startswith("--runner") for a in beam_args)


def _runner_flags(args: list[str]) -> list[str]:
    """``--runner`` values with the Dask names mapped to this project's runner (both ``--runner=X`` and ``--runner X``)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--runner" and i + 1 < len(args):
            name, i = args[i + 1], i + 2
        elif a.startswith("--runner="):
            name, i = a.split("=", 1)[1], i + 1
        else:
            out.append(a)
            i += 1
            continue
        if name == BEAM_DASK_RUNNER:
            raise UserError(f"--runner={name} loses every sink but the last (apache-beam 2.77); "
                            f"use --runner=DaskRunner, this project's fixed runner ({DASK_RUNNER})")
        out.append(f"--runner={DASK_RUNNER if name.lower() in DASK_NAMES else name}")
    return out


def pipeline_args(beam_args: list[str] | None, local_mode: str = MULTI_PROCESSING) -> list[str]:
    """The Beam flags a stage runs with.

    With ``--runner``: as given (that runner's own defaults apply), ``DaskRunner``/``dask`` meaning
    :class:`pipelines.runners.dask.DaskRunner`. Without: the local
    DirectRunner, because Beam's default runner (Prism) downloads a binary, which an offline machine
    cannot. The running mode is the user's ``--direct_running_mode`` or else ``local_mode``, whose
    choice is the stage's: the label stages run spaCy and a teacher model per record, CPU bound, so
    ``multi_processing`` with one worker process per core (unless ``--direct_num_workers`` says how
    many); region ingest is I/O bound and cheap per record, so ``in_memory`` (one process, no worker
    start-up, no pickling between processes), as is retrieval (``pipelines.retrieval.run``, in-process by its author's choice).
    """
    args = _runner_flags(list(beam_args or []))
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
