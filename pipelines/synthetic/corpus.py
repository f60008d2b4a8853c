"""Write a synthetic grounded corpus to disk in the formats real corpora come in.

See :mod:`pipelines.synthetic` for the layout. Image ``i`` draws everything from its own generator
``default_rng([seed, i])``, so a corpus of N images is a prefix of a corpus of M > N images with
the same seed, and any image can be regenerated alone. The corpus is built in a temporary sibling
directory and renamed into place, ``_MANIFEST.json`` written last, so a reader never sees half a
corpus.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from schemas.manifest import MANIFEST_NAME, fingerprint
from schemas.records import SCHEMA_VERSION
from pipelines.formats import writers
from pipelines.synthetic.detector import ATTRIBUTES, BOXES_PER_IMAGE, Detections, detect, projection
from pipelines.synthetic.language import make_caption, referring_expressions
from pipelines.synthetic.scene import IMAGE_SIDE, SHAPE_VOCAB_LINES, SHAPES, Scene, draw_scene
from pipelines.synthetic.task_files import CORPUS_KIND, refuse_foreign
from ssga_io import atomic

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
ENTITY_TYPE = "other"
REFER_SPLITS = (("train", 0.7), ("val", 0.1), ("testA", 0.1), ("testB", 0.1))


def image_id_of(index: int, num_images: int) -> str:
    """Zero-padded decimal id ("000017"): tar-key safe, sorts like the index."""
    return str(index).zfill(max(6, len(str(max(num_images - 1, 0)))))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _refer_entries(scene, index: int, split: str, counters: dict[str, int], file_name: str):
    """REFER refs and COCO-style annotations of one image (ids count up across the corpus)."""
    refs, anns = [], []
    exprs = referring_expressions(scene)
    for i, o in enumerate(scene.objects):
        counters["ann"] += 1
        x1, y1, x2, y2 = (float(v) for v in o.box)
        ann = {
            "id": counters["ann"],
            "image_id": index,
            "category_id": SHAPES.index(o.shape) + 1,
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": o.area,
            "iscrowd": 0,
            "attributes": {"colour": o.colour, "size": o.size},
        }
        anns.append(ann)
        sentences = []
        for e in exprs[i]:
            counters["sent"] += 1
            sentences.append({"sent_id": counters["sent"], "raw": e.text, "sent": e.text, "tokens": e.text.split(), "needs": e.needs, "kind": e.kind})
        counters["ref"] += 1
        refs.append(
            {
                "ref_id": counters["ref"],
                "ann_id": ann["id"],
                "category_id": ann["category_id"],
                "image_id": index,
                "file_name": f"{Path(file_name).stem}_{ann['id']}{Path(file_name).suffix}",  # REFER: image stem + _<ann_id>
                "split": split,
                "sent_ids": [s["sent_id"] for s in sentences],
                "sentences": sentences,
            }
        )
    return refs, anns


def generate_image(index: int, num_images: int, seed: int, feature_dim: int = 64, proj: np.ndarray | None = None) -> tuple[Scene, Detections, np.random.Generator]:
    """Scene and detections of image ``index``, exactly as :func:`generate` writes them; also the
    image's generator, positioned where the captions start drawing from it."""
    rng = np.random.default_rng([seed, index])
    scene = draw_scene(image_id_of(index, num_images), rng)
    det = detect(scene, rng, feature_dim, proj)
    return scene, det, rng


