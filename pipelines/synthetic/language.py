"""Language of the synthetic corpus: captions with grounded phrases, and referring expressions.

Captions (Conceptual-Captions style) mention 1-3 objects of a scene with colour / size attributes
and true spatial relations; each mentioned object is a phrase span linked to its entity (object
index + 1), which is what Flickr30k Entities markup records. Referring expressions name one object
with the *fewest* attributes that make it unique in its image, and record which attributes were
needed (shape, colour, size, spatial), so downstream evaluation can be broken down by need.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipelines.synthetic.scene import Scene, SceneObject, spatial_relation


@dataclass
class GroundedCaption:
    text: str
    phrases: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, entity id)


@dataclass
class ReferringExpression:
    object_index: int
    text: str
    needs: list[str]  # attributes that make the target unique: shape, colour, size, spatial
    kind: str = "minimal"  # "minimal", or "relational" (minimal + a relation to another object)


def _article(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def object_phrase(o: SceneObject, scene: Scene, rng: np.random.Generator) -> str:
    """"a small red circle": colour always, size when a same-coloured twin differs in size, else half the time."""
    twin_differs_in_size = any(p is not o and p.shape == o.shape and p.colour == o.colour and p.size != o.size for p in scene.objects)
    words = f"{o.colour} {o.shape}"
    if twin_differs_in_size or rng.random() < 0.5:
        words = f"{o.size} {words}"
    return _article(words)


# Templates: {0}, {1}, {2} are object phrases; {r01} the relation of object 0 to object 1.
# Tokenised as Flickr30k's captions are: punctuation stands apart (" , "), so the Sentences markup
# puts the closing bracket before a space, which the official whitespace-splitting parser needs.
_TEMPLATES = {
    1: ["{0}", "a picture of {0}", "{0} on a plain background", "there is {0} in the image"],
    2: ["{0} {r01} {1}", "{0} and {1}", "{0} {r01} {1} on a plain background", "an image of {0} {r01} {1}"],
    3: ["{0} {r01} {1} and {2}", "{0} , {1} and {2}", "{0} {r01} {1} , next to {2}"],
}


def make_caption(scene: Scene, rng: np.random.Generator) -> GroundedCaption:
    n = min(len(scene.objects), int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25])))
    chosen = [int(i) for i in rng.choice(len(scene.objects), size=n, replace=False)]
    phrases = [object_phrase(scene.objects[i], scene, rng) for i in chosen]
    template = _TEMPLATES[n][int(rng.integers(len(_TEMPLATES[n])))]
    rel = spatial_relation(scene.objects[chosen[0]], scene.objects[chosen[1]]) if n > 1 else ""
    # Assemble piece by piece so that every phrase's character span is known exactly.
    text, spans, pos = "", [], 0
    while pos < len(template):
        start = template.find("{", pos)
        if start < 0:
            text += template[pos:]
            break
        end = template.index("}", start)
        text += template[pos:start]
        slot = template[start + 1 : end]
        if slot == "r01":
            text += rel
        else:
            k = int(slot)
            spans.append((len(text), len(text) + len(phrases[k]), chosen[k] + 1))
            text += phrases[k]
        pos = end + 1
    return GroundedCaption(text, spans)


def referring_expressions(scene: Scene) -> list[list[ReferringExpression]]:
    """Per object: its minimal unique expression, plus a relational one when that one is unique too."""
    out: list[list[ReferringExpression]] = []
    objs = scene.objects
    minimal: list[ReferringExpression] = []
    for i, o in enumerate(objs):
        same_shape = [p for p in objs if p is not o and p.shape == o.shape]
        same_colour = [p for p in same_shape if p.colour == o.colour]
        identical = [p for p in same_colour if p.size == o.size]
        needs_colour = len(same_colour) < len(same_shape)
        needs_size = len(identical) < len(same_colour)
        words = [o.colour, o.shape] if same_shape else [o.shape]
        if needs_size:
            # Comparative when it suffices, since size words are relative to the twin, not absolute.
            others = [p for p in same_colour if p.size != o.size]
            bigger, smaller = all(o.area > p.area for p in others), all(o.area < p.area for p in others)
            words.insert(0, "bigger" if bigger and not identical else "smaller" if smaller and not identical else o.size)
        if identical:  # the scene allows one identical twin: only position tells them apart
            rel = spatial_relation(o, identical[0])
            words.append({"to the left of": "on the left", "to the right of": "on the right", "above": "at the top", "below": "at the bottom"}[rel])
        needs = ["colour"] * needs_colour + ["size"] * needs_size + ["spatial"] * bool(identical)
        minimal.append(ReferringExpression(i, "the " + " ".join(words), needs or ["shape"]))
    for i, o in enumerate(objs):
        exprs = [minimal[i]]
        others = [j for j, p in enumerate(objs) if p.shape != o.shape]
        if "spatial" not in minimal[i].needs and others:
            # Relate to the nearest object of another shape: "the red circle to the left of the square".
            j = min(others, key=lambda j: np.hypot(*np.subtract(objs[j].centre, o.centre)))
            anchor = minimal[j].text
            exprs.append(ReferringExpression(i, f"{minimal[i].text} {spatial_relation(o, objs[j])} {anchor}", minimal[i].needs, "relational"))
        out.append(exprs)
    return out
