"""Downstream tasks: each a reader, a head, a loss and a metric on the one fine-tuning engine."""
