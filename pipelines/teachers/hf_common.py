"""What the Hugging Face detector teachers (Grounding DINO, OWLv2) share.

Loading from a local directory (safetensors only) onto a device chosen per worker (CUDA when present,
``device=`` forces one), optional half-precision autocast (``precision=fp16|bf16``), and the batched
path every prediction takes:

1. the captions of a batch are grouped by image, and each image is decoded once, ``decode_threads``
   images at a time in a thread pool (the next batch's too, once :meth:`~Teacher.prefetch` named it);
2. all of an image's phrases, from all its captions, de-duplicated, go into as few prompts as the
   model's text limit allows (:meth:`HFDetectorTeacher.pack`);
3. the (image, prompt) pairs run ``batch_size`` at a time; a forward batch only holds images whose
   pre-processed tensors have the same shape, so no image is padded to fit another and an image's
   result does not depend on which images Beam put beside it;
4. each phrase keeps its ``top_k`` boxes scoring at least ``box_threshold`` (the same boxes and scores
   the processor's own post-processing gives: ``tests/test_teachers.py`` checks it).

The GPU is kept fed (issue #11: busy ≥ 70 % of the stage's wall time): a forward batch is launched as
soon as its images are decoded, while the pool decodes the rest, and its results are copied back
asynchronously and read only after the next batch is launched (:meth:`launch` / :meth:`collect`), so
the host's tokenising, decoding and post-processing overlap the device's work instead of alternating
with it. Consecutive batches run on two CUDA streams in turn (:meth:`batch_stream`), so a blocking
call inside the model waits for its own batch only. The batches and their contents are the same as
one at a time, so are the results.

The frame. Teacher boxes are matched against the detector's regions, which live in the detector's
``image_w × image_h`` frame. A decoded image of a different size but the same aspect ratio (within
``aspect_tolerance``, relative) is the same picture at another resolution: the model's normalised
boxes are scaled to the detector's frame. A different aspect ratio means the file is not the picture
the detector saw (a crop, a different image): the caption is dead-lettered with both sizes named.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ssga_io import fs
from pipelines.formats.captions import caption_sort_key
from pipelines.teachers.base import Param, Teacher, TeacherInput
from schemas.manifest import files_digest
from schemas.records import TeacherBox

MODEL_FILES = ("model.safetensors", "config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "processor_config.json", "preprocessor_config.json")
PRECISIONS = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}
# Parameters that say how/where the teacher runs, not what it computes: they stay out of the fingerprint.
RUNTIME_PARAMS = ("model_dir", "device", "batch_size", "torch_threads", "decode_threads")


def model_digest(model_dir: str | Path) -> str:
    files = [Path(model_dir) / f for f in MODEL_FILES]
    files = [f for f in files if f.exists()]
    if not any(f.name == "model.safetensors" for f in files):
        raise FileNotFoundError(f"{model_dir}: no model.safetensors (only safetensors weights are loaded)")
    return files_digest(files)


def device_name(value: str) -> str:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (checked at build time; existence at load time)."""
    v = str(value).strip().lower()
    if v in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", v):
        return v
    raise ValueError(v)


def resolve_device(requested: str):
    """The torch device for this worker: ``auto`` is the CUDA GPU with the most free memory when there is
    one (so a worker's model copies spread over its GPUs), else the CPU; a forced device must exist."""
    import torch

    if requested == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if requested == "auto":
            return torch.device("cpu")
        raise RuntimeError(f"teacher device={requested} but this worker has no CUDA device (torch {torch.__version__}, "
                           f"CUDA build {torch.version.cuda}); use device=auto or device=cpu")
    if requested.startswith("cuda:"):
        index = int(requested.partition(":")[2])
        if index >= torch.cuda.device_count():
            raise RuntimeError(f"teacher device={requested} but this worker has {torch.cuda.device_count()} CUDA device(s)")
        return torch.device(requested)
    free = [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]
    return torch.device("cuda", int(np.argmax(free)))


def check_frame(x: TeacherInput, size: tuple[int, int], tolerance: float) -> None:
    """Refuse a decoded image whose aspect ratio differs from the detector frame's (see the module doc)."""
    w, h = size
    W, H = int(x.image_w), int(x.image_h)
    if W <= 0 or H <= 0:
        raise ValueError(f"image {x.image_id}: the region source gives no frame size ({W}x{H})")
    if (w, h) == (W, H):
        return
    ratio = (w / h) / (W / H)
    if abs(ratio - 1.0) > tolerance:
        raise ValueError(f"image {x.image_id}: {x.image_path} decodes to {w}x{h} but the regions were detected on a "
                         f"{W}x{H} image (aspect ratios differ by {abs(ratio - 1):.1%} > aspect_tolerance={tolerance:g}); "
                         "point --images at the files the detector saw")


