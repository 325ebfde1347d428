"""COCO 2014 keypoints for training: annotations, masks, main people, the split, a compact HDF5.

Annotation files are read by `load_coco_annotations`, which checks every entry and keeps the
reasons for what it drops or repairs (a `collections.Counter`), so every script can print one
summary instead of a traceback.

Masks (REFERENCE section 4), one pair of 1-bit PNGs per image (OpenCV reads them as 0 / 255)
in <coco_root>/{train,val}mask2014:
* mask_all_%012d.png: 255 = a person (any non-crowd annotation) or a crowd region, 0 elsewhere.
* mask_miss_%012d.png: 0 = ignore in the loss, 255 = compute the loss. Ignored are people with
  num_keypoints == 0 and the parts of crowd regions that no annotated person covers. Several
  crowd regions are united (COCO has images with more than one).

Main people: in annotation order, a non-crowd person with num_keypoints >= 5, area >= 32 * 32
and a box whose centre is at least 0.3 * max(w, h) away from every main person chosen before,
where w, h are the box of THAT chosen person, recorded when it was chosen (the fork recorded the
box of whatever annotation its loop variable last pointed at). One training sample per main
person: its joints first, then every other non-crowd person with num_keypoints > 0.

Split: `held_out_val_image_ids` is the one rule. The first min(val_holdout, n // 2) images of
val2014's "images" list (annotation order; n = number of entries) are held out: the HDF5
validation file and the domain-shifted evaluation sets come from them, nothing else does.
On the real val2014 (40,504 images) this is the reference's first 2,645; on a small synthetic
set the half-cap keeps a usable part of val2014 for training.

HDF5 layout (one file per split, written to a temporary name and renamed when complete):
    images/bytes    uint8 (total,)      every image once, its original file bytes (JPEG)
    images/offsets  int64 (I + 1,)      image k is bytes[offsets[k]:offsets[k + 1]]
    images/id, images/height, images/width (I,), images/source (I,) uint8 (0 train2014, 1 val2014)
    masks/bytes, masks/offsets          mask_miss as PNG bytes; an empty range means all 255
    samples/image_index int32 (N,)      row of images/* of the sample
    samples/objpos float32 (N, 2), samples/scale_provided float32 (N,)
    samples/num_people int32 (N,), samples/joints float32 (N, P, 18, 3) zero-padded to P people
Root attributes: format, format_version, split, params (JSON), summary (JSON),
reference_layout_bytes (bytes of the reference layout, one raw 6 x H x W record per sample).
"""
import collections
import dataclasses
import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import time
from pathlib import Path
from typing import NamedTuple

import cv2
import h5py
import numpy as np
from tqdm import tqdm

from model import paths
from model.cli import UserError
from model.files import atomic_path, read_json, write_bytes, write_json
from model.skeleton import NUM_COCO, NUM_PARTS, PERSON_CATEGORY, coco_to_cmu

log = logging.getLogger(__name__)

VAL_HOLDOUT = 2645           # reference: first 2,645 val2014 images are the validation set
MIN_KEYPOINTS = 5
MIN_AREA = 32 * 32
MIN_CENTRE_DISTANCE = 0.3    # x max(w, h) of an already chosen main person
BOX_SIZE = 368               # scale_provided = bbox height / 368
SOURCES = ("train2014", "val2014")
FORMAT = "openpose-coco-compact"
FORMAT_VERSION = 1
# The annotations describe the stored pixel grid; OpenCV would otherwise rotate by EXIF.
IMREAD_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
JPEG_QUALITY = 95
_BYTES_CHUNK = 1 << 16       # HDF5 chunk of the byte arrays: a read touches few extra bytes


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


def _as_int(value):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value)


def _finite_numbers(value, length=None):
    if not isinstance(value, (list, tuple)) or (length is not None and len(value) != length):
        return None
    try:
        arr = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        return None
    if arr.ndim != 1 or not np.isfinite(arr).all():
        return None
    return arr


