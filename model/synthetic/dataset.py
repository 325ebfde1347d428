"""Writing the synthetic mini-COCO in the COCO 2014 layout, and its statistics.

    <coco_root>/images/{train2014,val2014}/COCO_<split>_%012d.jpg
    <coco_root>/annotations/person_keypoints_<split>.json     (written last, atomically)

The annotation file records the generator version, the seed and the count in
info.synthetic: a rerun with the same values keeps a complete set as it is, and a file
without that marker (real COCO) is never overwritten.
"""
import logging
import time
from collections import Counter
from pathlib import Path

import numpy as np

from model import paths, skeleton
from model.errors import UserError
from model.files import ensure_writable_dir, read_json, write_bytes, write_json
from model.pool import map_jobs
from model.synthetic.scene import MAX_IMAGES, SPLITS, encode_jpeg, render_image

log = logging.getLogger(__name__)

# Raised whenever a change alters any pixel or annotation: finished sets are then redrawn.
GENERATOR_VERSION = 3
DEFAULT_NUM_TRAIN = 400
DEFAULT_NUM_VAL = 150


def split_parameters(split, num_images, seed):
    """What a finished annotation file records; a rerun with the same values is skipped."""
    return {"generator_version": GENERATOR_VERSION, "split": split,
            "num_images": int(num_images), "seed": int(seed)}


def check_arguments(num_images, seed, what="num_images"):
    if not isinstance(num_images, (int, np.integer)) or num_images < 0:
        raise UserError(f"{what} must be a non-negative integer, got {num_images}")
    if num_images > MAX_IMAGES:
        raise UserError(f"{what} must be at most {MAX_IMAGES}, got {num_images}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed must be a non-negative integer, got {seed}")


def _make_image(job):
    seed, split, index, out_dir = job
    image, record, anns = render_image(seed, split, index)
    write_bytes(Path(out_dir) / record["file_name"], encode_jpeg(image))
    return record, anns


def _existing(ann_path):
    """The synthetic annotation file at ann_path, None if absent; UserError if it is not ours."""
    if not ann_path.exists():
        return None
    data = read_json(ann_path, "annotation file")
    if not isinstance(data, dict) or "synthetic" not in (data.get("info") or {}):
        raise UserError(f"{ann_path} exists and is not a synthetic annotation file "
                        "(no info.synthetic); refusing to overwrite it: use another --coco_root")
    return data


def generate_split(coco_root, split, num_images, seed=0, workers=1, force=False, progress=True):
    """Write one split (images, then the annotation file last) and return its COCO dict.

    A complete set with the same parameters is kept as it is (unless force). Images of an
    older synthetic set that the new one does not have are removed once the new file exists."""
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    check_arguments(num_images, seed, f"number of {split} images")
    coco_root = Path(coco_root)
    ann_path = paths.annotation_file(coco_root, split)
    img_dir = paths.image_dir(coco_root, split)
    params = split_parameters(split, num_images, seed)
    old = _existing(ann_path)
    if old is not None and not force and old["info"]["synthetic"] == params and all(
            (img_dir / im["file_name"]).is_file() for im in old["images"]):
        log.info("%s: complete synthetic set with the same parameters (%d images, seed %d): kept",
                 split, num_images, seed)
        return old
    old_files = {im["file_name"] for im in old["images"]} if old else set()
    if old is not None:
        ann_path.unlink()          # a run killed from here on leaves no file that looks complete
    ensure_writable_dir(img_dir)
    start = time.time()
    log.info("%s: drawing %d images (seed %d, %d worker%s)", split, num_images, seed, workers,
             "s" if workers != 1 else "")
    jobs = [(seed, split, i, str(img_dir)) for i in range(num_images)]
    # below 8 images a pool costs more to start than it saves
    results = list(map_jobs(_make_image, jobs, workers, split, chunksize=4, min_jobs=8,
                            progress=progress))
    dataset = {
        "info": {"description": "Synthetic mini-COCO person keypoints (model.synthetic)",
                 "version": f"synthetic-{GENERATOR_VERSION}", "year": 2014,
                 "contributor": "model.synthetic", "date_created": "generated",
                 "synthetic": params},
        "licenses": [{"id": 1, "name": "synthetic images, no restrictions", "url": ""}],
        "images": [record for record, _ in results],
        "annotations": [ann for _, anns in results for ann in anns],
        "categories": [skeleton.PERSON_CATEGORY],
    }
    write_json(ann_path, dataset)
    stale = old_files - {im["file_name"] for im in dataset["images"]}
    for name in sorted(stale):
        (img_dir / name).unlink(missing_ok=True)
    log.info("%s: %d images, %d annotations written in %.1f s%s", split, num_images,
             len(dataset["annotations"]), time.time() - start,
             f" ({len(stale)} stale images removed)" if stale else "")
    return dataset


def generate_dataset(coco_root, num_train=DEFAULT_NUM_TRAIN, num_val=DEFAULT_NUM_VAL, seed=0,
                     workers=1, force=False, progress=True):
    """Both splits; returns {split: COCO dict}."""
    check_arguments(num_train, seed, "num_train")
    check_arguments(num_val, seed, "num_val")
    return {split: generate_split(coco_root, split, n, seed, workers, force, progress)
            for split, n in (("train2014", num_train), ("val2014", num_val))}


def dataset_statistics(dataset):
    """Counts of one COCO dict (a split): what the CLI prints."""
    images, anns = dataset["images"], dataset["annotations"]
    people = [a for a in anns if not a["iscrowd"]]
    per_image = Counter(a["image_id"] for a in people)
    counts = [per_image.get(im["id"], 0) for im in images]
    vis = np.array([a["keypoints"][2::3] for a in people], np.int64).reshape(-1)
    with_anns = {a["image_id"] for a in anns}
    widths = [im["width"] for im in images] or [0]
    heights = [im["height"] for im in images] or [0]
    return {
        "images": len(images), "people": len(people),
        "people_per_image": np.bincount(counts, minlength=7).tolist() if counts else [],
        "labelled_keypoints": int((vis > 0).sum()), "visible_keypoints": int((vis == 2).sum()),
        "occluded_keypoints": int((vis == 1).sum()),
        "people_without_keypoints": sum(1 for a in people if a["num_keypoints"] == 0),
        "crowd_regions": sum(1 for a in anns if a["iscrowd"]),
        "images_without_people": sum(1 for im in images if im["id"] not in with_anns),
        "width_range": [min(widths), max(widths)], "height_range": [min(heights), max(heights)],
    }


def format_statistics(split, stats):
    hist = " ".join(f"{k}:{n}" for k, n in enumerate(stats["people_per_image"]))
    return "\n".join([
        f"{split}: {stats['images']} images, {stats['people']} people "
        f"({stats['people_without_keypoints']} with num_keypoints=0), "
        f"{stats['crowd_regions']} crowd regions, "
        f"{stats['images_without_people']} images without people",
        f"  people per image: {hist}",
        f"  labelled keypoints: {stats['labelled_keypoints']} "
        f"(visible {stats['visible_keypoints']}, occluded {stats['occluded_keypoints']})",
        f"  image size: width {stats['width_range'][0]}-{stats['width_range'][1]}, "
        f"height {stats['height_range'][0]}-{stats['height_range'][1]} px",
    ])
