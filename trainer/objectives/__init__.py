"""Switchable pre-training objectives beyond the teacher-supervised ones (issue #14), as pure functions.

μ-VLA (unpaired images and text; Zhou et al., CVPR 2022), on weakly aligned data built by
:mod:`pipelines.retrieval`:

- :mod:`.masked` — the masked-modelling terms every stage reuses: masked token prediction, masked
  region classification (KL to the detector distribution), masked region feature regression.
- :mod:`.region_tag` — region–tag alignment: MLM over a tag sentence with the regions, MRC, MRFR.
- :mod:`.region_phrase` — noun phrases linked to the region whose tag embedding is most similar;
  phrase-guided masked region-to-token classification.
- :mod:`.image_sentence` — ITM (+ MLM) on retrieved pairs, the ITM term weighted by the model's own
  ITM score after the first epoch.
- :mod:`.curriculum` — region–tag first, then + region–phrase, then + image–sentence.

GroundedBERT (no teacher): :mod:`.partial_ot` — partial optimal transport between token and region
states (batched, padding masks, checked against POT) plus a global image–sentence matching term.

Every loss returns a :class:`Term` ``(sum, count)``, as :mod:`trainer.losses` does, so that any
batch split (gradient accumulation, DDP) gives the same mean once the loop divides by the global count.
"""
from trainer.objectives.curriculum import Curriculum, CurriculumSwitch  # noqa: F401
from trainer.objectives.image_sentence import itm_loss, itm_self_weights  # noqa: F401
from trainer.objectives.masked import (  # noqa: F401
    Term,
    masked_region_classification_loss,
    masked_region_feature_regression_loss,
    masked_token_loss,
)
from trainer.objectives.partial_ot import (  # noqa: F401
    cosine_cost,
    entropic_partial_ot,
    grounded_alignment_losses,
    partial_ot_loss,
)
from trainer.objectives.region_phrase import link_phrases_to_regions, region_to_token_loss  # noqa: F401
from trainer.objectives.region_tag import region_tag_losses  # noqa: F401