def _clean_annotation(ann, images, problems):
    """Checked copy of one annotation, or None when it cannot be used (reason counted)."""
    if not isinstance(ann, dict) or _as_int(ann.get("image_id")) not in images:
        problems["annotation of an unknown image"] += 1
        return None
    if ann.get("category_id", PERSON_CATEGORY["id"]) != PERSON_CATEGORY["id"]:
        problems["annotation of another category"] += 1
        return None
    image = images[_as_int(ann["image_id"])]
    bbox = _finite_numbers(ann.get("bbox"), 4)
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
        kp = _finite_numbers(ann.get("keypoints"), 3 * NUM_COCO)
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
    num_keypoints = _as_int(ann.get("num_keypoints"))
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
        fields = [_as_int(entry.get(k)) if isinstance(entry, dict) else None
                  for k in ("id", "width", "height")]
        if None in fields or fields[1] <= 0 or fields[2] <= 0:
            problems["image entry without a valid id, width or height"] += 1
            continue
        if fields[0] in images:
            problems["duplicate image id"] += 1
            continue
        images[fields[0]] = dict(entry, id=fields[0], width=fields[1], height=fields[2])
    anns = {image_id: [] for image_id in images}
    for ann in data["annotations"]:
        clean = _clean_annotation(ann, images, problems)
        if clean is not None:
            anns[clean["image_id"]].append(clean)
    if problems:
        log.warning("%s: %s", path.name, _format_counts(problems))
    return CocoSet(path, data, list(images.values()), anns, problems)


def _format_counts(counter):
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
    ids = (_as_int(e.get("id")) if isinstance(e, dict) else _as_int(e) for e in held)
    return [i for i in ids if i is not None]


def train_image_ids(coco_train, coco_val, val_holdout=VAL_HOLDOUT, train_only=False):
    """(source, image id) of every image the HDF5 step may put into training."""
    out = [("train2014", i) for i in coco_train.image_ids]
    if not train_only:
        held = set(held_out_val_image_ids(coco_val, val_holdout))
        out += [("val2014", i) for i in coco_val.image_ids if i not in held]
    return out


# ----------------------------------------------------------------------------- masks

