"""The pseudo-label gallery (HTML page + PNGs + loss curves) of a DAG run: ``page`` builds it, ``draw`` paints the panels, ``__main__`` is the CLI."""
