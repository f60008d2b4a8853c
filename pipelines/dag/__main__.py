"""``python -m pipelines.dag``: runs :func:`pipelines.dag.command.main` (through the importable module, so Beam pickles classes as pipelines.dag.X, not __main__.X)."""
from pipelines.dag.command import main

if __name__ == "__main__":
    main()