def _segmentation_rle(seg, height, width):
    """One RLE of a COCO segmentation (polygons or RLE) for an image size, or None if unusable."""
    from pycocotools import mask as mask_utils
    try:
        if isinstance(seg, list):
            polys = [p for p in seg if _finite_numbers(p) is not None and len(p) >= 6
                     and len(p) % 2 == 0]
            if not polys:
                return None
            return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
        if isinstance(seg, dict) and "counts" in seg and "size" in seg:
            if [_as_int(v) for v in seg["size"]] != [height, width]:
                return None
            if isinstance(seg["counts"], list):
                return mask_utils.frPyObjects(seg, height, width)
            counts = seg["counts"]
            rle = {"size": [height, width],
                   "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
            mask_utils.area(rle)      # raises on a malformed counts string
            return rle
    except (TypeError, ValueError, KeyError, UnicodeError):
        return None
    return None


def _box_rle(bbox, height, width):
    from pycocotools import mask as mask_utils
    region = np.zeros((height, width), np.uint8, order="F")
    x, y, w, h = bbox
    x0, y0 = max(int(math.floor(x)), 0), max(int(math.floor(y)), 0)
    x1, y1 = min(int(math.ceil(x + w)), width), min(int(math.ceil(y + h)), height)
    region[y0:y1, x0:x1] = 1
    return mask_utils.encode(region)


def annotation_rle(ann, height, width):
    """(RLE of the annotation's region, True if its box stood in for a bad segmentation)."""
    rle = _segmentation_rle(ann.get("segmentation"), height, width)
    if rle is not None:
        return rle, False
    return _box_rle(ann["bbox"], height, width), True


def _union(rles, height, width):
    from pycocotools import mask as mask_utils
    if not rles:
        return np.zeros((height, width), bool, order="F")
    return mask_utils.decode(mask_utils.merge(rles, intersect=False)).astype(bool)


def make_masks(anns, height, width, notes=None):
    """(mask_miss, mask_all) uint8 (H, W) for one image's cleaned annotations (module doc).

    Regions are united as run-length encodings and decoded once per group."""
    groups = {"people": [], "unlabelled": [], "crowd": []}
    for ann in anns:
        rle, fallback = annotation_rle(ann, height, width)
        if fallback and notes is not None:
            notes["segmentation unusable: bbox used for the mask"] += 1
        if ann["iscrowd"]:
            groups["crowd"].append(rle)
        else:
            groups["people"].append(rle)
            if ann["num_keypoints"] == 0:
                groups["unlabelled"].append(rle)
    people, unlabelled, crowd = (_union(groups[k], height, width)
                                 for k in ("people", "unlabelled", "crowd"))
    keep = ~(unlabelled | (crowd & ~people))
    mask_miss = np.ascontiguousarray(keep, np.uint8) * np.uint8(255)
    mask_all = np.ascontiguousarray(people | crowd, np.uint8) * np.uint8(255)
    return mask_miss, mask_all


def mask_files(coco_root, source, image_id):
    """(mask_miss path, mask_all path) of an image of train2014 / val2014."""
    folder = paths.mask_dir(coco_root, source.replace("2014", ""))
    return (folder / f"mask_miss_{image_id:012d}.png", folder / f"mask_all_{image_id:012d}.png")


def encode_png(array, binary=False):
    """PNG bytes; binary masks (0/255) as 1-bit PNGs, which OpenCV reads back as 0/255."""
    ok, buf = cv2.imencode(".png", array, [cv2.IMWRITE_PNG_BILEVEL, 1] if binary else [])
    if not ok:
        raise RuntimeError("OpenCV could not encode a PNG")
    return buf.tobytes()


def _mask_job(job):
    image_id, height, width, anns, miss_path, all_path = job
    notes = collections.Counter()
    mask_miss, mask_all = make_masks(anns, height, width, notes)
    write_bytes(all_path, encode_png(mask_all, binary=True))
    write_bytes(miss_path, encode_png(mask_miss, binary=True))
    return notes


def _mask_fields(ann):
    return {k: ann[k] for k in ("iscrowd", "bbox", "num_keypoints", "segmentation")}


def _run(fn, jobs, workers, desc, ordered=False):
    """Results of fn over jobs, in a process pool when workers > 1, with a progress bar."""
    workers = max(1, min(int(workers or os.cpu_count() or 1), len(jobs) or 1))
    bar = dict(total=len(jobs), desc=desc, unit="img", mininterval=1.0)
    if workers == 1:
        yield from tqdm(map(fn, jobs), **bar)
        return
    # spawn: callers (tests, notebooks) may have TensorFlow threads that fork would copy.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        chunk = max(1, min(32, len(jobs) // (8 * workers)))
        mapper = pool.imap if ordered else pool.imap_unordered
        yield from tqdm(mapper(fn, jobs, chunksize=chunk), **bar)


def generate_masks(coco_root, sources=SOURCES, workers=None, overwrite=False):
    """Write the mask PNGs of every image of the given sources; existing pairs are kept
    unless overwrite.

    Returns {source: {"images", "written", "existing", "seconds", "notes"}}."""
    report = {}
    for source in sources:
        start = time.time()
        coco = load_coco_annotations(paths.annotation_file(coco_root, source))
        jobs, existing = [], 0
        for image in coco.images:
            miss, full = mask_files(coco_root, source, image["id"])
            if not overwrite and miss.is_file() and full.is_file():
                existing += 1
                continue
            anns = [_mask_fields(a) for a in coco.anns[image["id"]]]
            jobs.append((image["id"], image["height"], image["width"], anns, miss, full))
        log.info("masks %s: start, %d images (%d already done)", source, len(coco.images),
                 existing)
        if jobs:
            paths.mask_dir(coco_root, source.replace("2014", "")).mkdir(parents=True,
                                                                         exist_ok=True)
        notes = collections.Counter()
        try:
            for job_notes in _run(_mask_job, jobs, workers, f"masks {source}"):
                notes.update(job_notes)
        except OSError as e:   # disk full, permissions: finished masks stay, rerun continues
            raise UserError(f"cannot write masks into "
                            f"{paths.mask_dir(coco_root, source.replace('2014', ''))}: {e}"
                            ) from None
        seconds = time.time() - start
        log.info("masks %s: end, %d written, %d kept, %.1f s; notes: %s", source, len(jobs),
                 existing, seconds, _format_counts(notes))
        report[source] = {"images": len(coco.images), "written": len(jobs),
                          "existing": existing, "seconds": seconds, "notes": dict(notes)}
    return report


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


# ----------------------------------------------------------------------------- images

def inspect_image(data, width, height):
    """(problem or None, format, mode) of encoded image bytes against the annotated size.

    Truncated JPEGs are caught by decoding at 1/8 scale, which still reads every scan."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, mode, size = im.format, im.mode, im.size
            if fmt not in ("JPEG", "PNG"):
                return f"unsupported image format {fmt}", fmt, mode
            if size != (width, height):
                return (f"image size {size[0]}x{size[1]} differs from the annotation "
                        f"({width}x{height})", fmt, mode)
            if fmt == "JPEG":
                im.draft(mode, (max(1, width // 8), max(1, height // 8)))
            im.load()
    except Exception as e:  # PIL raises many types for bad data; all mean "unusable"
        return f"corrupt or truncated image ({type(e).__name__})", None, None
    # the reader decodes with OpenCV: make sure it can (a reduced decode parses every scan)
    if cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_GRAYSCALE_8) is None:
        return "image OpenCV cannot decode", fmt, mode
    return None, fmt, mode


def decode_image(data):
    """BGR uint8 (H, W, 3) from encoded bytes (grayscale becomes 3 channels); None if invalid."""
    return cv2.imdecode(np.frombuffer(data, np.uint8), IMREAD_FLAGS)


def read_image(path):
    """BGR uint8 image of a file, decoded like the HDF5 reader does; None if unreadable."""
    try:
        return decode_image(Path(path).read_bytes())
    except OSError:
        return None


# ----------------------------------------------------------------------------- HDF5 writing

@dataclasses.dataclass
class _ImageJob:
    image_id: int
    source: str
    image_path: Path
    mask_path: Path
    height: int
    width: int
    anns: list
    samples: list


def _note_image_format(fmt, mode, notes):
    if fmt == "PNG":
        notes["PNG data in the image file: stored as is"] += 1
    if mode in ("L", "LA", "1", "I;16", "I"):
        notes["grayscale image: 3 channels on read"] += 1


def _hdf5_job(job):
    """(image bytes, mask bytes, notes, problem) of one image, read and checked in a worker."""
    try:
        return _read_checked(job)
    except Exception as e:  # one odd image must not end a run of hours; it is reported
        return None, None, collections.Counter(), f"unexpected error ({type(e).__name__}: {e})"


def _read_checked(job):
    notes = collections.Counter()
    try:
        data = job.image_path.read_bytes()
    except FileNotFoundError:
        return None, None, notes, "missing image file"
    except OSError:
        return None, None, notes, "unreadable image file"
    problem, fmt, mode = inspect_image(data, job.width, job.height)
    if problem:
        return None, None, notes, problem
    _note_image_format(fmt, mode, notes)
    mask_bytes, mask = None, None
    try:
        mask_bytes = job.mask_path.read_bytes()
        mask = cv2.imdecode(np.frombuffer(mask_bytes, np.uint8), cv2.IMREAD_GRAYSCALE)
    except FileNotFoundError:
        notes["mask file missing: computed from the annotations"] += 1
    except OSError:
        notes["mask file unreadable: computed from the annotations"] += 1
        mask_bytes = None
    if mask is not None and mask.shape != (job.height, job.width):
        notes["mask file of the wrong size: computed from the annotations"] += 1
        mask = None
    elif mask is None and mask_bytes is not None:
        notes["mask file unreadable: computed from the annotations"] += 1
    if mask is None:
        mask = make_masks(job.anns, job.height, job.width, notes)[0]
        mask_bytes = encode_png(mask, binary=True)
    if (mask == 255).all():
        mask_bytes = b""
    return data, mask_bytes, notes, None


class _ByteArray:
    """An appendable 1-D uint8 HDF5 dataset with offsets, buffered to avoid tiny resizes."""

    def __init__(self, group):
        self.data = group.create_dataset("bytes", (0,), np.uint8, maxshape=(None,),
                                         chunks=(_BYTES_CHUNK,))
        self.group = group
        self.offsets = [0]
        self.buffer, self.buffered, self.written = [], 0, 0

    def append(self, blob):
        self.buffer.append(blob)
        self.buffered += len(blob)
        self.offsets.append(self.offsets[-1] + len(blob))
        if self.buffered >= 1 << 24:
            self.flush()

    def flush(self):
        if self.buffered:
            self.data.resize((self.written + self.buffered,))
            self.data[self.written:] = np.frombuffer(b"".join(self.buffer), np.uint8)
            self.written += self.buffered
        self.buffer, self.buffered = [], 0

    def close(self):
        self.flush()
        self.group.create_dataset("offsets", data=np.asarray(self.offsets, np.int64))


def plan_images(coco, source, image_ids, coco_root):
    """_ImageJob per image with at least one main person; (jobs, images without one)."""
    jobs, without = [], 0
    for image_id in image_ids:
        image = coco.image(image_id)
        anns = coco.anns[image_id]
        samples = image_samples(anns)
        if not samples:
            without += 1
            continue
        name = paths.image_file_name(source, image_id)
        jobs.append(_ImageJob(image_id, source, paths.image_dir(coco_root, source) / name,
                              mask_files(coco_root, source, image_id)[0], image["height"],
                              image["width"], [_mask_fields(a) for a in anns], samples))
    return jobs, without


def write_hdf5(path, jobs, workers=None, params=None, split=""):
    """Write the compact HDF5 of the planned images to `path` (atomically); return a report."""
    start = time.time()
    skipped, notes = collections.Counter(), collections.Counter()
    max_people = max((len(s.joints) for j in jobs for s in j.samples), default=1)
    image_rows = {"id": [], "height": [], "width": [], "source": []}
    sample_rows = {"image_index": [], "objpos": [], "scale_provided": [], "num_people": []}
    joints, reference_bytes = [], 0
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            images = _ByteArray(f.create_group("images"))
            masks = _ByteArray(f.create_group("masks"))
            results = _run(_hdf5_job, jobs, workers, f"hdf5 {split}".strip(), ordered=True)
            for job, (data, mask_bytes, job_notes, problem) in zip(jobs, results):
                notes.update(job_notes)
                if problem:
                    skipped[problem] += 1
                    log.warning("skipped %s image %d: %s", job.source, job.image_id, problem)
                    continue
                index = len(image_rows["id"])
                images.append(data)
                masks.append(mask_bytes)
                for key, value in (("id", job.image_id), ("height", job.height),
                                   ("width", job.width), ("source", SOURCES.index(job.source))):
                    image_rows[key].append(value)
                for s in job.samples:
                    sample_rows["image_index"].append(index)
                    sample_rows["objpos"].append(s.objpos)
                    sample_rows["scale_provided"].append(s.scale_provided)
                    sample_rows["num_people"].append(len(s.joints))
                    joints.append(s.joints)
                    # the reference pads images narrower than 64 px to 64 px
                    reference_bytes += 6 * job.height * max(job.width, 64)
            images.close()
            masks.close()
            for key, dtype in (("id", np.int64), ("height", np.int32), ("width", np.int32),
                               ("source", np.uint8)):
                f["images"].create_dataset(key, data=np.asarray(image_rows[key], dtype))
            f["images/source"].attrs["names"] = json.dumps(SOURCES)
            n = len(joints)
            g = f.create_group("samples")
            g.create_dataset("image_index", data=np.asarray(sample_rows["image_index"], np.int32))
            g.create_dataset("objpos", data=np.asarray(sample_rows["objpos"], np.float32)
                             .reshape(n, 2))
            g.create_dataset("scale_provided",
                             data=np.asarray(sample_rows["scale_provided"], np.float32))
            g.create_dataset("num_people", data=np.asarray(sample_rows["num_people"], np.int32))
            padded = g.create_dataset("joints", (n, max_people, NUM_PARTS, 3), np.float32,
                                      chunks=(min(n, 256), max_people, NUM_PARTS, 3) if n
                                      else None)
            for lo in range(0, n, 4096):
                block = np.zeros((min(4096, n - lo), max_people, NUM_PARTS, 3), np.float32)
                for k, j in enumerate(joints[lo:lo + 4096]):
                    block[k, :len(j)] = j
                padded[lo:lo + len(block)] = block
            summary = {"skipped": dict(skipped), "notes": dict(notes)}
            f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "split": split,
                            "params": json.dumps(params or {}, sort_keys=True),
                            "summary": json.dumps(summary, sort_keys=True),
                            "reference_layout_bytes": reference_bytes,
                            "num_images": len(image_rows["id"]), "num_samples": n})
    size = Path(path).stat().st_size
    report = {"path": str(path), "images": len(image_rows["id"]), "samples": len(joints),
              "skipped": dict(skipped), "notes": dict(notes), "bytes": size,
              "reference_layout_bytes": reference_bytes,
              "ratio": reference_bytes / size if size else float("nan"),
              "seconds": time.time() - start}
    return report


def stored_params(path):
    """The params a compact HDF5 was written with, or None if it is not one."""
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                return None
            return json.loads(f.attrs["params"])
    except (OSError, KeyError, ValueError):
        return None


def _file_stamp(path):
    st = Path(path).stat()
    return {"name": Path(path).name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def generate_hdf5(coco_root, out_dir, train_only=False, val_holdout=VAL_HOLDOUT, workers=None,
                  overwrite=False):
    """Write <out_dir>/{train,val}_dataset_2014.h5; a file written with the same inputs and
    parameters is kept unless overwrite. Returns {split: report}."""
    coco_root, out_dir = Path(coco_root), Path(out_dir)
    cocos = {s: load_coco_annotations(paths.annotation_file(coco_root, s)) for s in SOURCES}
    for source in SOURCES:
        if not paths.image_dir(coco_root, source).is_dir():
            raise UserError(f"image folder not found: {paths.image_dir(coco_root, source)} "
                            "(run dataset/step1_download_coco2014.sh or "
                            "dataset/make_synthetic_coco.py)")
    held = held_out_val_image_ids(cocos["val2014"], val_holdout)
    held_set = set(held)
    log.info("split: %d of %d val2014 images held out (val_holdout=%d, at most half); "
             "training on train2014%s", len(held), len(cocos["val2014"].dataset["images"]),
             val_holdout, "" if train_only else " + the rest of val2014")
    parts = {"train": [("train2014", cocos["train2014"].image_ids)],
             "val": [("val2014", [i for i in held if i in cocos["val2014"]._by_id])]}
    if not train_only:
        parts["train"].append(("val2014", [i for i in cocos["val2014"].image_ids
                                           if i not in held_set]))
    stamps = {s: _file_stamp(cocos[s].path) for s in SOURCES}
    reports = {}
    for split in ("train", "val"):
        out = paths.hdf5_file(out_dir, split)
        params = {"format_version": FORMAT_VERSION, "val_holdout": int(val_holdout),
                  "train_only": bool(train_only) if split == "train" else False,
                  "annotations": stamps, "coco_root": str(coco_root.resolve())}
        if out.is_file() and not overwrite and stored_params(out) == params:
            log.info("hdf5 %s: %s already complete with these inputs, kept", split, out)
            reports[split] = dict(summarize_hdf5(out), kept=True)
            continue
        jobs, without = [], 0
        for source, ids in parts[split]:
            j, w = plan_images(cocos[source], source, ids, coco_root)
            jobs += j
            without += w
        log.info("hdf5 %s: start, %d images with main people (%d samples), %d images without",
                 split, len(jobs), sum(len(j.samples) for j in jobs), without)
        try:
            report = write_hdf5(out, jobs, workers, params, split)
        except OSError as e:   # disk full, permissions: the temporary file is already gone
            raise UserError(f"cannot write {out}: {e}") from None
        report["images_without_main_person"] = without
        log.info("hdf5 %s: end, %d samples of %d images, %.1f MB (reference layout %.1f MB, "
                 "%.1fx smaller), %.1f s", split, report["samples"], report["images"],
                 report["bytes"] / 1e6, report["reference_layout_bytes"] / 1e6,
                 report["ratio"], report["seconds"])
        log.info("hdf5 %s: skipped %s; notes: %s", split, _format_counts(
            collections.Counter(report["skipped"])), _format_counts(
            collections.Counter(report["notes"])))
        reports[split] = report
    return reports


def summarize_hdf5(path):
    """Sizes and counts of a written compact HDF5 (for logs and benchmarks)."""
    with h5py.File(path, "r") as f:
        ref = int(f.attrs["reference_layout_bytes"])
        out = {"path": str(path), "images": int(f.attrs["num_images"]),
               "samples": int(f.attrs["num_samples"]), "reference_layout_bytes": ref}
        out.update(json.loads(f.attrs["summary"]))
    out["bytes"] = Path(path).stat().st_size
    out["ratio"] = ref / out["bytes"]
    return out


# ----------------------------------------------------------------------------- HDF5 reading

class Sample(NamedTuple):
    image: np.ndarray          # (H, W, 3) uint8 BGR
    mask_miss: np.ndarray      # (H, W) uint8, 255 = compute the loss, 0 = ignore
    joints: np.ndarray         # (P, 18, 3) float32 CMU order, x, y, COCO visibility; main first
    objpos: np.ndarray         # (2,) float32 main person's bbox centre
    scale_provided: float      # main person's bbox height / 368
    image_id: int


class Hdf5Samples:
    """Samples of a compact HDF5, one per main person.

    The small per-sample arrays are read once; the file itself is opened lazily in each
    process (an h5py handle must not cross a fork), so instances can be handed to workers."""

    def __init__(self, path):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"HDF5 file not found: {self.path} "
                            "(write it with training/generate_hdf5_coco2014.py)")
        try:
            with h5py.File(self.path, "r") as f:
                if f.attrs.get("format") != FORMAT:
                    raise UserError(f"{self.path} is not a compact COCO HDF5 "
                                    "(write it with training/generate_hdf5_coco2014.py)")
                self._image_offsets = f["images/offsets"][:]
                self._mask_offsets = f["masks/offsets"][:]
                self._image_ids = f["images/id"][:].astype(np.int64)
                self._heights = f["images/height"][:]
                self._widths = f["images/width"][:]
                self._image_index = f["samples/image_index"][:]
                self._objpos = f["samples/objpos"][:]
                self._scale = f["samples/scale_provided"][:]
                self._num_people = f["samples/num_people"][:]
                self.attrs = {k: (v.item() if hasattr(v, "item") else v)
                              for k, v in f.attrs.items()}
        except OSError as e:
            raise UserError(f"cannot read HDF5 file {self.path}: {e}") from None
        except KeyError as e:
            raise UserError(f"HDF5 file {self.path} lacks {e}: rewrite it") from None
        self.image_ids = self._image_ids[self._image_index]
        self._handle = None

    def _datasets(self):
        if self._handle is None or self._handle[0] != os.getpid():
            f = h5py.File(self.path, "r")
            self._handle = (os.getpid(), f, f["images/bytes"], f["masks/bytes"],
                            f["samples/joints"])
        return self._handle[2:]

    def __len__(self):
        return len(self._image_index)

    def __getitem__(self, i):
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"sample {i} out of range ({n} samples)")
        i = int(i) % n
        image_bytes, mask_bytes, joints = self._datasets()
        k = int(self._image_index[i])
        image = decode_image(image_bytes[self._image_offsets[k]:self._image_offsets[k + 1]])
        if image is None:
            raise OSError(f"{self.path}: image {self._image_ids[k]} does not decode")
        lo, hi = self._mask_offsets[k], self._mask_offsets[k + 1]
        if hi == lo:
            mask = np.full((self._heights[k], self._widths[k]), 255, np.uint8)
        else:
            mask = cv2.imdecode(mask_bytes[lo:hi], cv2.IMREAD_GRAYSCALE)
        return Sample(image, mask, joints[i, :self._num_people[i]], self._objpos[i].copy(),
                      float(self._scale[i]), int(self._image_ids[k]))

    def close(self):
        if self._handle is not None and self._handle[0] == os.getpid():
            self._handle[1].close()
        self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_handle"] = None
        return state

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def compact_ratio(path):
    """Bytes of the reference layout (one raw 6 x H x W record per sample) / bytes of the file."""
    return summarize_hdf5(path)["ratio"]


# ----------------------------------------------------------------------------- evaluation sets

def eval_pool_image_ids(coco_val, val_holdout=VAL_HOLDOUT):
    """Held-out val2014 images showing at least one person with labelled keypoints.

    Images without such a person add nothing to keypoint AP, so they are not drawn."""
    return [i for i in held_out_val_image_ids(coco_val, val_holdout)
            if i in coco_val.anns and any(not a["iscrowd"] and a["num_keypoints"] > 0
                                          for a in coco_val.anns[i])]


def sample_eval_images(coco_val, coco_root, num, seed, val_holdout=VAL_HOLDOUT):
    """Seeded draw of `num` readable images from the evaluation pool, in drawn order.

    Returns (image ids, pool size, skipped reasons)."""
    pool = eval_pool_image_ids(coco_val, val_holdout)
    order = np.random.default_rng(seed).permutation(len(pool))
    chosen, skipped = [], collections.Counter()
    for k in order:
        if len(chosen) == num:
            break
        image = coco_val.image(pool[k])
        path = paths.image_dir(coco_root, "val2014") / paths.image_file_name("val2014",
                                                                              image["id"])
        try:
            problem = inspect_image(path.read_bytes(), image["width"], image["height"])[0]
        except OSError:
            problem = "missing image file"
        if problem:
            skipped[problem] += 1
            log.warning("evaluation sample: skipped val2014 image %d: %s", image["id"], problem)
            continue
        chosen.append(pool[k])
    return chosen, len(pool), skipped


def _domain_image(data, effect):
    from model import effects
    image = decode_image(data)
    out = effects.apply_effect(image, effect)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return buf.tobytes(), out.shape[1], out.shape[0]


def _domain_json(coco_val, ids, effect, signature, sizes):
    from model import effects
    images, annotations = [], []
    for image_id in ids:
        entry = dict(coco_val.image(image_id))
        w, h = entry["width"], entry["height"]
        new_w, new_h = sizes.get(image_id, (w, h))
        entry.update(width=new_w, height=new_h)
        images.append(entry)
        for ann in coco_val.anns[image_id]:
            raw = ann["raw"]
            if (new_w, new_h) != (w, h):
                raw = effects.scale_annotation(raw, new_w / w, new_h / h, new_h, new_w)
            annotations.append(raw)
    dataset = coco_val.dataset
    return {"info": dict(dataset.get("info") or {}, description=
                         f"{paths.EVAL_BASE}{effect}: seeded sample of held-out val2014 images",
                         domain_set=dict(signature, effect=effect)),
            "licenses": dataset.get("licenses", []),
            "images": images, "annotations": annotations,
            "categories": dataset.get("categories") or [PERSON_CATEGORY]}


def make_domain_datasets(coco_root, num=1000, seed=0, val_holdout=VAL_HOLDOUT,
                         effects=paths.TEST_EFFECTS, overwrite=False):
    """Write images/val2014_random1k<effect>/ + annotations/person_keypoints_<dataType>.json.

    Drawn only from held-out val2014 images. A set whose annotation file records the same
    draw from the same val2014 annotations is kept unless overwrite; one recorded from other
    inputs is rewritten whole; the images of a set never completed are reused (resuming it).
    Returns {"image_ids", "pool", "seed", "sets": {dataType: status}}."""
    from model.effects import low_resolution_size
    coco_root = Path(coco_root)
    coco_val = load_coco_annotations(paths.annotation_file(coco_root, "val2014"))
    held = held_out_val_image_ids(coco_val, val_holdout)
    ids, pool, skipped = sample_eval_images(coco_val, coco_root, num, seed, val_holdout)
    log.info("evaluation sample: drawn with seed %d from the %d held-out val2014 images with "
             "people (first %d of val2014, never used for training by the HDF5 step)",
             seed, pool, len(held))
    if num > len(ids):
        log.warning("evaluation sample: --num %d exceeds the %d usable images of the pool: "
                    "taking all of them", num, len(ids))
    if skipped:
        log.warning("evaluation sample: skipped %s", _format_counts(skipped))
    digest = hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]
    # The source's annotation file stands for val2014 itself: a regenerated synthetic val2014
    # (new generator version) has new annotations, and then every image is rewritten.
    source = hashlib.sha256(paths.annotation_file(coco_root, "val2014").read_bytes())
    signature = {"seed": int(seed), "num": int(num), "val_holdout": int(val_holdout),
                 "images": len(ids), "image_ids_sha256": digest,
                 "val2014_annotations_sha256": source.hexdigest()[:16]}
    source_dir = paths.image_dir(coco_root, "val2014")
    status = {}
    for effect in effects:
        start = time.time()
        data_type = paths.EVAL_BASE + effect
        ann_path = paths.annotation_file(coco_root, data_type)
        # Images already there are reused only by a set that was never completed (resuming it);
        # a set completed from other inputs is rewritten whole.
        rewrite = overwrite
        if ann_path.is_file():
            try:
                recorded = json.loads(ann_path.read_text())["info"]["domain_set"]
            except (ValueError, KeyError, TypeError):
                recorded = None
            if recorded == dict(signature, effect=effect) and not overwrite:
                log.info("%s: already complete, kept", data_type)
                status[data_type] = "kept"
                continue
            rewrite = True
        out_dir = paths.image_dir(coco_root, data_type)
        out_dir.mkdir(parents=True, exist_ok=True)
        names = {paths.image_file_name(data_type, i): i for i in ids}
        stale = [p for p in out_dir.glob("COCO_val2014_*.jpg") if p.name not in names]
        for p in stale:
            p.unlink()
        sizes, written = {}, 0
        for name, image_id in tqdm(names.items(), desc=data_type, unit="img", mininterval=1.0):
            target = out_dir / name
            if effect == "_resolution":
                image = coco_val.image(image_id)
                sizes[image_id] = low_resolution_size(image["width"], image["height"])
            if target.is_file() and not rewrite:
                continue
            data = (source_dir / paths.image_file_name("val2014", image_id)).read_bytes()
            if effect:
                data = _domain_image(data, effect)[0]
            write_bytes(target, data)
            written += 1
        write_json(ann_path, _domain_json(coco_val, ids, effect, signature, sizes))
        log.info("%s: %d images (%d written, %d stale removed), %s, %.1f s", data_type,
                 len(ids), written, len(stale), ann_path, time.time() - start)
        status[data_type] = "written"
    return {"image_ids": ids, "pool": pool, "seed": int(seed), "sets": status,
            "skipped": dict(skipped)}
