"""Beam runners this project ships: :mod:`pipelines.runners.dask` (Beam's DaskRunner with its sink, tagged-output and finish_bundle defects fixed)."""
