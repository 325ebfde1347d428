"""mask_miss and mask_all of every COCO image (docs/recipe.md section 4).

One pair of 1-bit PNGs per image (OpenCV reads them as 0 / 255) in <coco_root>/{train,val}mask2014:
* mask_all_%012d.png: 255 = a person (any non-crowd annotation) or a crowd region, 0 elsewhere.
* mask_miss_%012d.png: 0 = ignore in the loss, 255 = compute the loss. Ignored are people with
  num_keypoints == 0 and the parts of crowd regions that no annotated person covers. Several
  crowd regions are united (COCO has images with more than one).
A segmentation that cannot be used (malformed polygons, an RLE of another size) is replaced
by its bounding box, and counted.
"""
import collections
import logging
import math
import time

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from model import paths
from model.coco import SOURCES, as_int, finite_numbers, format_counts, load_coco_annotations
from model.errors import UserError
from model.files import ensure_writable_dir, write_bytes
from model.images import png_size
from model.pool import map_jobs

log = logging.getLogger(__name__)

def _segmentation_rle(seg, height, width):
    """One RLE of a COCO segmentation (polygons or RLE) for an image size, or None if unusable."""
    try:
        if isinstance(seg, list):
            polys = [p for p in seg if finite_numbers(p) is not None and len(p) >= 6
                     and len(p) % 2 == 0]
            if not polys:
                return None
            return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
        if isinstance(seg, dict) and "counts" in seg and "size" in seg:
            if [as_int(v) for v in seg["size"]] != [height, width]:
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


def finished_pair_problem(miss, full, width, height):
    """None when both mask files of an image are complete PNGs of its size (the cheap check
    that lets a rerun trust them), else why the pair must be written again."""
    sizes = [png_size(p) if p.is_file() else "missing" for p in (miss, full)]
    if sizes == ["missing", "missing"]:
        return "not written yet"
    if "missing" in sizes:
        return "one file of the pair missing"
    if None in sizes:
        return "truncated or not a PNG"
    if any(size != (width, height) for size in sizes):
        return "of another size than the image"
    return None


def mask_fields(ann):
    """What make_masks reads of a cleaned annotation: all a worker process is sent."""
    return {k: ann[k] for k in ("iscrowd", "bbox", "num_keypoints", "segmentation")}


def generate_masks(coco_root, sources=SOURCES, workers=None, overwrite=False):
    """Write the mask PNGs of every image of the given sources; existing pairs are kept
    unless overwrite.

    Returns {source: {"images", "written", "existing", "seconds", "notes"}}."""
    report = {}
    for source in sources:
        start = time.time()
        coco = load_coco_annotations(paths.annotation_file(coco_root, source))
        jobs, existing, redone = [], 0, collections.Counter()
        for image in coco.images:
            miss, full = mask_files(coco_root, source, image["id"])
            if not overwrite:
                problem = finished_pair_problem(miss, full, image["width"], image["height"])
                if problem is None:
                    existing += 1
                    continue
                if problem != "not written yet":
                    redone[problem] += 1
            anns = [mask_fields(a) for a in coco.anns[image["id"]]]
            jobs.append((image["id"], image["height"], image["width"], anns, miss, full))
        log.info("masks %s: start, %d images (%d already done)", source, len(coco.images),
                 existing)
        if redone:
            log.warning("masks %s: %d existing pairs redone: %s", source, sum(redone.values()),
                        format_counts(redone))
        if jobs:
            ensure_writable_dir(paths.mask_dir(coco_root, source.replace("2014", "")))
        notes = collections.Counter()
        try:
            # the notes are only counted, so they may arrive in any order
            for job_notes in map_jobs(_mask_job, jobs, workers, f"masks {source}",
                                      ordered=False):
                notes.update(job_notes)
        except OSError as e:   # disk full, permissions: finished masks stay, rerun continues
            raise UserError(f"cannot write masks into "
                            f"{paths.mask_dir(coco_root, source.replace('2014', ''))}: {e}"
                            ) from None
        seconds = time.time() - start
        log.info("masks %s: end, %d written, %d kept, %.1f s; notes: %s", source, len(jobs),
                 existing, seconds, format_counts(notes))
        report[source] = {"images": len(coco.images), "written": len(jobs),
                          "existing": existing, "redone": dict(redone), "seconds": seconds,
                          "notes": dict(notes)}
    return report
