"""VCR: reader (published jsonl), metadata boxes, object references → linked words, (context, choice)
pairs for Q→A and QA→R, links carried to WordPiece tokens and region-shard regions, pair scorer head,
choice cross-entropy, Q→A / QA→R / Q→AR metric, majority
baseline, region join. See the modules' docstrings."""
from trainer.tasks.vcr.baseline import majority_positions, majority_predictions
from trainer.tasks.vcr.head import VCRHead, add_linked_regions
from trainer.tasks.vcr.join import JoinError, join_image_names
from trainer.tasks.vcr.links import MIN_IOU, object_regions, region_links, tokenize_linked
from trainer.tasks.vcr.loss import vcr_loss
from trainer.tasks.vcr.metadata import VCRMetadata, parse_metadata, read_metadata
from trainer.tasks.vcr.metric import VCRScores, evaluate
from trainer.tasks.vcr.reader import NUM_CHOICES, VCRError, VCRExample, iter_vcr, read_split, read_vcr, split_path
from trainer.tasks.vcr.text import GENDER_NEUTRAL_NAMES, MODES, choice_pairs, label_of, words_and_links

__all__ = [
    "GENDER_NEUTRAL_NAMES", "JoinError", "MIN_IOU", "MODES", "NUM_CHOICES", "VCRError", "VCRExample", "VCRHead", "VCRMetadata", "VCRScores",
    "add_linked_regions", "choice_pairs", "evaluate", "iter_vcr", "join_image_names", "label_of", "majority_positions",
    "majority_predictions", "object_regions", "parse_metadata", "read_metadata", "read_split", "read_vcr", "region_links", "split_path", "tokenize_linked", "vcr_loss", "words_and_links",
]
