"""ssga trainer: stream region + label shards and pre-train ViLBERT / VL-BERT with the grounding loss (see README.md)."""
