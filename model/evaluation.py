"""COCO keypoint evaluation: pycocotools wrappers, difficult-case subsets and PCK.

Definitions (docs/recipe.md section 8 lists the fork's wrong ones; tests pin these):

* Evaluated images: exactly the images that were predicted (COCOeval params.imgIds), never
  the whole annotation file.
* No predictions: pycocotools cannot load an empty result list (COCO.loadRes indexes the
  first record), so every AP/AR is reported as 0 with that reason.
* Difficult joints: hips, knees and ankles, COCO indices 11..16 (left_hip .. right_ankle).
  Their AP is COCOeval's with OKS computed over those six joints only: ground-truth and
  predicted keypoint lists are cut to the six joints, params.kpt_oks_sigmas to their six
  constants, and num_keypoints recounted, so people without a labelled difficult joint are
  ignored as COCOeval ignores people without keypoints. Area ranges keep the people's areas.
* Crowded images: an image with an iscrowd region, or with two non-crowd people whose boxes
  overlap with IoU > 0.3.
* User subsets: a CSV with the columns deformation, rare_novel_poses and crowded_background,
  each listing image ids (cells may be empty; columns may differ in length).
* PCK@0.5: a labelled ground-truth keypoint is correct when the prediction matched to its
  person has that keypoint within 0.5 x sqrt(area) of it, area being the person's annotated
  (segmentation) area. We normalise by the person's scale, the s of COCO's OKS, rather than
  by a head size such as the ear-to-ear distance: ears are labelled for only part of COCO's
  people and their distance shrinks to nothing in profile, whereas the scale is defined for
  every person. A predicted keypoint counts as found under model.keypoints.found_mask (score
  > 0 and not the (0, 0) placeholder), the rule every metric of the project uses.
  Predictions are matched to people by the same criterion: highest score
  first, each prediction takes the unmatched person with whom it has the most correct
  keypoints of all 17 (at least one; ties go to the higher OKS; also for the joint subsets,
  which then count only their joints), so a roughly right pose is matched
  even where its OKS is low. People without a match count as misses. The denominator counts
  every labelled ground-truth keypoint exactly once (the fork added one per person as well).
"""
import contextlib
import copy
import csv
import io
import logging
from pathlib import Path

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from model import files
from model.errors import UserError
from model.keypoints import found_mask, oks_matrix
from model.skeleton import COCO_KEYPOINTS, COCO_SIGMAS, NUM_COCO

log = logging.getLogger(__name__)

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
DIFFICULT_JOINTS = tuple(range(11, 17))
assert [COCO_KEYPOINTS[i] for i in DIFFICULT_JOINTS] == [
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]
CROWD_IOU = 0.3
PCK_ALPHA = 0.5
USER_SUBSETS = ("deformation", "rare_novel_poses", "crowded_background")
PCK_NAME = f"PCK@{PCK_ALPHA}"

NO_PREDICTIONS = ("no predictions on the evaluated images: pycocotools cannot evaluate an "
                  "empty result list, so AP and AR are reported as 0")


# ------------------------------------------------------------------------------ loading

def coco_from_dataset(dataset):
    """A pycocotools COCO built from an annotation dict, without its prints."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_annotations(path, hint=""):
    """COCO of an annotation file; UserError when missing or not a keypoint annotation file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"annotation file not found: {path}{hint}")
    data = files.read_json(path, "annotation file")
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations")):
        raise UserError(f"{path}: not a COCO annotation file (needs images and annotations)")
    data.setdefault("categories", [{"id": 1, "name": "person"}])
    return coco_from_dataset(data)


def check_records(records, coco_gt, source):
    """UserError unless `records` are keypoint results for images of `coco_gt`."""
    if not isinstance(records, list):
        raise UserError(f"{source}: expected a list of COCO keypoint results")
    for i, r in enumerate(records):
        if (not isinstance(r, dict) or "image_id" not in r or "score" not in r
                or len(r.get("keypoints", ())) != 3 * NUM_COCO):
            raise UserError(f"{source}: record {i} is not a COCO keypoint result "
                            f"(image_id, score and {3 * NUM_COCO} keypoint values)")
    unknown = sorted({int(r["image_id"]) for r in records} - set(coco_gt.imgs))
    if unknown:
        raise UserError(f"{source}: {len(unknown)} image id(s) are not in the annotations "
                        f"(first: {unknown[0]}); predictions of another set?")


def first_images(coco_gt, num_images):
    """The first `num_images` image dicts of the annotation file, in its order."""
    return list(coco_gt.dataset["images"][:num_images])


# ------------------------------------------------------------------------------ COCOeval

def _zeros():
    return {name: 0.0 for name in STAT_NAMES}


