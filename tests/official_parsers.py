"""Ports of the datasets' official parsing functions, for tests that check our readers agree with them.

* ``get_sentence_data`` and ``get_annotations``: BryanPlummer/flickr30k_entities,
  ``flickr30k_entities_utils.py`` (commit 873a1c14a86378c6073e29238bbe2236f93c5caa), ported to
  Python 3 unchanged in logic (whitespace tokenisation; every XML coordinate minus 1).
* ``Refer``: the loading and indexing part of lichengunc/refer ``refer.py`` (``REFER.__init__`` +
  ``createIndex`` + ``getRefIds``/``loadImgs``/``getRefBox``, commit 2fe1dfef34fdfe040177f138e9de6a433e53bf29),
  without the plotting and mask code and with the data directory given directly.

Test helpers only: the readers under test live in ``pipelines/formats/flickr30k.py`` and ``trainer/tasks/rec/refer.py``.
"""
from __future__ import annotations

import json
import os.path as osp
import pickle
import xml.etree.ElementTree as ET  # noqa: S405 - test helper reading files the tests just wrote


def get_sentence_data(fn):
    with open(fn, "r") as f:
        sentences = f.read().split("\n")
    annotations = []
    for sentence in sentences:
        if not sentence:
            continue
        first_word, phrases, phrase_id, phrase_type, words, current_phrase = [], [], [], [], [], []
        add_to_phrase = False
        for token in sentence.split():
            if add_to_phrase:
                if token[-1] == "]":
                    add_to_phrase = False
                    token = token[:-1]
                    current_phrase.append(token)
                    phrases.append(" ".join(current_phrase))
                    current_phrase = []
                else:
                    current_phrase.append(token)
                words.append(token)
            else:
                if token[0] == "[":
                    add_to_phrase = True
                    first_word.append(len(words))
                    parts = token.split("/")
                    phrase_id.append(parts[1][3:])
                    phrase_type.append(parts[2:])
                else:
                    words.append(token)
        sentence_data = {"sentence": " ".join(words), "phrases": []}
        for index, phrase, p_id, p_type in zip(first_word, phrases, phrase_id, phrase_type):
            sentence_data["phrases"].append({"first_word_index": index, "phrase": phrase, "phrase_id": p_id, "phrase_type": p_type})
        annotations.append(sentence_data)
    return annotations


def get_annotations(fn):
    tree = ET.parse(fn)
    root = tree.getroot()
    size_container = root.findall("size")[0]
    anno_info = {"boxes": {}, "scene": [], "nobox": []}
    for size_element in size_container:
        anno_info[size_element.tag] = int(size_element.text)
    for object_container in root.findall("object"):
        box_id = object_container.findall("name")[0].text
        box_container = object_container.findall("bndbox")
        if len(box_container) > 0:
            if box_id not in anno_info["boxes"]:
                anno_info["boxes"][box_id] = []
            xmin = int(box_container[0].findall("xmin")[0].text) - 1
            ymin = int(box_container[0].findall("ymin")[0].text) - 1
            xmax = int(box_container[0].findall("xmax")[0].text) - 1
            ymax = int(box_container[0].findall("ymax")[0].text) - 1
            anno_info["boxes"][box_id].append([xmin, ymin, xmax, ymax])
        else:
            nobndbox = int(object_container.findall("nobndbox")[0].text)
            if nobndbox > 0:
                anno_info["nobox"].append(box_id)
            scene = int(object_container.findall("scene")[0].text)
            if scene > 0:
                anno_info["scene"].append(box_id)
    return anno_info


class Refer:
    """REFER's index over ``refs(<split_by>).p`` + ``instances.json`` of one dataset directory."""

    def __init__(self, data_dir, split_by="unc"):
        with open(osp.join(data_dir, "refs(" + split_by + ").p"), "rb") as f:
            self.data = {"refs": pickle.load(f)}
        with open(osp.join(data_dir, "instances.json"), "r") as f:
            instances = json.load(f)
        self.data["images"] = instances["images"]
        self.data["annotations"] = instances["annotations"]
        self.data["categories"] = instances["categories"]
        self.createIndex()

    def createIndex(self):  # noqa: N802 - the original's name
        Anns, Imgs, Cats, imgToAnns = {}, {}, {}, {}
        for ann in self.data["annotations"]:
            Anns[ann["id"]] = ann
            imgToAnns[ann["image_id"]] = imgToAnns.get(ann["image_id"], []) + [ann]
        for img in self.data["images"]:
            Imgs[img["id"]] = img
        for cat in self.data["categories"]:
            Cats[cat["id"]] = cat["name"]
        Refs, imgToRefs, refToAnn, annToRef, catToRefs = {}, {}, {}, {}, {}
        Sents, sentToRef, sentToTokens = {}, {}, {}
        for ref in self.data["refs"]:
            ref_id, ann_id, category_id, image_id = ref["ref_id"], ref["ann_id"], ref["category_id"], ref["image_id"]
            Refs[ref_id] = ref
            imgToRefs[image_id] = imgToRefs.get(image_id, []) + [ref]
            catToRefs[category_id] = catToRefs.get(category_id, []) + [ref]
            refToAnn[ref_id] = Anns[ann_id]
            annToRef[ann_id] = ref
            for sent in ref["sentences"]:
                Sents[sent["sent_id"]] = sent
                sentToRef[sent["sent_id"]] = ref
                sentToTokens[sent["sent_id"]] = sent["tokens"]
        self.Refs, self.Anns, self.Imgs, self.Cats, self.Sents = Refs, Anns, Imgs, Cats, Sents
        self.imgToRefs, self.imgToAnns, self.refToAnn, self.annToRef = imgToRefs, imgToAnns, refToAnn, annToRef
        self.catToRefs, self.sentToRef, self.sentToTokens = catToRefs, sentToRef, sentToTokens

    def getRefIds(self, split=""):  # noqa: N802 - the original's name (only the split filter is ported)
        refs = self.data["refs"]
        if split in ("testA", "testB", "testC"):
            refs = [ref for ref in refs if split[-1] in ref["split"]]
        elif split in ("train", "val"):
            refs = [ref for ref in refs if ref["split"] == split]
        elif split:
            raise ValueError(f"No such split [{split}]")
        return [ref["ref_id"] for ref in refs]

    def loadImgs(self, image_ids):  # noqa: N802
        return [self.Imgs[image_ids]] if isinstance(image_ids, int) else [self.Imgs[i] for i in image_ids]

    def getRefBox(self, ref_id):  # noqa: N802
        return self.refToAnn[ref_id]["bbox"]  # [x, y, w, h]
