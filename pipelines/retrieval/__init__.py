"""μ-VLA's weakly aligned corpus from unpaired images and text (issue #14), as a Beam stage.

Each image's tag sentence (the detector class names of its most confident regions, :mod:`.tags`) and
every sentence of a separate text corpus are embedded with all-MiniLM-L6-v2; each image gets its
top-K sentences by cosine similarity (:mod:`.index`: exact, or FAISS IVF for large corpora), written
as ``retrieval-NNNNNN.tar`` shards paired with the region shards (:mod:`.shards`), with dead letters
and a manifest whose counts reconcile (:mod:`.run`). Command line::

    python -m pipelines.retrieval --regions REGIONS --sentences FILE --objects-vocab FILE --out DIR [--top-k 5]
"""