def restrict_joints(dataset, records, joints):
    """(annotation dict, records) with every keypoint list cut to `joints` (COCO indices)."""
    joints = list(joints)
    cols = np.array([[3 * j, 3 * j + 1, 3 * j + 2] for j in joints]).ravel()
    data = dict(dataset)
    anns = []
    for ann in dataset["annotations"]:
        ann = copy.copy(ann)
        if "keypoints" in ann:
            kp = np.asarray(ann["keypoints"], np.float64)[cols]
            ann["keypoints"] = kp.tolist()
            ann["num_keypoints"] = int(np.count_nonzero(kp[2::3] > 0))
        anns.append(ann)
    data["annotations"] = anns
    cut = [dict(r, keypoints=np.asarray(r["keypoints"], np.float64)[cols].tolist())
           for r in records]
    return data, cut


def keypoint_stats(coco_gt, records, image_ids, joints=None):
    """(stats {AP, AP50, ..., ARl}, note) of COCOeval on exactly `image_ids`.

    joints: COCO keypoint indices to compute OKS over (module docstring); None = all 17.
    note is "" or the reason the numbers are 0."""
    image_ids = sorted({int(i) for i in image_ids})
    if not image_ids:
        return _zeros(), "no images to evaluate"
    wanted = set(image_ids)
    records = [r for r in records if int(r["image_id"]) in wanted]
    if not records:
        return _zeros(), NO_PREDICTIONS
    sigmas = COCO_SIGMAS
    gt = coco_gt
    if joints is not None:
        data, records = restrict_joints(coco_gt.dataset, records, joints)
        gt = coco_from_dataset(data)
        sigmas = COCO_SIGMAS[list(joints)]
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(records))
        ev = COCOeval(gt, dt, "keypoints")
        ev.params.imgIds = image_ids
        ev.params.kpt_oks_sigmas = np.asarray(sigmas, np.float64)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # COCOeval marks "no ground truth in this range" with -1; report those as 0 as well.
    stats = [max(float(v), 0.0) for v in ev.stats]
    return dict(zip(STAT_NAMES, stats)), ""


# ------------------------------------------------------------------------------ subsets

