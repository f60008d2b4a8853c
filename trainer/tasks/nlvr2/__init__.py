"""NLVR2: reader (published jsonl), pair head, 2-way loss, the official accuracy and consistency,
majority baseline; images join region samples through :func:`trainer.tasks.vcr.join.join_image_names`."""
from trainer.tasks.nlvr2.baseline import majority_label, majority_predictions
from trainer.tasks.nlvr2.head import NLVR2Head
from trainer.tasks.nlvr2.loss import nlvr2_loss
from trainer.tasks.nlvr2.metric import NLVR2Scores, evaluate, read_predictions, write_predictions
from trainer.tasks.nlvr2.reader import LABELS, NLVR2Error, NLVR2Example, image_names, iter_nlvr2, read_nlvr2, read_split, split_path

__all__ = [
    "LABELS", "NLVR2Error", "NLVR2Example", "NLVR2Head", "NLVR2Scores", "evaluate", "image_names", "iter_nlvr2", "majority_label",
    "majority_predictions", "nlvr2_loss", "read_nlvr2", "read_predictions", "read_split", "split_path", "write_predictions",
]
