"""The domain-shifted evaluation sets val2014_random1k{,_dark,_motion_blur,_resolution}.

A seeded uniform draw from the held-out val2014 images (model.coco: never training images),
with and without people, as the fork drew uniformly from val2014 (docs/recipe.md sections 7,
8 and 11): COCOeval counts every detection on a person-free image as a false positive, so
only a draw that keeps those images gives an AP like the fork's. people_only=True draws from
the held-out images with at least one labelled person instead. Each set is
<coco_root>/images/<dataType>/ (original file names) plus
annotations/person_keypoints_<dataType>.json: the drawn images in drawn order and their
annotations, with the draw and its composition in "info" (domain_set, composition);
_resolution halves the images and scales keypoints, boxes, areas and segmentations
(model.effects).
"""
import collections
import hashlib
import json
import logging
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from model import paths
from model.coco import VAL_HOLDOUT, format_counts, held_out_val_image_ids, load_coco_annotations
from model.domains import LOW_RESOLUTION, NORMAL, TEST_EFFECTS
from model.effects import apply_effect, low_resolution_size, scale_annotation
from model.files import check_writable_dir, ensure_writable_dir, write_bytes, write_json
from model.images import decode_image, inspect_image
from model.skeleton import PERSON_CATEGORY

log = logging.getLogger(__name__)

JPEG_QUALITY = 95


def has_labelled_person(anns):
    """Whether an image's annotations hold a person COCOeval scores (non-crowd, with at least
    one labelled keypoint); on an image without one every detection is a false positive."""
    return any(not a.get("iscrowd") and a.get("num_keypoints", 0) > 0 for a in anns)


def eval_pool_image_ids(coco_val, val_holdout=VAL_HOLDOUT, people_only=False):
    """The images the evaluation sets are drawn from, in annotation order: every held-out
    val2014 image, or (people_only) those with a labelled person. Entries the annotation
    checks refused (no valid size, a repeated id) are left out."""
    held = dict.fromkeys(i for i in held_out_val_image_ids(coco_val, val_holdout)
                         if i in coco_val.anns)
    return [i for i in held if not people_only or has_labelled_person(coco_val.anns[i])]


def sample_eval_images(coco_val, coco_root, num, seed, val_holdout=VAL_HOLDOUT,
                       people_only=False):
    """Seeded uniform draw of `num` readable images from the evaluation pool, in drawn order.

    Returns (image ids, pool size, skipped reasons)."""
    pool = eval_pool_image_ids(coco_val, val_holdout, people_only)
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
    image = decode_image(data)
    out = apply_effect(image, effect)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return buf.tobytes(), out.shape[1], out.shape[0]


def composition(coco_val, ids, pool, signature):
    """What the annotation file's info records of how the set was composed."""
    without = sum(not has_labelled_person(coco_val.anns.get(i, [])) for i in ids)
    return {"pool": "held-out val2014 images" + (" with a labelled person"
                                                 if signature["people_only"] else ""),
            "pool_images": int(pool), "people_only": bool(signature["people_only"]),
            "seed": signature["seed"], "images": len(ids),
            "images_without_people": int(without)}


def _domain_json(coco_val, ids, effect, signature, sizes, composed):
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
                raw = scale_annotation(raw, new_w / w, new_h / h, new_h, new_w)
            annotations.append(raw)
    dataset = coco_val.dataset
    return {"info": dict(dataset.get("info") or {}, description=
                         f"{paths.EVAL_BASE}{effect}: seeded sample of held-out val2014 images",
                         domain_set=dict(signature, effect=effect), composition=composed),
            "licenses": dataset.get("licenses", []),
            "images": images, "annotations": annotations,
            "categories": dataset.get("categories") or [PERSON_CATEGORY]}


def _draw_signature(coco_root, ids, num, seed, val_holdout, people_only):
    """What a finished set records of its draw; a set recording the same one is kept."""
    digest = hashlib.sha256(json.dumps(ids).encode()).hexdigest()[:16]
    # The source's annotation file stands for val2014 itself: a regenerated synthetic val2014
    # (new generator version) has new annotations, and then every image is rewritten.
    source = hashlib.sha256(paths.annotation_file(coco_root, "val2014").read_bytes())
    return {"seed": int(seed), "num": int(num), "val_holdout": int(val_holdout),
            "people_only": bool(people_only), "images": len(ids), "image_ids_sha256": digest,
            "val2014_annotations_sha256": source.hexdigest()[:16],
            # low-resolution keypoints at (x + 0.5) s - 0.5 (model.effects.scale_annotation);
            # a set scaled the older way (x s) records no such field and is rewritten
            "keypoint_scaling": "pixel_centres"}


