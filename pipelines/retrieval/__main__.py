"""``python -m pipelines.retrieval --regions REGIONS --sentences FILE --objects-vocab FILE --out DIR [--top-k 5]``."""
# Run through the importable module, so that Beam pickles its classes as pipelines.retrieval.X.
from pipelines.retrieval.run import main

if __name__ == "__main__":
    main()
