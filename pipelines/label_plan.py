"""The label pipeline's plan: its configuration, each stage's fingerprint and directory, and the checks before any work."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from pipelines import cli  # noqa: I001 - first: quiets Beam's import-time log lines
from ssga_io import fs
from pipelines.formats.captions import load_id_map, resolve_image_id
from pipelines.stages.stage_io import region_shards
from pipelines.stages.match import DEFAULT_IOU_THRESHOLD, check_threshold
from pipelines.stages.phrases import PhraseConfig
from pipelines.stage_guard import DEFAULT_MAX_REJECT, check_max_reject
from pipelines.teachers import DEFAULT_TEACHER, REGISTRY, build_teacher
from schemas.discovery import current_output
from schemas.manifest import CURRENT_NAME, fingerprint, read_manifest

STAGES = ("phrases", "teacher", "labels")


@dataclass
class LabelConfig:
    captions: str
    regions: str
    out: str
    teacher: str = DEFAULT_TEACHER
    teacher_args: dict[str, Any] = field(default_factory=dict)
    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    flickr30k: str = ""  # ground truth for precision/recall (and for the oracle/simulated teachers)
    images: str = ""  # image directory; default: urls resolved against the captions file's directory
    phrases: PhraseConfig = field(default_factory=PhraseConfig)
    teacher_batch_size: int = 64
    force: bool = False
    image_id: str = "auto"  # caption → region key: auto | stem | int (schemas.image_ids); plan_labels resolves auto
    id_map: str = ""  # mapping file (COCO instances JSON or TSV stem<TAB>id); overrides image_id
    max_reject: float = DEFAULT_MAX_REJECT  # a stage rejecting more than this share of its input fails the run
    content_hash: bool = False  # fingerprint inputs by their bytes, not their files' names, sizes and mtimes


def _regions_fingerprint(regions: str) -> str:
    m = read_manifest(regions)
    if m and m.get("fingerprint"):
        return str(m["fingerprint"])
    return fingerprint([fs.content_digest(p) for _, p in region_shards(regions)])


PIXEL_TEACHERS = frozenset({"grounding_dino", "owlv2"})  # the teachers that open the images


def images_digest(cfg: LabelConfig) -> str:
    """Fingerprint of the images a pixel teacher reads: ``--images`` (the directory), or else the
    files the caption urls name (relative to the captions file). Metadata by default, bytes with ``content_hash``."""
    if cfg.images:
        return fs.source_digest(cfg.images, cfg.content_hash)
    from pipelines.formats.captions import read_captions  # noqa: PLC0415 - only pixel teachers need it

    root = fs.dirname(cfg.captions)
    urls = sorted({c.url for tag, c in read_captions(cfg.captions) if tag == "caption"})
    local = [u if os.path.isabs(u) or "://" in u else fs.join(root, u) for u in urls]
    files = [p for p in local if not p.startswith(("http://", "https://"))]
    web = [p for p in local if p.startswith(("http://", "https://"))]  # not ours to stat: their urls stand for them
    if cfg.content_hash:
        return fingerprint(web, [(p, fs.content_digest(p)) for p in files if fs.exists(p)])
    parents = sorted({fs.dirname(p) if fs.is_remote(p) else os.path.dirname(p) for p in files})
    wanted = set(files)
    meta = [m for m in fs.file_metadata([fs.join(d, "*") for d in parents]) if m[0] in wanted]
    return fingerprint(web, [(os.path.relpath(p, root) if not fs.is_remote(p) else p, size, mtime) for p, size, mtime in meta])


def stage_fingerprints(cfg: LabelConfig, teacher_fp: str, teacher_name: str = "", teacher_params: dict[str, Any] | None = None) -> dict[str, str]:
    """Each stage's fingerprint covers everything that changes its output.

    phrases: the captions and the spaCy model/params; teacher: phrases, regions, the teacher (name,
    params, weights), the images for a pixel teacher, the ground truth an oracle/simulated teacher
    reads; labels: teacher, IoU threshold, and the ground truth that precision/recall are scored on.
    Files enter by metadata (name, size, mtime; cheap on ``gs://`` too) or, with ``cfg.content_hash``, by content.
    """
    name, params = teacher_name or cfg.teacher, teacher_params or {}
    digest = lambda path: fs.source_digest(path, cfg.content_hash) if path else ""  # noqa: E731
    mode = "content" if cfg.content_hash else "metadata"
    # The image key renames every caption's image; "stem" (the historical key) adds nothing.
    key = [] if cfg.image_id in ("stem", "auto") and not cfg.id_map else [cfg.image_id, digest(cfg.id_map)]
    phrases = fingerprint("phrases", mode, digest(cfg.captions), cfg.phrases.fingerprint_params(), *key)
    inputs = {"images": images_digest(cfg) if name in PIXEL_TEACHERS else ""}
    if params.get("flickr30k"):
        inputs["ground_truth"] = digest(str(params["flickr30k"]))
    teacher = fingerprint("teacher", phrases, _regions_fingerprint(cfg.regions), teacher_fp, inputs)
    labels = fingerprint("labels", teacher, cfg.iou_threshold, digest(cfg.flickr30k))
    return {"phrases": phrases, "teacher": teacher, "labels": labels}


def stage_dirs(out: str, fps: dict[str, str]) -> dict[str, str]:
    """``OUT/<stage>/<fingerprint>`` of each stage."""
    return {s: fs.join(out, s, fps[s]) for s in fps}


def current_dir(out: str, stage: str) -> str:
    """The output directory of ``stage`` that the last successful run of ``OUT`` published."""
    published = current_output(fs.join(out, stage))
    if published is None:
        raise FileNotFoundError(f"{fs.join(out, stage, CURRENT_NAME)}: no completed {stage} stage under {out}")
    return published


def plan_labels(cfg: LabelConfig) -> tuple[Any, dict[str, Any], dict[str, str]]:
    """Validate the configuration and resolve fingerprints: ``(teacher, teacher params, stage fps)``.

    Builds the teacher (hashing its weights) but loads no model. A mistake in the configuration
    raises :class:`pipelines.cli.UserError` naming the flag that fixes it.
    """
    with cli.as_user_errors(ValueError):
        check_threshold(cfg.iou_threshold)
        check_max_reject(cfg.max_reject)
    if not fs.exists(cfg.captions) or (not fs.is_remote(cfg.captions) and os.path.isdir(cfg.captions)):
        raise cli.UserError(f"captions file {cfg.captions} does not exist: pass --captions FILE (a caption<TAB>url TSV)")
    with cli.as_user_errors(FileNotFoundError, hint="pass --regions DIR, a directory of regions-NNNNNN.tar shards (python -m pipelines.regions writes them)"):
        region_shards(cfg.regions)
    if cfg.teacher not in REGISTRY:
        raise cli.UserError(f"unknown teacher {cfg.teacher!r}: pass --teacher with one of {', '.join(sorted(REGISTRY))}")
    params = dict(cfg.teacher_args)
    if cfg.teacher == "tag_similarity":
        vocab = str(params.get("objects_vocab") or "")
        if not vocab:
            raise cli.UserError("the tag_similarity teacher needs the detector's class names: pass --objects-vocab FILE (objects_vocab.txt)")
        if not fs.exists(vocab):
            raise cli.UserError(f"objects vocabulary {vocab} does not exist: pass --objects-vocab FILE (the detector's objects_vocab.txt)")
    if cfg.flickr30k and not fs.isdir(cfg.flickr30k):
        raise cli.UserError(f"Flickr30k Entities directory {cfg.flickr30k} does not exist: fix --flickr30k, or leave it out")
    if cfg.flickr30k and cfg.teacher in ("oracle", "simulated"):
        params.setdefault("flickr30k", cfg.flickr30k)
    with cli.as_user_errors(ValueError, TypeError, KeyError, FileNotFoundError, hint="check --teacher-arg"):
        teacher = build_teacher(cfg.teacher, params)  # validates parameters before any work starts
        teacher_fp = teacher.fingerprint  # hashes the weights: a missing file is the user's
    region_manifest = read_manifest(cfg.regions) or {}
    if cfg.teacher == "tag_similarity" and region_manifest.get("has_cls_prob") is False:
        raise cli.UserError(
            f"{cfg.regions}: the region shards carry no detector classes (a plain BUTD TSV?), which the tag_similarity "
            "teacher needs: ingest an LXMERT TSV (--lxmert: objects_id) or .npz/.npy with cls_prob, or use --teacher "
            "grounding_dino/owlv2 (--teacher-arg model_dir=LOCAL_DIR, images beside the captions or --images DIR), or "
            "oracle/simulated with --flickr30k ground truth"
        )
    # Which key joins captions to region samples, checked on the data (an error names both sides).
    with cli.as_user_errors(ValueError, FileNotFoundError):
        cfg.image_id = resolved_image_id(cfg)
    return teacher, params, stage_fingerprints(cfg, teacher_fp, cfg.teacher, params)


def resolved_image_id(cfg: LabelConfig) -> str:
    """The caption → region key (:func:`pipelines.formats.captions.resolve_image_id`), remembered under
    ``OUT/.cache`` per (captions, regions, key settings): checking the join reads region shards, which
    a run whose stages are all complete must not do (skipping costs O(files))."""
    digest = lambda path: fs.source_digest(path, cfg.content_hash) if path else ""  # noqa: E731
    key = fingerprint("image-id", digest(cfg.captions), _regions_fingerprint(cfg.regions), cfg.image_id, digest(cfg.id_map))
    memo = fs.join(cfg.out, ".cache", f"image-id-{key}")
    if fs.exists(memo):
        return fs.read_text(memo).strip()
    resolved = resolve_image_id(cfg.captions, region_shards(cfg.regions), cfg.image_id, load_id_map(cfg.id_map))
    fs.write_bytes(memo, resolved.encode("utf-8"))
    return resolved
