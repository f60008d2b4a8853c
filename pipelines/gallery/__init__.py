"""The pseudo-label gallery (HTML page + PNGs + loss curves) of a DAG run: ``data`` gathers what it shows, ``page`` renders it, ``draw`` paints the panels, ``__main__`` is the CLI."""
