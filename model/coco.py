"""COCO 2014 person keypoints: the checked annotations, the held-out split, the main people.

Annotation files are read by `load_coco_annotations`, which checks every entry and keeps the
reasons for what it drops or repairs (a `collections.Counter`), so every script can print one
summary instead of a traceback.

Split: `held_out_val_image_ids` is the one rule. The first min(val_holdout, n // 2) images of
val2014's "images" list (annotation order; n = number of entries) are held out: the HDF5
validation file and the domain-shifted evaluation sets come from them, nothing else does.
On the real val2014 (40,504 images) this is the reference's first 2,645; on a small synthetic
set the half-cap keeps a usable part of val2014 for training (docs/recipe.md section 4).

Main people: in annotation order, a non-crowd person with num_keypoints >= 5, area >= 32 * 32
and a box whose centre is at least 0.3 * max(w, h) away from every main person chosen before,
where w, h are the box of THAT chosen person, recorded when it was chosen (the fork recorded the
box of whatever annotation its loop variable last pointed at). One training sample per main
person: its joints first, then every other non-crowd person with num_keypoints > 0.
"""
import collections
import dataclasses
import logging
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np

from model.errors import UserError
from model.files import read_json
from model.skeleton import NUM_COCO, NUM_PARTS, PERSON_CATEGORY, coco_to_cmu

log = logging.getLogger(__name__)

VAL_HOLDOUT = 2645           # reference: first 2,645 val2014 images are the validation set
MIN_KEYPOINTS = 5
MIN_AREA = 32 * 32
MIN_CENTRE_DISTANCE = 0.3    # x max(w, h) of an already chosen main person
BOX_SIZE = 368               # scale_provided = bbox height / 368
SOURCES = ("train2014", "val2014")


# ----------------------------------------------------------------------------- annotations

@dataclasses.dataclass
class CocoSet:
    """A checked person_keypoints_*.json.

    images: the usable image entries in file order; anns: image id -> cleaned person
    annotations in file order (dicts with id, image_id, iscrowd (bool), bbox (4 floats), area,
    num_keypoints, keypoints ((17, 3) float32 or None), segmentation, raw (the entry as read));
    problems: reason -> count of what was dropped or repaired."""
    path: Path
    dataset: dict
    images: list
    anns: dict
    problems: collections.Counter

    def __post_init__(self):
        self._by_id = {im["id"]: im for im in self.images}

    @property
    def image_ids(self):
        return [im["id"] for im in self.images]

    def image(self, image_id):
        return self._by_id[image_id]

    def has_image(self, image_id):
        return image_id in self._by_id


