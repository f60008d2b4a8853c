"""Downstream tasks: ``finetune`` is the loop they share (optimiser, schedule, checkpoints, logging, evaluation hook); each task (``rec``, ...) brings its reader, head, loss and metric."""