def _recorded_signature(ann_path):
    """The draw an existing set's annotation file records, or None."""
    try:
        return json.loads(ann_path.read_text())["info"]["domain_set"]
    except (ValueError, KeyError, TypeError):
        return None


def _write_domain_set(coco_root, coco_val, ids, effect, signature, composed, rewrite):
    """Images, then the annotation file of one set; images already there are kept unless
    rewrite (resuming a set never completed)."""
    start = time.time()
    data_type = paths.EVAL_BASE + effect
    source_dir = paths.image_dir(coco_root, "val2014")
    out_dir = paths.image_dir(coco_root, data_type)
    ensure_writable_dir(out_dir)
    names = {paths.image_file_name(data_type, i): i for i in ids}
    stale = [p for p in out_dir.glob("COCO_val2014_*.jpg") if p.name not in names]
    for p in stale:
        p.unlink()
    sizes, written = {}, 0
    for name, image_id in tqdm(names.items(), desc=data_type, unit="img", mininterval=1.0):
        target = out_dir / name
        if effect == LOW_RESOLUTION:
            image = coco_val.image(image_id)
            sizes[image_id] = low_resolution_size(image["width"], image["height"])
        if target.is_file() and not rewrite:
            continue
        data = (source_dir / paths.image_file_name("val2014", image_id)).read_bytes()
        if effect != NORMAL:
            data = _domain_image(data, effect)[0]
        write_bytes(target, data)
        written += 1
    ann_path = paths.annotation_file(coco_root, data_type)
    write_json(ann_path, _domain_json(coco_val, ids, effect, signature, sizes, composed))
    log.info("%s: %d images (%d written, %d stale removed), %s, %.1f s", data_type,
             len(ids), written, len(stale), ann_path, time.time() - start)


def make_domain_datasets(coco_root, num=1000, seed=0, val_holdout=VAL_HOLDOUT,
                         effects=TEST_EFFECTS, overwrite=False, people_only=False):
    """Write images/val2014_random1k<effect>/ + annotations/person_keypoints_<dataType>.json.

    Drawn uniformly from the held-out val2014 images, with and without people (people_only:
    only those with a labelled person). A set whose annotation file records the same draw
    from the same val2014 annotations is kept unless overwrite; one recorded from other
    inputs is rewritten whole; the images of a set never completed are reused (resuming it).
    Returns {"image_ids", "pool", "seed", "people_only", "without_people",
    "sets": {dataType: status}, "skipped"}."""
    coco_root = Path(coco_root)
    coco_val = load_coco_annotations(paths.annotation_file(coco_root, "val2014"))
    for effect in effects:   # every output checked before any work: nothing is half-written
        check_writable_dir(paths.image_dir(coco_root, paths.EVAL_BASE + effect))
        check_writable_dir(paths.annotation_file(coco_root, paths.EVAL_BASE + effect).parent)
    held = held_out_val_image_ids(coco_val, val_holdout)
    ids, pool, skipped = sample_eval_images(coco_val, coco_root, num, seed, val_holdout,
                                            people_only)
    log.info("evaluation sample: drawn with seed %d from %d held-out val2014 images%s "
             "(first %d of val2014, never used for training by the HDF5 step)", seed, pool,
             " with people" if people_only else ", with and without people", len(held))
    if num > len(ids):
        log.warning("evaluation sample: --num %d exceeds the %d usable images of the pool: "
                    "taking all of them", num, len(ids))
    if skipped:
        log.warning("evaluation sample: skipped %s", format_counts(skipped))
    signature = _draw_signature(coco_root, ids, num, seed, val_holdout, people_only)
    composed = composition(coco_val, ids, pool, signature)
    log.info("evaluation sample: %d of %d images without a labelled person",
             composed["images_without_people"], len(ids))
    status = {}
    for effect in effects:
        data_type = paths.EVAL_BASE + effect
        ann_path = paths.annotation_file(coco_root, data_type)
        # Images already there are reused only by a set that was never completed (resuming
        # it); a set completed from other inputs (another draw, pool or val2014) is rewritten
        # whole.
        rewrite = overwrite or ann_path.is_file()
        if (ann_path.is_file() and not overwrite
                and _recorded_signature(ann_path) == dict(signature, effect=effect)):
            log.info("%s: already complete, kept", data_type)
            status[data_type] = "kept"
            continue
        _write_domain_set(coco_root, coco_val, ids, effect, signature, composed, rewrite)
        status[data_type] = "written"
    return {"image_ids": ids, "pool": pool, "seed": int(seed), "people_only": bool(people_only),
            "without_people": composed["images_without_people"], "sets": status,
            "skipped": dict(skipped)}