def as_int(value):
    """An integral JSON number as int (1.0 counts, 1.5 and True do not), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def finite_numbers(value, length=None):
    """A JSON list of finite numbers (of `length` if given) as float64, else None."""
    if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
        return None
    try:
        arr = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        return None
    if arr.ndim != 1 or not np.isfinite(arr).all():
        return None
    return arr


def clean_annotation(ann, images, problems):
    """Checked copy of one annotation, or None when it cannot be used (reason counted)."""
    if not isinstance(ann, dict) or as_int(ann.get("image_id")) not in images:
        problems["annotation of an unknown image"] += 1
        return None
    if ann.get("category_id", PERSON_CATEGORY["id"]) != PERSON_CATEGORY["id"]:
        problems["annotation of another category"] += 1
        return None
    image = images[as_int(ann["image_id"])]
    bbox = finite_numbers(ann.get("bbox"), 4)
    if bbox is None:
        problems["annotation without a valid bbox"] += 1
        return None
    crowd = bool(ann.get("iscrowd", 0))
    area = ann.get("area")
    if isinstance(area, bool) or not isinstance(area, (int, float)) or not math.isfinite(area):
        problems["area missing: bbox area used"] += 1
        area = max(bbox[2], 0.0) * max(bbox[3], 0.0)
    if bbox[2] <= 0 or bbox[3] <= 0 or area <= 0:
        # nothing to mask, no scale; its keypoints (if any) would all sit on one point
        problems["zero-area annotation: skipped"] += 1
        return None
    keypoints = None
    if not crowd:
        kp = finite_numbers(ann.get("keypoints"), 3 * NUM_COCO)
        if kp is None:
            problems["keypoints missing or malformed: person treated as unlabelled"] += 1
        else:
            kp = kp.reshape(NUM_COCO, 3).astype(np.float32)
            kp[~np.isin(kp[:, 2], (1, 2)), :] = 0
            w, h = image["width"], image["height"]
            outside = (kp[:, 2] > 0) & ((kp[:, 0] < 0) | (kp[:, 1] < 0)
                                        | (kp[:, 0] > w) | (kp[:, 1] > h))
            if outside.any():
                problems["out-of-image keypoint: set to unlabelled"] += int(outside.sum())
                kp[outside] = 0
            keypoints = kp
    num_keypoints = as_int(ann.get("num_keypoints"))
    if num_keypoints is None:
        num_keypoints = 0 if keypoints is None else int((keypoints[:, 2] > 0).sum())
    return {"id": ann.get("id"), "image_id": image["id"], "iscrowd": crowd,
            "bbox": tuple(float(v) for v in bbox), "area": float(area),
            "num_keypoints": num_keypoints, "keypoints": keypoints,
            "segmentation": ann.get("segmentation"), "raw": ann}


def load_coco_annotations(path):
    """Load and check a COCO keypoint annotation file; UserError if it is unusable as a whole."""
    path = Path(path)
    data = read_json(path, "annotation file")
    if not isinstance(data, dict):
        raise UserError(f"annotation file {path} does not hold a JSON object")
    for key in ("images", "annotations"):
        if not isinstance(data.get(key), list):
            raise UserError(f"annotation file {path} lacks the list {key!r}")
    problems = collections.Counter()
    images = {}
    for entry in data["images"]:
        fields = [as_int(entry.get(k)) if isinstance(entry, dict) else None
                  for k in ("id", "width", "height")]
        if None in fields or fields[1] <= 0 or fields[2] <= 0:
            problems["image entry without a valid id, width or height"] += 1
            continue
        if fields[0] in images:
            problems["duplicate image id"] += 1
            continue
        images[fields[0]] = dict(entry, id=fields[0], width=fields[1], height=fields[2])
    if data["images"] and not images:
        # every entry malformed: an empty split would pass silently through masks and HDF5
        raise UserError(f"annotation file {path} has no usable image entry (all "
                        f"{len(data['images'])}: {format_counts(problems)})")
    anns = {image_id: [] for image_id in images}
    for ann in data["annotations"]:
        clean = clean_annotation(ann, images, problems)
        if clean is not None:
            anns[clean["image_id"]].append(clean)
    if problems:
        log.warning("%s: %s", path.name, format_counts(problems))
    return CocoSet(path, data, list(images.values()), anns, problems)


def format_counts(counter):
    """'3 reason; 1 other reason' (most frequent first), or 'none': one log line of counts."""
    return "; ".join(f"{n} {reason}" for reason, n in counter.most_common()) or "none"


# ----------------------------------------------------------------------------- split

def held_out_count(num_images, val_holdout=VAL_HOLDOUT):
    """How many val2014 images are held out: the reference's count, at most half of them."""
    if val_holdout < 0:
        raise UserError(f"val_holdout must be >= 0, got {val_holdout}")
    return min(int(val_holdout), int(num_images) // 2)


def held_out_val_image_ids(coco_val, val_holdout=VAL_HOLDOUT):
    """Ids of the held-out val2014 images, in annotation order (see the module docstring).

    coco_val: a CocoSet, a pycocotools COCO, the loaded JSON dict or its "images" list. The
    position counts over the file's entries as written, so every caller gets the same ids."""
    if isinstance(coco_val, CocoSet) or hasattr(coco_val, "dataset"):
        entries = coco_val.dataset["images"]
    elif isinstance(coco_val, dict):
        entries = coco_val["images"]
    else:
        entries = list(coco_val)
    held = entries[:held_out_count(len(entries), val_holdout)]
    ids = (as_int(e.get("id")) if isinstance(e, dict) else as_int(e) for e in held)
    return [i for i in ids if i is not None]


def train_image_ids(coco_train, coco_val, val_holdout=VAL_HOLDOUT, train_only=False):
    """(source, image id) of every image the HDF5 step may put into training."""
    out = [("train2014", i) for i in coco_train.image_ids]
    if not train_only:
        held = set(held_out_val_image_ids(coco_val, val_holdout))
        out += [("val2014", i) for i in coco_val.image_ids if i not in held]
    return out


# ----------------------------------------------------------------------------- main people

def select_main_people(anns):
    """Indices (into anns) of the main people of one image, in annotation order."""
    chosen = []  # (index, centre x, centre y, max(w, h) of that person)
    for i, ann in enumerate(anns):
        x, y, w, h = ann["bbox"]
        if (ann["iscrowd"] or ann["num_keypoints"] < MIN_KEYPOINTS or ann["area"] < MIN_AREA
                or w <= 0 or h <= 0):
            continue
        cx, cy = x + w / 2, y + h / 2
        if any(math.hypot(cx - px, cy - py) < MIN_CENTRE_DISTANCE * size
               for _, px, py, size in chosen):
            continue
        chosen.append((i, cx, cy, max(w, h)))
    return [c[0] for c in chosen]


class SampleMeta(NamedTuple):
    objpos: np.ndarray          # (2,) float32 bbox centre of the main person
    scale_provided: float       # main person's bbox height / 368
    joints: np.ndarray          # (P, 18, 3) float32, main person first


def person_joints(ann):
    """(18, 3) CMU joints of a cleaned annotation (zeros when it has no usable keypoints)."""
    if ann["keypoints"] is None:
        return np.zeros((NUM_PARTS, 3), np.float32)
    return coco_to_cmu(ann["keypoints"])


def image_samples(anns):
    """One SampleMeta per main person of an image (cleaned annotations, file order)."""
    labelled = [i for i, a in enumerate(anns) if not a["iscrowd"] and a["num_keypoints"] > 0]
    joints = {i: person_joints(anns[i]) for i in labelled}
    samples = []
    for m in select_main_people(anns):
        x, y, w, h = anns[m]["bbox"]
        order = [m] + [i for i in labelled if i != m]
        samples.append(SampleMeta(np.array([x + w / 2, y + h / 2], np.float32),
                                  float(h / BOX_SIZE), np.stack([joints[i] for i in order])))
    return samples
