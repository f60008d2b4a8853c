"""VQA 2.0: reader (published layout), join to region shards, answer vocabulary + soft targets,
ViLBERT head, BCE loss, the official metric and prior baselines. See the modules' docstrings."""
from trainer.tasks.vqa.answers import normalize_answer, question_accuracy
from trainer.tasks.vqa.baseline import majority_answers, majority_predictions
from trainer.tasks.vqa.head import VQAHead
from trainer.tasks.vqa.join import join_regions, region_image_ids
from trainer.tasks.vqa.loss import vqa_bce_loss
from trainer.tasks.vqa.metric import VQAScores, evaluate, evaluate_file, read_predictions, write_predictions
from trainer.tasks.vqa.reader import ANSWER_TYPES, VQAError, VQAExample, read_split, read_vqa, split_paths
from trainer.tasks.vqa.vocab import AnswerVocab, build_answer_vocab, soft_target, target_tensor

__all__ = [
    "ANSWER_TYPES", "AnswerVocab", "VQAError", "VQAExample", "VQAHead", "VQAScores", "build_answer_vocab", "evaluate",
    "evaluate_file", "join_regions", "majority_answers", "majority_predictions", "normalize_answer", "question_accuracy",
    "read_predictions", "read_split", "read_vqa", "region_image_ids", "soft_target", "target_tensor", "vqa_bce_loss",
    "write_predictions", "split_paths",
]
