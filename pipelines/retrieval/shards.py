"""Retrieval shards: the format lives in :mod:`schemas.retrieval` (the trainer streams them too)."""
from schemas.retrieval import RETRIEVAL_PREFIX, Retrieved, decode_retrieved, encode_retrieved, iter_retrieved  # noqa: F401
