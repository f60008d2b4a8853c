"""Simulated teacher: ground truth with controlled errors and calibrated scores.

Per ground-truth box: dropped with probability ``miss_rate``; kept boxes are jittered by Gaussian noise of
``jitter`` × the box's width/height. Per phrase: a Poisson(``false_rate``) number of false boxes uniform
in the image. Scores are calibrated by construction: each box draws a latent confidence
``z ~ N(1, score_noise)`` if it came from the ground truth and ``N(0, score_noise)`` if it is false, and
its score is the posterior ``P(from ground truth | z)`` under the prior implied by the two rates.
Randomness is seeded per caption (``seed`` + caption id), so results do not depend on batching.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

from pipelines.teachers.base import Param, TeacherInput
from pipelines.teachers.oracle import GroundTruthTeacher
from schemas.records import TeacherBox


class SimulatedTeacher(GroundTruthTeacher):
    name = "simulated"

    PARAMS = {
        **GroundTruthTeacher.PARAMS,
        "miss_rate": Param(float, 0.2, lo=0.0, hi=1.0, hi_open=True, help="probability of dropping a ground-truth box"),
        "false_rate": Param(float, 0.3, lo=0.0, help="mean number of false boxes per phrase"),
        "jitter": Param(float, 0.1, lo=0.0, help="box noise, a fraction of the box size"),
        "score_noise": Param(float, 0.5, lo=0.0, lo_open=True, help="std of the latent confidence"),
        "seed": Param(int, 0),
    }

    def __init__(self, **params):
        super().__init__(**params)
        v = self.values
        self.miss_rate, self.false_rate, self.jitter = v["miss_rate"], v["false_rate"], v["jitter"]
        self.score_noise, self.seed = v["score_noise"], v["seed"]
        kept = 1.0 - self.miss_rate
        self.prior = kept / (kept + self.false_rate) if kept + self.false_rate > 0 else 1.0

    def calibrated_score(self, z: np.ndarray) -> np.ndarray:
        """Posterior P(true | z) for z ~ N(1, s) if true, N(0, s) if false."""
        s2 = self.score_noise**2
        log_lr = (z - 0.5) / s2  # log N(z;1,s)/N(z;0,s)
        logit = log_lr + math.log(self.prior / (1 - self.prior)) if self.prior < 1 else np.full_like(z, 50.0)
        return 1.0 / (1.0 + np.exp(-np.clip(logit, -50, 50)))

    def _rng(self, caption_id: str) -> np.random.Generator:
        h = int(hashlib.sha1(caption_id.encode("utf-8")).hexdigest()[:12], 16)
        return np.random.default_rng([self.seed, h])

    def predict_one(self, x: TeacherInput) -> list[TeacherBox]:
        rng = self._rng(x.caption_id)
        out: list[TeacherBox] = []
        w, h = float(x.image_w), float(x.image_h)
        for i, gt in enumerate(self.gt_boxes(x)):
            if gt is None:
                continue  # no ground truth: nothing to corrupt, and no false boxes invented on top
            keep = rng.random(len(gt)) >= self.miss_rate
            true = gt[keep]
            size = np.concatenate([true[:, 2:] - true[:, :2]] * 2, axis=1) if len(true) else np.zeros((0, 4))
            true = true + rng.normal(0.0, self.jitter, size=true.shape) * size
            n_false = rng.poisson(self.false_rate)
            xy = rng.uniform([0, 0], [w, h], size=(n_false, 2))
            wh = rng.uniform(0.1, 0.5, size=(n_false, 2)) * [w, h]
            false = np.concatenate([xy, xy + wh], axis=1)
            boxes = np.concatenate([true, false], axis=0)
            boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
            boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
            z = np.concatenate([rng.normal(1.0, self.score_noise, len(true)), rng.normal(0.0, self.score_noise, n_false)])
            scores = self.calibrated_score(z)
            for b, s in zip(boxes, scores):
                if b[2] - b[0] >= 1 and b[3] - b[1] >= 1:  # jitter can collapse a box; drop degenerate ones
                    out.append(TeacherBox(i, tuple(float(v) for v in b), float(s)))
        return out

    def predict(self, batch: list[TeacherInput]) -> list[list[TeacherBox]]:
        return [self.predict_one(x) for x in batch]
