"""Records that travel through the label graph as one element, and the coder that sizes them cheaply.

Beam's per-element cost (bundle machinery, a pickle per object at every shuffle) is paid per
:class:`Batch` (hundreds of records), not per record. One cost remains per batch unless the coder
knows better: at every step Beam samples output elements to estimate their mean byte size (the
first 10 always, then about 10/N), and its default coder estimates a size by encoding the element.
A batch is large and batches are few, so nearly every one was pickled whole just to be measured: 4.5 s
of a 61 s in-process run at 20,000 images (``make bench BENCH=labels_scale``). :class:`BatchAwareCoder`
estimates a batch from the pickled size of its first two records instead; what it encodes
is byte for byte what Beam's default coder encodes.
"""
from __future__ import annotations

import pickle

import apache_beam as beam
from apache_beam.coders import coder_impl


class Batch(list):
    """Records travelling as one element. A ``list`` subclass so that Beam's coder pickles the batch in
    one call at a shuffle instead of walking it (a plain list is encoded item by item, each record
    pickled on its own). Sinks and counts unpack it: a batch counts as its records."""

    __slots__ = ()


def _holds_batch(value: object, depth: int = 3) -> bool:
    t = type(value)
    if t is Batch:
        return True
    if t is dict:
        value = value.values()
    elif t is not tuple and t is not list:
        return False
    return depth > 0 and any(_holds_batch(v, depth - 1) for v in value)


class _BatchAwareImpl(coder_impl.FastPrimitivesCoderImpl):
    """Beam's default coder for untyped elements, with a cheap size estimate for batches (and the
    tuples and dicts that carry them: ``(key, Batch)``, a co-group's ``(key, (tag, Batch))``)."""

    def estimate_size(self, value, nested=False):
        t = type(value)
        if t is Batch:
            # The first record's pickle, then what a second record adds (class references and other
            # shared objects are pickled once per batch): two small pickles, not the whole batch.
            if len(value) < 2:
                return 8 + len(pickle.dumps(list(value), pickle.HIGHEST_PROTOCOL))
            one, two = (len(pickle.dumps(value[:n], pickle.HIGHEST_PROTOCOL)) for n in (1, 2))
            return 8 + one + (len(value) - 1) * (two - one)
        if t is dict and _holds_batch(value):
            return 2 + sum(self.estimate_size(k, True) + self.estimate_size(v, True) for k, v in value.items())
        if (t is tuple or t is list) and _holds_batch(value):
            return 2 + sum(self.estimate_size(v, True) for v in value)
        return super().estimate_size(value, nested)

    def get_estimated_size_and_observables(self, value, nested=False):
        if _holds_batch(value):
            return self.estimate_size(value, nested), []
        return super().get_estimated_size_and_observables(value, nested)


class BatchAwareCoder(beam.coders.FastPrimitivesCoder):
    """:class:`~apache_beam.coders.FastPrimitivesCoder` (same bytes) whose size estimate of a batch is cheap."""

    def _create_impl(self):
        return _BatchAwareImpl(self._fallback_coder.get_impl())


_registered = False


def use_batch_aware_coder() -> None:
    """Make :class:`BatchAwareCoder` the coder of untyped PCollections (Beam's registry is per process;
    a pipeline's coders travel in its proto, so workers need no registration). Idempotent."""
    global _registered
    if not _registered:
        beam.coders.registry.register_fallback_coder(BatchAwareCoder)
        _registered = True