def _iou_matrix(boxes):
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    x0, y0 = b[:, 0], b[:, 1]
    x1, y1 = x0 + b[:, 2], y0 + b[:, 3]
    iw = np.clip(np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None]), 0, None)
    ih = np.clip(np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None]), 0, None)
    inter = iw * ih
    area = b[:, 2] * b[:, 3]
    union = area[:, None] + area[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def crowded_image_ids(coco_gt, image_ids, iou_threshold=CROWD_IOU):
    """Images with an iscrowd region or two non-crowd people with box IoU > iou_threshold."""
    out = []
    for image_id in image_ids:
        anns = coco_gt.imgToAnns.get(int(image_id), [])
        if any(a.get("iscrowd", 0) for a in anns):
            out.append(int(image_id))
            continue
        boxes = [a["bbox"] for a in anns if "bbox" in a]
        if len(boxes) >= 2:
            iou = _iou_matrix(boxes)
            np.fill_diagonal(iou, 0.0)
            if (iou > iou_threshold).any():
                out.append(int(image_id))
    return out


def read_subset_csv(path):
    """{column: set of image ids} of a CSV with the columns of USER_SUBSETS."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"difficult-case CSV not found: {path}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in USER_SUBSETS if c not in columns]
        if missing:
            raise UserError(f"{path}: missing column(s) {', '.join(missing)} "
                            f"(expected {', '.join(USER_SUBSETS)})")
        subsets = {c: set() for c in USER_SUBSETS}
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): v for k, v in row.items() if k is not None}
            for c in USER_SUBSETS:
                cell = (row.get(c) or "").strip()
                if not cell:
                    continue
                try:
                    subsets[c].add(int(cell))
                except ValueError:
                    raise UserError(f"{path}, line {line}, column {c}: {cell!r} is not an "
                                    f"image id") from None
    return subsets


# ------------------------------------------------------------------------------ PCK

def _keypoints(items):
    return np.array([np.asarray(x["keypoints"], np.float64).reshape(NUM_COCO, 3)
                     for x in items]).reshape(-1, NUM_COCO, 3)


def correct_keypoints(dt_kp, gt_kp, gt_area, alpha=PCK_ALPHA):
    """(D, G, K) bool: keypoint k of person g is labelled, found by prediction d and within
    alpha * sqrt(area_g) of it (found: model.keypoints.found_mask)."""
    found = found_mask(dt_kp)
    dist = np.hypot(dt_kp[:, None, :, 0] - gt_kp[None, :, :, 0],
                    dt_kp[:, None, :, 1] - gt_kp[None, :, :, 1])
    limit = alpha * np.sqrt(np.asarray(gt_area, np.float64))[None, :, None]
    return found[:, None, :] & (gt_kp[None, :, :, 2] > 0) & (dist <= limit)


def match_people(dt_kp, dt_score, gt_kp, gt_area, alpha=PCK_ALPHA):
    """gt -> dt index (or -1), the PCK matching of the module docstring."""
    match = np.full(len(gt_kp), -1)
    if len(dt_kp) == 0 or len(gt_kp) == 0:
        return match
    hits = correct_keypoints(dt_kp, gt_kp, gt_area, alpha).sum(-1)
    oks = oks_matrix(dt_kp, gt_kp, gt_area)
    for d in np.argsort(-np.asarray(dt_score), kind="stable"):
        free = (match < 0) & (hits[d] > 0)
        if free.any():
            order = np.lexsort((-oks[d], -hits[d]))     # most hits, then highest OKS
            match[next(g for g in order if free[g])] = d
    return match


def pck(coco_gt, records, image_ids, joints=None, alpha=PCK_ALPHA):
    """{"correct", "total", "pck"} over the labelled keypoints (of `joints`, COCO indices;
    default all) of the non-crowd people of `image_ids` (module docstring)."""
    joints = np.arange(NUM_COCO) if joints is None else np.asarray(joints)
    by_image = {}
    for r in records:
        by_image.setdefault(int(r["image_id"]), []).append(r)
    correct = total = 0
    for image_id in image_ids:
        people = [a for a in coco_gt.imgToAnns.get(int(image_id), [])
                  if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0]
        if not people:
            continue
        gt = _keypoints(people)
        area = np.array([float(a.get("area", 0.0)) for a in people])
        dets = by_image.get(int(image_id), [])
        dt = _keypoints(dets)
        match = match_people(dt, [r["score"] for r in dets], gt, area, alpha)
        total += int((gt[:, joints, 2] > 0).sum())
        matched = np.nonzero(match >= 0)[0]
        if len(matched):
            ok = correct_keypoints(dt[match[matched]], gt[matched], area[matched], alpha)
            correct += int(ok[np.arange(len(matched)), np.arange(len(matched))][:, joints].sum())
    return {"correct": correct, "total": total, "pck": correct / total if total else 0.0}


# ------------------------------------------------------------------------------ breakdown

def breakdown(coco_gt, records, image_ids, subsets_csv=None):
    """Rows (subset, metric, value): overall COCO stats and PCK, then AP and PCK@0.5 of the
    difficult joints, the crowded images and the user's subsets (module docstring)."""
    image_ids = [int(i) for i in image_ids]
    rows = []
    stats, note = keypoint_stats(coco_gt, records, image_ids)
    if note:
        log.warning("all: %s", note)
    rows += [("all", name, stats[name]) for name in STAT_NAMES]
    evaluated = set(image_ids)
    rows += [("all", PCK_NAME, pck(coco_gt, records, image_ids)["pck"]),
             ("all", "num_images", len(image_ids)),
             ("all", "num_predictions", sum(int(r["image_id"]) in evaluated for r in records))]

    def subset(name, ids, joints=None):
        ap, note = keypoint_stats(coco_gt, records, ids, joints)
        if note and ids:
            log.info("%s: %s", name, note)
        p = pck(coco_gt, records, ids, joints)
        return [(name, "num_images", len(ids)), (name, "AP", ap["AP"]),
                (name, PCK_NAME, p["pck"]), (name, "num_keypoints", p["total"])]

    rows += subset("difficult_joints", image_ids, DIFFICULT_JOINTS)
    rows += subset("crowded", crowded_image_ids(coco_gt, image_ids))
    if subsets_csv is not None:
        for name, ids in read_subset_csv(subsets_csv).items():
            outside = ids - evaluated
            if outside:
                log.warning("%s: %d image id(s) of %s are not among the %d evaluated images "
                            "and are left out", name, len(outside), subsets_csv, len(evaluated))
            rows += subset(name, sorted(ids & evaluated))
    return rows


def format_summary(rows):
    """Human-readable lines of the breakdown rows."""
    table = {}
    for s, m, v in rows:
        table.setdefault(s, {})[m] = v
    lines = ["  ".join(f"{n} {table['all'][n]:.3f}" for n in STAT_NAMES)]
    for s, metrics in table.items():
        parts = [f"{m} {v:.3f}" if isinstance(v, float) else f"{m} {v}"
                 for m, v in metrics.items() if s != "all" or m not in STAT_NAMES]
        lines.append(f"{s}: " + ", ".join(parts))
    return lines


def default_num_images(num_available, limit=1000):
    """The seed's default: every image of the set, at most 1000."""
    return min(num_available, limit)
