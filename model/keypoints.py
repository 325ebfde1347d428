"""Rules on predicted keypoints that every metric shares: which keypoint counts as found, and
OKS (COCO's object keypoint similarity).

Found keypoint
    A predicted keypoint counts as found when its third value (score or visibility) is > 0
    and it is not the (0, 0) placeholder that result writers use for missing parts. Our
    writer (model.decode.people_to_coco) writes (x, y, 1) for a found part and (0, 0, 0) for
    a missing one, so for our own results either condition alone gives the same answer;
    requiring both also reads foreign files right that write a score for every part and
    park the missing ones at (0, 0).

OKS
    COCO's per-keypoint kernel exp(-d^2 / (2 s^2 k^2)) with k = 2 * COCO_SIGMAS and s^2 an
    area (pycocotools adds machine epsilon to it). Against ground truth (`oks_matrix`) it is
    averaged over the person's labelled keypoints, exactly as COCOeval.computeOks; between two
    predictions (`prediction_oks`) s^2 is the area of the union of their keypoint boxes and
    the kernel is summed over the keypoints both found and divided by the count of the
    sparser prediction, so a partial detection still matches the full one (model.uncertainty).
"""
from collections import defaultdict

import numpy as np

from model.skeleton import COCO_SIGMAS, NUM_COCO


def found_mask(keypoints):
    """(..., 17, 3) -> (..., 17) bool: score > 0 and not the (0, 0) placeholder."""
    kp = np.asarray(keypoints, np.float64)
    return (kp[..., 2] > 0) & ~((kp[..., 0] == 0) & (kp[..., 1] == 0))


def keypoint_box(kp, found):
    """Keypoint box (x0, y0, x1, y1) of the found keypoints over the last axis (inf if none)."""
    x, y = kp[..., 0], kp[..., 1]
    return (np.where(found, x, np.inf).min(-1), np.where(found, y, np.inf).min(-1),
            np.where(found, x, -np.inf).max(-1), np.where(found, y, -np.inf).max(-1))


def box_area(x0, y0, x1, y1):
    return np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)


def oks_kernel(a, b, area, sigmas=COCO_SIGMAS):
    """exp(-d^2 / var / (area + eps) / 2) of every pair: a (Na, K, >=2), b (Nb, K, >=2),
    area broadcastable to (Na, Nb) -> (Na, Nb, K)."""
    var = (2.0 * np.asarray(sigmas)) ** 2
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)
    e = d2 / var / (np.asarray(area)[..., None] + np.spacing(1)) / 2.0
    return np.exp(-e)


def oks_matrix(dt_kp, gt_kp, gt_area, sigmas=COCO_SIGMAS):
    """(D, G) COCO OKS of predictions against people with labelled keypoints (as
    COCOeval.computeOks for people with at least one labelled keypoint)."""
    kernel = oks_kernel(dt_kp, gt_kp, np.asarray(gt_area)[None, :], sigmas)
    labelled = gt_kp[None, :, :, 2] > 0
    count = labelled.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (kernel * labelled).sum(-1) / count, 0.0)


def prediction_oks(a, b):
    """OKS between two sets of predictions: (Na, 17, 3), (Nb, 17, 3) -> (Na, Nb) (module
    docstring: scale = union of the two keypoint boxes, divided by the sparser's count)."""
    a = np.asarray(a, np.float64).reshape(-1, NUM_COCO, 3)
    b = np.asarray(b, np.float64).reshape(-1, NUM_COCO, 3)
    fa, fb = found_mask(a), found_mask(b)
    ea, eb = keypoint_box(a, fa), keypoint_box(b, fb)
    area = box_area(np.minimum(ea[0][:, None], eb[0][None]),
                    np.minimum(ea[1][:, None], eb[1][None]),
                    np.maximum(ea[2][:, None], eb[2][None]),
                    np.maximum(ea[3][:, None], eb[3][None]))
    kernel = oks_kernel(a, b, area)
    common = fa[:, None] & fb[None]
    denom = np.minimum(fa.sum(1)[:, None], fb.sum(1)[None])
    total = np.where(common, kernel, 0.0).sum(-1)
    return np.where(denom > 0, total / np.maximum(denom, 1), 0.0)


def coco_oks(dt, gts):
    """COCOeval's OKS between predictions (Nd, 17, 3) and ground-truth annotations with
    labelled keypoints -> (Nd, Ng)."""
    dt = np.asarray(dt, np.float64).reshape(-1, NUM_COCO, 3)
    if len(gts) == 0 or len(dt) == 0:
        return np.zeros((len(dt), len(gts)))
    g = np.array([gt["keypoints"] for gt in gts], np.float64).reshape(-1, NUM_COCO, 3)
    return oks_matrix(dt, g, [float(gt["area"]) for gt in gts])


# ------------------------------------------------------------------ COCO result records

def records_to_array(records):
    """COCO result records -> (P, 17, 3) float64 keypoints and (P,) scores."""
    if not records:
        return np.zeros((0, NUM_COCO, 3)), np.zeros(0)
    kps = np.array([r["keypoints"] for r in records], np.float64).reshape(-1, NUM_COCO, 3)
    return kps, np.array([float(r.get("score", 0.0)) for r in records])


def group_by_image(records):
    """COCO result records -> {image_id: [records]} (order kept)."""
    out = defaultdict(list)
    for r in records:
        out[int(r["image_id"])].append(r)
    return dict(out)


def evaluated_gt(gt_anns):
    """The ground-truth people COCOeval scores keypoints against (not crowd, >= 1 keypoint)."""
    return [g for g in gt_anns if not g.get("iscrowd", 0) and g.get("num_keypoints", 1) > 0]
