"""Synthetic grounded corpus: the project's test data and demo, in the formats real corpora use.

Call ``python -m pipelines.synthetic --out DIR --num-images N --seed S [--feature-dim D]`` (or
``make sample``), or from Python ``pipelines.synthetic.generate(out, num_images, seed, feature_dim)``.
Deterministic by seed (same arguments → byte-identical files); image ``i`` depends only on
``(seed, i)``. Layout of DIR:

    images/<image_id>.png                 RGB scenes of 2-5 coloured shapes (image_id "000017")
    captions.tsv                          Conceptual Captions TSV: caption<TAB>images/<image_id>.png
    objects_vocab.txt                     shape classes, BUTD style (line i = class i+1; 0 = background)
    attributes_vocab.txt                  attribute names of LXMERT's attrs_id (colours, gray, sizes)
    regions.tsv                           bottom-up-attention TSV (inclusive boxes, base64 float32)
    regions_lxmert.tsv                    LXMERT's TSV variant (objects/attrs id + conf)
    regions_npz/<image_id>.npz            safe form: bbox, features, cls_prob, objects, num_boxes, ...
    regions_npy/<image_id>.npy            ViLBERT/MMF pickled dict form (read only with --allow-pickle)
    flickr30k/Sentences/<image_id>.txt    Flickr30k Entities markup, one line per caption, same order (tokenised)
    flickr30k/Annotations/<image_id>.xml  Flickr30k Entities boxes per entity id (1-based inclusive pixels)
    refer/refs.json, refer/refs(unc).p, refer/instances.json   referring expressions (REFER form: a ref's
                                          file_name is <stem>_<ann_id>.png as in RefCOCO; images by COCO id)
    _MANIFEST.json                        seed, sizes, counts, digests of the top-level files

Caption ``k`` of an image (file order) has caption_id ``"<image_id>#<k>"``. Entity ids are object
index + 1 within the image. Features are computed from the pixels inside each box (colour and shape
recoverable but noisy); ``cls_prob`` knows shape, not colour. Scenes include same-shape twins on
purpose, so referring expressions need colour, size or position (``needs`` in refs.json).
"""
from pipelines.synthetic.corpus import generate, generate_image, image_id_of  # noqa: F401