@dataclass
class Prompt:
    """One text input of the model for one image: the phrase texts it carries (indices into the
    image's de-duplicated phrase list) and whatever the model needs to encode them."""

    texts: list[int]
    text: Any  # model specific: a prompt string (Grounding DINO) or a query list (OWLv2)


@dataclass
class ImageWork:
    key: tuple[str, int, int]
    inputs: list[int]  # indices into the predict batch, caption order
    texts: list[str]  # de-duplicated phrase texts of all its captions
    pixels: dict[str, Any]  # pre-processed image tensors, batch dim 1
    scores: np.ndarray | None = None  # [Q, len(texts)]
    boxes: dict[int, np.ndarray] | None = None  # text index → [Q, 4] xyxy, normalised, of the prompt that carried it


class HFDetectorTeacher(Teacher):
    """A ``transformers`` open-vocabulary detector loaded from ``model_dir``; subclasses say which model
    class, how phrases become prompts (``pack``), and how a forward batch becomes scores (``forward``)."""

    default_box_threshold = 0.3
    PARAMS = {
        "model_dir": Param(str, required=True, help="a local save_pretrained directory with model.safetensors"),
        "box_threshold": Param(float, None, lo=0.0, hi=1.0, help="minimum score of a kept box"),
        "top_k": Param(int, 3, lo=0, help="boxes kept per phrase (0: all above the threshold)"),
        "device": Param(device_name, "auto", valid="'auto', 'cpu', 'cuda' or 'cuda:N'", help="where the model runs"),
        "precision": Param(str, "fp32", choices=tuple(PRECISIONS), help="autocast dtype of the forward pass"),
        "batch_size": Param(int, 8, lo=1, hi=1024, help="(image, prompt) pairs per forward pass (two passes are in flight on a GPU)"),
        "torch_threads": Param(int, 1, lo=1),
        "decode_threads": Param(int, 4, lo=1, hi=64, help="images decoded at once"),
        "aspect_tolerance": Param(float, 0.01, lo=0.0, hi=1.0, hi_open=True,
                                  help="relative aspect-ratio difference between the decoded image and the detector frame"),
    }

    def __init__(self, **params):
        super().__init__(**params)
        v = self.values
        self.model_dir = v["model_dir"]
        self.box_threshold = self.default_box_threshold if v["box_threshold"] is None else v["box_threshold"]
        self.top_k, self.threads, self.batch_size = v["top_k"], v["torch_threads"], v["batch_size"]
        self.precision, self.aspect_tolerance = v["precision"], v["aspect_tolerance"]
        if v["device"] == "cpu" and self.precision == "fp16":
            raise ValueError(f"teacher {self.name!r}: precision=fp16 needs a CUDA device (device=cpu given); use bf16 or fp32 on CPU")
        # fingerprint: what is computed, not where or how fast
        self.params = {k: val for k, val in self.params.items() if k not in RUNTIME_PARAMS}
        self.params.update(box_threshold=self.box_threshold, top_k=self.top_k, precision=self.precision,
                           aspect_tolerance=self.aspect_tolerance, prompts="per-image")
        self.model = None

    @classmethod
    def shares_model(cls, params: dict[str, Any]) -> bool:
        # One copy per GPU: processes of a worker share it. Forced onto the CPU, each process keeps its own
        # (CPU inference scales with processes, and a shared copy would serialise them through one server).
        return str(params.get("device") or "auto").lower() != "cpu"

    def model_class(self):
        raise NotImplementedError

    def weights_digest(self) -> str:
        return model_digest(self.model_dir)

    # ------------------------------------------------------------------ loading
    def load(self) -> "HFDetectorTeacher":
        import torch
        from transformers import AutoProcessor

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        torch.set_num_threads(self.threads)  # one worker per core; also keeps reductions reproducible
        self.torch = torch
        self.device = resolve_device(self.values["device"])
        if self.device.type == "cpu" and self.precision == "fp16":
            raise RuntimeError(f"teacher {self.name!r}: precision=fp16 needs a CUDA device and this worker has none; use bf16 or fp32")
        self.processor = AutoProcessor.from_pretrained(self.model_dir, local_files_only=True)
        model = self.model_class().from_pretrained(self.model_dir, local_files_only=True, use_safetensors=True)
        self.model = model.to(self.device).eval()
        self._pool = ThreadPoolExecutor(max_workers=self.values["decode_threads"], thread_name_prefix="teacher-decode")
        self._ahead: OrderedDict[tuple, Future] = OrderedDict()  # prefetched decodes by image key
        self._ahead_lock = threading.Lock()  # Beam may call one model from several threads
        self._streams, self._turn = None, 0
        if self.device.type == "cuda":
            self._streams = [torch.cuda.Stream(self.device) for _ in range(2)]
            torch.cuda.synchronize(self.device)  # the weights are in place before another stream reads them
        return self

    def batch_stream(self):
        """Where the next forward batch runs: on CUDA, one of two streams in turn. A synchronising call
        inside the model (Hugging Face's Grounding DINO copies a few values to the GPU, blocking) then
        waits only for its own batch's earlier work, not for the batch still running on the other stream."""
        if self._streams is None:
            return contextlib.nullcontext()
        stream, self._turn = self._streams[self._turn], 1 - self._turn
        return self.torch.cuda.stream(stream)

    def autocast(self):
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return self.torch.autocast(device_type=self.device.type, dtype=getattr(self.torch, dtype))

    # ------------------------------------------------------------------ the batched path
    @staticmethod
    def read_image(path: str, image_id: str = ""):
        from PIL import Image

        if not path or not fs.exists(path):
            raise FileNotFoundError(f"image {image_id}: no image file at {path!r}")
        with Image.open(io.BytesIO(fs.read_bytes(path))) as im:
            return im.convert("RGB")

    def phrase_text(self, text: str) -> str:
        """How a phrase enters the model (and which phrases count as the same)."""
        return " ".join(text.lower().split())

    def pack(self, texts: list[str]) -> list[Prompt]:
        """The image's phrase texts → as few prompts as the text limit allows."""
        raise NotImplementedError

    def preprocess(self, image) -> dict[str, Any]:
        """One decoded image → the model's pixel tensors, batch dim 1 (on the CPU)."""
        raise NotImplementedError

    def launch(self, items: list[tuple[ImageWork, Prompt]]) -> Any:
        """Start a forward batch: its results stay on the device, their copies to the host are queued
        (:meth:`to_host`); :meth:`collect` reads them."""
        raise NotImplementedError

    def collect(self, launched: Any) -> list[tuple[np.ndarray, np.ndarray]]:
        """A launched batch → per item (scores [Q, len(prompt.texts)], normalised xyxy boxes [Q, 4])."""
        raise NotImplementedError

    def forward(self, items: list[tuple[ImageWork, Prompt]]) -> list[tuple[np.ndarray, np.ndarray]]:
        return self.collect(self.launch(items))

    def to_device(self, t):
        """A host tensor → the model's device without the host waiting: on CUDA through pinned memory (a
        copy from pageable memory would wait for the kernels queued before it, the previous batch's)."""
        if self.device.type != "cuda":
            return t.to(self.device)
        return t.pin_memory().to(self.device, non_blocking=True)

    def cat_to_device(self, tensors: list):
        """Concatenate along dim 0 straight into pinned memory, then copy to the device (see :meth:`to_device`)."""
        if self.device.type != "cuda":
            return self.torch.cat(tensors).to(self.device)
        shape = (sum(t.shape[0] for t in tensors), *tensors[0].shape[1:])
        out = self.torch.empty(shape, dtype=tensors[0].dtype, pin_memory=True)
        return self.torch.cat(tensors, out=out).to(self.device, non_blocking=True)

    def to_host(self, *tensors) -> tuple:
        """Queue each tensor's copy to the host behind the kernels that make it (on the batch's stream), and
        an event after them: ``(copies, event)``. A plain ``.cpu()`` later would also wait for every batch
        launched since."""
        if self.device.type != "cuda":
            return tuple(t.cpu() for t in tensors), None
        copies = tuple(t.to("cpu", non_blocking=True) for t in tensors)  # into pinned memory
        event = self.torch.cuda.Event()
        event.record()
        return copies, event

    @staticmethod
    def from_host(launched_copies: tuple) -> tuple:
        copies, event = launched_copies
        if event is not None:
            event.synchronize()  # this batch's copies are done; later batches keep the device busy
        return tuple(t.numpy() for t in copies)

    def to_frame(self, boxes: np.ndarray, W: float, H: float) -> np.ndarray:
        """Normalised xyxy → pixels of the detector's ``W × H`` frame (Grounding DINO: relative to the image)."""
        return boxes * np.array([W, H, W, H], np.float32)

    def _decode(self, x: TeacherInput):
        image = self.read_image(x.image_path, x.image_id)
        check_frame(x, image.size, self.aspect_tolerance)
        return self.preprocess(image)

    @staticmethod
    def _groups(batch: list[TeacherInput]) -> OrderedDict[tuple[str, int, int], list[int]]:
        groups: OrderedDict[tuple[str, int, int], list[int]] = OrderedDict()
        for i, x in enumerate(batch):
            if x.phrases:
                groups.setdefault((x.image_path, int(x.image_w), int(x.image_h)), []).append(i)
        return groups

    def prefetch(self, batch: list[TeacherInput]) -> None:
        if self.model is None:
            self.load()
        with self._ahead_lock:
            for key, idx in self._groups(batch).items():
                if key not in self._ahead:
                    self._ahead[key] = self._pool.submit(self._decode, batch[idx[0]])
            while len(self._ahead) > 1024:  # hints never followed by their predict: forget the oldest
                self._ahead.popitem(last=False)

    def _decoding(self, key: tuple, x: TeacherInput) -> Future:
        with self._ahead_lock:
            ahead = self._ahead.pop(key, None)
        return ahead if ahead is not None else self._pool.submit(self._decode, x)

    def plan(self, batch: list[TeacherInput]) -> tuple[list[ImageWork], list[Future]]:
        """Group a batch by image and de-duplicate the phrase texts; each image is decoded once, in the pool
        (the futures, in image order)."""
        work, decoding = [], []
        for key, idx in self._groups(batch).items():
            decoding.append(self._decoding(key, batch[idx[0]]))
            inputs = sorted(idx, key=lambda i: caption_sort_key(batch[i].caption_id))
            texts = list(dict.fromkeys(self.phrase_text(p.text) for i in inputs for p in batch[i].phrases))
            work.append(ImageWork(key, inputs, texts, {}))
        return work, decoding

    def run(self, work: list[ImageWork], decoding: list[Future]) -> None:
        """Fill each image's ``scores``/``boxes``: (image, prompt) pairs, same-shape images per forward.

        Images are taken as they are decoded (in order; a failed decode raises here). A shape's forward
        batch is launched once it holds ``batch_size`` pairs, the rest of each shape at the end: the same
        batches as bucketing everything first. Each launched batch is collected after the next one is
        launched, so the device always has the next batch queued while the host reads the last."""
        buckets: OrderedDict[tuple, list] = OrderedDict()
        parts: dict[int, list] = {id(w): [] for w in work}
        pending: list = []  # (chunk, launched) not yet collected: at most one

        def launch(chunk: list) -> None:
            with self.batch_stream():
                pending.append((chunk, self.launch(chunk)))
            if len(pending) > 1:
                done, launched = pending.pop(0)
                for (w, p), res in zip(done, self.collect(launched)):
                    parts[id(w)].append((p, res))

        for w, px in zip(work, decoding):
            w.pixels = px.result()
            shape = tuple(w.pixels["pixel_values"].shape)
            for p in self.pack(w.texts):
                bucket = buckets.setdefault(shape, [])
                bucket.append((w, p))
                if len(bucket) == self.batch_size:
                    launch(bucket)
                    buckets[shape] = []
        for rest in buckets.values():
            if rest:
                launch(rest)
        for done, launched in pending:
            for (w, p), res in zip(done, self.collect(launched)):
                parts[id(w)].append((p, res))
        for w in work:
            q = parts[id(w)][0][1][0].shape[0]
            w.scores, w.boxes = np.zeros((q, len(w.texts)), np.float32), {}
            for p, (scores, boxes) in parts[id(w)]:
                w.scores[:, p.texts] = scores
                w.boxes.update((t, boxes) for t in p.texts)  # Grounding DINO's queries differ per prompt

    def select(self, w: ImageWork, x: TeacherInput) -> list[TeacherBox]:
        """One caption's phrases → each phrase's ``top_k`` boxes scoring at least ``box_threshold``."""
        W, H = float(x.image_w), float(x.image_h)
        index = {t: j for j, t in enumerate(w.texts)}
        out = []
        for p, ph in enumerate(x.phrases):
            j = index[self.phrase_text(ph.text)]
            scores = w.scores[:, j]
            boxes = self.to_frame(w.boxes[j], W, H)
            boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, W)
            boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, H)
            for q in np.argsort(-scores, kind="stable")[: self.top_k or None]:
                b = boxes[q]
                if scores[q] >= self.box_threshold and b[2] - b[0] > 0 and b[3] - b[1] > 0:
                    out.append(TeacherBox(p, tuple(float(v) for v in b), float(scores[q])))
        return out

    def predict(self, batch: list[TeacherInput]) -> list[list[TeacherBox]]:
        if self.model is None:
            self.load()
        work, decoding = self.plan(batch)
        self.run(work, decoding)
        out: list[list[TeacherBox]] = [[] for _ in batch]
        for w in work:
            for i in w.inputs:
                out[i] = self.select(w, batch[i])
        return out