def generate(out: str | os.PathLike, num_images: int, seed: int = 0, feature_dim: int = 64, captions_per_image: int = 2) -> dict[str, Any]:
    """Generate the corpus into ``out`` (replacing a previous synthetic corpus there). Returns the manifest."""
    if num_images < 0 or feature_dim < 1 or captions_per_image < 1:
        raise ValueError("num_images must be >= 0, feature_dim and captions_per_image >= 1")
    out = Path(out)
    refuse_foreign(out, CORPUS_KIND, "a synthetic corpus")
    tmp = atomic.temp_name(out)  # a directory, renamed whole
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("images", "regions_npz", "regions_npy", "flickr30k/Sentences", "flickr30k/Annotations", "refer"):
        (tmp / sub).mkdir(parents=True)

    proj = projection(feature_dim)
    counters = {"ann": 0, "ref": 0, "sent": 0, "captions": 0, "boxes": 0, "objects": 0}
    refs: list[dict] = []
    images_json, anns_json = [], []
    with open(tmp / "captions.tsv", "w", newline="") as cap_f, open(tmp / "regions.tsv", "w", newline="") as tsv_f, open(
        tmp / "regions_lxmert.tsv", "w", newline=""
    ) as lx_f:
        for index in tqdm(range(num_images), desc="synthetic corpus", unit="img", disable=num_images < 200):
            scene, det, rng = generate_image(index, num_images, seed, feature_dim, proj)
            image_id = scene.image_id
            file_name = f"{image_id}.png"
            Image.fromarray(scene.pixels).save(tmp / "images" / file_name, format="PNG")
            rec = det.record
            tsv_f.write(writers.butd_line(rec))
            lx_f.write(writers.lxmert_line(rec, det.objects_id, det.objects_conf, det.attrs_id, det.attrs_conf))
            writers.write_region_npz(tmp / "regions_npz" / f"{image_id}.npz", rec)
            writers.write_region_npy(tmp / "regions_npy" / f"{image_id}.npy", rec)

            sentences = []
            for _ in range(captions_per_image):
                cap = make_caption(scene, rng)
                cap_f.write(writers.caption_line(cap.text, f"images/{file_name}"))
                sentences.append(writers.flickr30k_sentence(cap.text, [(s, e, ent, ENTITY_TYPE) for s, e, ent in cap.phrases]))
            (tmp / "flickr30k/Sentences" / f"{image_id}.txt").write_text("\n".join(sentences) + "\n")
            (tmp / "flickr30k/Annotations" / f"{image_id}.xml").write_text(
                writers.flickr30k_xml(file_name, scene.width, scene.height, [(i + 1, o.box) for i, o in enumerate(scene.objects)])
            )

            split = REFER_SPLITS[int(rng.choice(len(REFER_SPLITS), p=[p for _, p in REFER_SPLITS]))][0]
            r, a = _refer_entries(scene, index, split, counters, file_name)
            refs.extend(r)
            anns_json.extend(a)
            images_json.append({"id": index, "file_name": file_name, "width": scene.width, "height": scene.height})
            counters["captions"] += captions_per_image
            counters["boxes"] += rec.num_boxes
            counters["objects"] += len(scene.objects)

    instances = {
        "images": images_json,
        "annotations": anns_json,
        "categories": [{"id": i + 1, "name": s, "supercategory": "shape"} for i, s in enumerate(SHAPES)],
    }
    writers.write_refer(tmp / "refer", refs, instances)
    (tmp / "objects_vocab.txt").write_text("\n".join(SHAPE_VOCAB_LINES) + "\n")
    (tmp / "attributes_vocab.txt").write_text("\n".join(ATTRIBUTES) + "\n")

    params = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "num_images": num_images,
        "feature_dim": feature_dim,
        "captions_per_image": captions_per_image,
    }
    top_files = sorted(p.name for p in tmp.iterdir() if p.is_file())
    manifest = {
        "kind": CORPUS_KIND,
        "schema_version": SCHEMA_VERSION,
        "fingerprint": fingerprint(params),
        **params,
        "image_side_range": list(IMAGE_SIDE),
        "boxes_per_image_range": list(BOXES_PER_IMAGE),
        "num_classes": len(SHAPES) + 1,
        "box_convention": "regions.tsv, regions_lxmert.tsv, regions_npz and regions_npy hold 0-based inclusive pixel boxes (BUTD); flickr30k/Annotations 1-based inclusive (Pascal VOC, as Flickr30k Entities); refer/instances.json holds COCO xywh",
        "counts": {
            "images": num_images,
            "captions": counters["captions"],
            "regions": counters["boxes"],
            "objects": counters["objects"],
            "refs": counters["ref"],
            "sentences": counters["sent"],
        },
        # Digests of the top-level files; per-image files are listed by directory and count.
        "files": {name: _sha256(tmp / name) for name in top_files},
        "directories": {
            d: sum(1 for _ in (tmp / d).iterdir())
            for d in ("images", "regions_npz", "regions_npy", "flickr30k/Sentences", "flickr30k/Annotations", "refer")
        },
    }
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    log.info("wrote %d images, %d captions, %d regions to %s", num_images, counters["captions"], counters["boxes"], out)
    return manifest
