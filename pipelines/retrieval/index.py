"""Top-K sentence search by cosine similarity: exact, or FAISS IVF for large corpora.

Both return the same kind of answer: the ``k`` sentence ids of highest similarity, similarity
recomputed exactly (float64 dot product of the L2-normalised float32 embeddings), ties broken by the
lower id. So the approximate index differs from the exact one only where it misses a candidate, and
the numbers never depend on which other queries shared a batch (each query is searched alone).
"""
from __future__ import annotations

import numpy as np

KINDS = ("exact", "ivf", "auto")
AUTO_IVF_ABOVE = 200_000  # sentences: past this "auto" uses FAISS (exact search costs S·384 per image)


class SentenceIndex:
    """``embeddings`` [S, E] (rows L2-normalised) with their ``ids`` [S] (e.g. line numbers)."""

    def __init__(self, embeddings: np.ndarray, ids: np.ndarray, kind: str = "exact", nlist: int = 0, nprobe: int = 16, seed: int = 1234):
        if kind not in KINDS:
            raise ValueError(f"unknown index kind {kind!r}; choose one of {KINDS}")
        if embeddings.ndim != 2 or len(embeddings) != len(ids):
            raise ValueError(f"embeddings {embeddings.shape} do not fit {len(ids)} ids")
        self.emb = np.ascontiguousarray(embeddings, np.float32)
        self.emb64 = self.emb.astype(np.float64)
        self.ids = np.asarray(ids, np.int64)
        self.kind = ("ivf" if len(ids) > AUTO_IVF_ABOVE else "exact") if kind == "auto" else kind
        self.faiss_index = None
        if self.kind == "ivf":
            # The quantizer is kept here: FAISS's Python index does not own it.
            self.faiss_index, self._quantizer = _build_ivf(self.emb, nlist or max(1, int(4 * np.sqrt(len(ids)))), nprobe, seed)

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """One query [E] → ``(ids [k'], similarities [k'])``, k' = min(k, S), best first."""
        k = min(k, len(self.ids))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        if self.faiss_index is None:
            rows = np.arange(len(self.ids))
        else:
            _, cand = self.faiss_index.search(np.asarray(query, np.float32)[None, :], k)
            rows = cand[0][cand[0] >= 0]
        sims = self.emb64[rows] @ np.asarray(query, np.float32).astype(np.float64)
        order = np.lexsort((self.ids[rows], -sims))[:k]  # by similarity, then by id
        return self.ids[rows[order]], sims[order]


def _build_ivf(emb: np.ndarray, nlist: int, nprobe: int, seed: int):
    """FAISS inverted-file index over inner products (= cosine on normalised rows), single-threaded
    so that training (k-means from a fixed seed) is reproducible."""
    import faiss

    faiss.omp_set_num_threads(1)
    nlist = min(nlist, len(emb))
    quantizer = faiss.IndexFlatIP(emb.shape[1])
    index = faiss.IndexIVFFlat(quantizer, emb.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1  # small corpora: no warning, no resampling
    index.train(emb)
    index.add(emb)
    index.nprobe = min(nprobe, nlist)
    return index, quantizer
