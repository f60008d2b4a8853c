"""Moving batches to the device the loop runs on."""
from __future__ import annotations

from typing import Any

import torch


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """One copy per tensor (non-tensors pass through, nested dicts — a μ-VLA batch's parts — are moved too);
    asynchronous when the loader pinned the batch."""
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else to_device(v, device) if isinstance(v, dict) else v
            for k, v in batch.items()}
