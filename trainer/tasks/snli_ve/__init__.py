"""SNLI-VE: reader (published jsonl), 3-way head and loss, accuracy overall and per class, majority
baseline; images join region samples through :func:`trainer.tasks.vcr.join.join_image_names`."""
from trainer.tasks.snli_ve.baseline import majority_label, majority_predictions
from trainer.tasks.snli_ve.head import SNLIVEHead
from trainer.tasks.snli_ve.loss import snli_ve_loss
from trainer.tasks.snli_ve.metric import SNLIVEScores, evaluate
from trainer.tasks.snli_ve.reader import LABELS, SNLIVEError, SNLIVEExample, iter_snli_ve, read_snli_ve, read_split, split_path

__all__ = [
    "LABELS", "SNLIVEError", "SNLIVEExample", "SNLIVEHead", "SNLIVEScores", "evaluate", "iter_snli_ve", "majority_label",
    "majority_predictions", "read_snli_ve", "read_split", "snli_ve_loss", "split_path",
]
