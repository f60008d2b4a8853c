"""An image's tag sentence: the detector class names of its most confident regions."""
from __future__ import annotations

import numpy as np


def tag_sentence(classes: np.ndarray, conf: np.ndarray | None, class_names: list[str], max_regions: int = 10, min_conf: float = 0.0) -> list[str]:
    """Distinct class names of the ``max_regions`` most confident regions with confidence ≥ ``min_conf``.

    ``classes``: 1-based class ids (0 is the background) [N]; ``conf``: their detector confidence [N]
    (None: all 1). Names come in order of their best region's confidence; ties by region index.
    Returns the tag list (``" ".join`` of it is the sentence that is embedded).
    """
    classes = np.asarray(classes, np.int64)
    conf = np.ones(len(classes)) if conf is None else np.asarray(conf, np.float64)
    if len(classes) and (classes.min() < 1 or classes.max() > len(class_names)):
        raise ValueError(f"region class id outside 1..{len(class_names)} of the objects vocabulary")
    order = np.argsort(-conf, kind="stable")
    order = order[conf[order] >= min_conf][:max_regions]
    names: list[str] = []
    for i in order:
        name = class_names[classes[i] - 1]
        if name not in names:
            names.append(name)
    return names
