"""What every training loop shares: checkpoints (``checkpoint``), optimiser and learning-rate schedule (``optim``), devices (``device``)."""
