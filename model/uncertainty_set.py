"""The uncertainty analysis of one evaluation set, on its COCO keypoint result records: the
people matched across the experts and measured (model.uncertainty's metrics), each scored
against the ground truth, and the quality of the disagreement in two layers: detection (does
it separate correct detections from false positives and misses: AUROC) and pose (does it rank
the error of predictions that exist: correlation, sparsification), plus risk-coverage.
Definitions: model.uncertainty's docstring. Reading and writing the files is model.runs' and
model.report.uncertainty's.
"""
from collections import defaultdict

import numpy as np
from scipy.optimize import linear_sum_assignment

from model import evaluation
from model.keypoints import (coco_oks, evaluated_gt, group_by_image, prediction_oks,
                             records_to_array)
from model.paths import annotation_file
from model.skeleton import NUM_LIMBS
from model.uncertainty import (ALL_PEOPLE_DEFINITION, DEFAULT_MATCH_OKS, DETECTION_DEFINITION,
                               DETECTION_OKS, GT_MATCH_OKS, MEASURES, MIN_POSE_PEOPLE,
                               MODEL_LABELS, POSE_DEFINITION, REJECT_FRACTIONS, ause,
                               correlation, detection_outcome, disagreement, gather_members,
                               judge_detection, judge_pose, kept_after_rejection,
                               match_people, pose_people, sparsification)

PER_PERSON = ("image_id", "person", "present", "predicted", "gt_id", "oks", "num_experts",
              "flagged", "translational", "rotational", "limbs_compared",
              "limb_translational", "limb_rotational")


def load_ground_truth(coco_root, data_type):
    """pycocotools COCO of the set's annotation file, or None when the set has none."""
    path = annotation_file(coco_root, data_type)
    return evaluation.load_annotations(path) if path.is_file() else None


def keypoint_ap(coco_gt, records, image_ids, ignore_gt_ids=()):
    """COCO keypoint AP (model.evaluation.keypoint_stats) of `records` on `image_ids`.

    Ground-truth people in `ignore_gt_ids` are ignored the way COCOeval ignores people without
    keypoints: neither missed nor matchable into a false positive."""
    if len(ignore_gt_ids):
        ignore = set(int(i) for i in ignore_gt_ids)
        coco_gt = evaluation.coco_from_dataset(dict(coco_gt.dataset, annotations=[
            dict(a, num_keypoints=0) if a["id"] in ignore else a
            for a in coco_gt.dataset["annotations"]]))
    return evaluation.keypoint_stats(coco_gt, records, image_ids)[0]["AP"]


def _finite(values):
    try:
        return bool(np.isfinite(np.asarray(values, np.float64)).all())
    except (TypeError, ValueError):
        return False


def finite_records(records):
    """(the records whose score and keypoints are all finite numbers, how many were not):
    NaN or infinite values must never reach the assignment (SciPy refuses them)."""
    kept = [r for r in records if _finite(r.get("keypoints", ())) and _finite(r.get("score", 0))]
    return kept, len(records) - len(kept)


def _assign(sim, threshold):
    """Hungarian assignment on a similarity matrix, keeping pairs >= threshold."""
    if sim.size == 0:
        return np.zeros(0, int), np.zeros(0, int)
    rows, cols = linear_sum_assignment(sim, maximize=True)
    keep = sim[rows, cols] >= threshold
    return rows[keep], cols[keep]


def _ensemble_match(members, present, ensemble, match_oks):
    """(persons, ensemble predictions) assigned on the mean OKS with the person's members."""
    n, n_exp = present.shape
    sim = np.zeros((n, len(ensemble)))
    for e in range(n_exp):
        has = present[:, e]
        if has.any() and len(ensemble):
            sim[has] += prediction_oks(members[has, e], ensemble)
    sim /= np.maximum(present.sum(1), 1)[:, None]
    return _assign(sim, match_oks)


def _ground_truth_oks(members, present, gts, ensemble, member_of_ens):
    """Each person's matched ground-truth id (-1 none) and the OKS of every model's prediction
    of it: (n,), (n, E + 1) with 0 for a model without one. ensemble: [] or [its people,
    (P, 17, 3)]; without one its column stays NaN."""
    n, n_exp = present.shape
    gt_id = np.full(n, -1)
    oks = np.full((n, n_exp + 1), np.nan)
    # OKS of every expert's member against every ground truth: (n, E, G)
    per = np.zeros((n, n_exp, len(gts)))
    for e in range(n_exp):
        if present[:, e].any() and gts:
            per[present[:, e], e] = coco_oks(members[present[:, e], e], gts)
    r, c = _assign(per.max(1) if n_exp else np.zeros((n, len(gts))), GT_MATCH_OKS)
    gt_id[r] = [gts[k]["id"] for k in c]
    oks[:, :n_exp] = 0
    oks[r, :n_exp] = per[r, :, c]
    for ens in ensemble:          # [] or [the ensemble's people]
        oks[:, n_exp] = 0
        for g, k in zip(r, c):
            if member_of_ens[g] >= 0:
                oks[g, n_exp] = coco_oks(ens[member_of_ens[g]][None], [gts[k]])[0, 0]
    return gt_id, oks, len(r)


def _add_owners(records, person_of, model, recs, owner):
    """Append one image's records of a model and the person each belongs to (-1 none)."""
    records[model].extend(recs)
    person_of[model].extend(owner.tolist())


def _stack(rows, n_exp):
    """The per-image pieces of every per-person array joined (empty arrays of the right
    shape for a set without people)."""
    empty = {"limb_translational": (0, NUM_LIMBS), "limb_rotational": (0, NUM_LIMBS),
             "oks": (0, n_exp + 1), "present": (0, n_exp), "predicted": (0, n_exp + 1)}
    return {k: np.concatenate(rows[k]) if rows[k] else np.zeros(empty.get(k, 0))
            for k in PER_PERSON}


def _usable_ground_truth(coco_gt, image_id, counts):
    """The evaluated ground-truth people of an image whose keypoints are all finite; the
    others are counted under counts["gt_people_non_finite"] (a key added only then, so clean
    sets keep their counts)."""
    gts = evaluated_gt(coco_gt.imgToAnns.get(image_id, []))
    usable = [g for g in gts if _finite(g.get("keypoints", ()))]
    if len(usable) < len(gts):
        dropped = len(gts) - len(usable)
        counts["gt_people_non_finite"] = counts.get("gt_people_non_finite", 0) + dropped
    return usable


def collect_people(image_ids, expert_records, ensemble_records=None, coco_gt=None,
                   match_oks=DEFAULT_MATCH_OKS):
    """Match, measure and (with ground truth) score every person of every image.

    Returns a dict: per-person arrays (image_id, person, num_experts, flagged, translational,
    rotational, limbs_compared, limb_translational, limb_rotational, gt_id (-1 none),
    oks (P, 4: the experts then the ensemble; NaN without ground truth or ensemble),
    predicted (P, 4: whether each model has a prediction of the person)),
    `records` and `person_of` per model (the records in order and the person each belongs to,
    -1 for an ensemble prediction matched to nobody) and `counts`."""
    n_exp = len(expert_records)
    has_ens = ensemble_records is not None
    sources = list(expert_records) + ([ensemble_records] if has_ens else [])
    by_model = [group_by_image(recs) for recs in sources]
    wanted = set(int(i) for i in image_ids)
    outside = sum(len(recs) for b in by_model for i, recs in b.items() if i not in wanted)
    rows, records, person_of = defaultdict(list), [[] for _ in sources], [[] for _ in sources]
    counts = dict(images=len(image_ids), images_without_people=0, gt_people=0,
                  gt_people_matched=0, ensemble_unmatched=0, records_outside_images=outside)
    next_person = 0
    for image_id in map(int, image_ids):
        recs = [b.get(image_id, []) for b in by_model]
        people = [records_to_array(r)[0] for r in recs]
        groups = match_people(people[:n_exp], match_oks)
        counts["images_without_people"] += int(len(groups) == 0)
        members, present = gather_members(people[:n_exp], groups)
        n = len(groups)
        ids = next_person + np.arange(n)
        for e in range(n_exp):
            where = np.full(len(recs[e]), -1)
            where[groups[present[:, e], e]] = ids[present[:, e]]
            _add_owners(records, person_of, e, recs[e], where)
        member_of_ens = np.full(n, -1)
        if has_ens:
            r, c = _ensemble_match(members, present, people[n_exp], match_oks)
            member_of_ens[r] = c
            where = np.full(len(people[n_exp]), -1)
            where[c] = ids[r]
            counts["ensemble_unmatched"] += int((where < 0).sum())
            _add_owners(records, person_of, n_exp, recs[n_exp], where)
        gt_id, oks = np.full(n, -1), np.full((n, n_exp + 1), np.nan)
        if coco_gt is not None:
            gts = _usable_ground_truth(coco_gt, image_id, counts)
            counts["gt_people"] += len(gts)
            gt_id, oks, matched = _ground_truth_oks(members, present, gts, people[n_exp:][:1],
                                                    member_of_ens)
            counts["gt_people_matched"] += matched
        d = disagreement(members, present)
        d.update(present=present, image_id=np.full(n, image_id), person=np.arange(n),
                 gt_id=gt_id, oks=oks,
                 predicted=np.concatenate([present, (member_of_ens >= 0)[:, None]], 1))
        for key in PER_PERSON:
            rows[key].append(d[key])
        next_person += n
    out = _stack(rows, n_exp)
    used = n_exp + has_ens
    out["records"] = records[:used]
    out["person_of"] = [np.asarray(p, int) for p in person_of[:used]]
    out["counts"] = counts
    return out


def _models(people):
    """(labels, error (P, M) = 1 - OKS, predicted (P, M)) of the models the analysis has."""
    n_models = len(people["records"])
    return (MODEL_LABELS[:n_models], 1 - people["oks"][:, :n_models],
            people["predicted"][:, :n_models])


def detection_layer(people):
    """Layer (a): per model, counts of correct detections, false positives and misses and
    the AUROC of each disagreement as a score for an error; the share of people found by
    fewer than two experts."""
    labels, _, predicted = _models(people)
    counts = people["counts"]
    n, flagged = len(people["image_id"]), int(people["flagged"].sum())
    out = {"definition": DETECTION_DEFINITION, "oks_threshold": DETECTION_OKS, "people": n,
           "found_by_fewer_than_two": flagged,
           "share_found_by_fewer_than_two": flagged / n if n else None,
           "gt_people_found_by_no_expert": counts["gt_people"] - counts["gt_people_matched"],
           "ensemble_predictions_unmatched": counts["ensemble_unmatched"], "models": {}}
    for i, m in enumerate(labels):
        outcome = detection_outcome(predicted[:, i], people["gt_id"], people["oks"][:, i])
        judged = {measure: judge_detection(people[measure], outcome) for measure in MEASURES}
        first = judged[MEASURES[0]]
        row = {k: first[k] for k in ("cases", "correct", "false_positives", "misses")}
        row["auroc"] = {measure: judged[measure]["auroc"] for measure in MEASURES}
        if "note" in first:
            row["note"] = first["note"]
        out["models"][m] = row
    return out


def pose_layer(people, min_people=MIN_POSE_PEOPLE):
    """Layer (b): correlation and AUSE over each model's pose-level people; returns (the
    numbers, {measure: {model: sparsification curves}} of the models with enough people)."""
    labels, error, predicted = _models(people)
    out = {"definition": POSE_DEFINITION, "min_people": min_people, "people": {},
           "correlation": {m: {} for m in MEASURES}, "ause": {m: {} for m in MEASURES}}
    curves = {m: {} for m in MEASURES}
    for i, label in enumerate(labels):
        sel = pose_people(people["num_experts"], predicted[:, i], people["gt_id"])
        out["people"][label] = int(sel.sum())
        for measure in MEASURES:
            judged, curve = judge_pose(people[measure][sel], error[sel, i], min_people)
            out["ause"][measure][label] = judged.pop("ause")
            out["correlation"][measure][label] = judged
            if curve is not None:
                curves[measure][label] = curve
    return out, curves


def all_people_layer(people):
    """The statistics over every matched person (error 1 where a model did not predict it),
    for comparison with the two layers only."""
    labels, error, _ = _models(people)
    out = {"definition": ALL_PEOPLE_DEFINITION, "people": len(people["image_id"]),
           "correlation": {}, "ause": {}}
    for measure in MEASURES:
        u = people[measure]
        out["correlation"][measure] = {m: correlation(u, error[:, i])
                                       for i, m in enumerate(labels)}
        out["ause"][measure] = {m: ause(*sparsification(u, error[:, i]))
                                for i, m in enumerate(labels)}
    return out


def risk_coverage(people, coco_gt, image_ids, fractions=REJECT_FRACTIONS):
    """AP after rejecting the most uncertain people (model.uncertainty's docstring)."""
    labels = MODEL_LABELS[:len(people["records"])]
    baseline = [keypoint_ap(coco_gt, recs, image_ids) for recs in people["records"]]
    n = len(people["translational"])
    rows = []
    for measure in MEASURES:
        for fraction in (0.0,) + tuple(fractions):
            keep = kept_after_rejection(people[measure], fraction)
            ignore = people["gt_id"][~keep]
            ignore = ignore[ignore >= 0]
            for i, m in enumerate(labels):
                owner = people["person_of"][i]
                kept = (owner >= 0) & keep[np.maximum(owner, 0)] if fraction > 0 else \
                    np.ones(len(owner), bool)
                recs = [r for r, k in zip(people["records"][i], kept) if k]
                if fraction == 0:
                    ap = ap_kept = baseline[i]
                else:
                    ap = keypoint_ap(coco_gt, recs, image_ids)
                    ap_kept = keypoint_ap(coco_gt, recs, image_ids, ignore)
                rows.append({
                    "measure": measure, "model": m, "rejected_fraction": fraction,
                    "people_kept": int(keep.sum()), "people": n,
                    "predictions_kept": int(kept.sum()), "predictions": len(kept),
                    "ap": ap, "ap_kept_people": ap_kept})
    return rows


def quality(people, coco_gt, image_ids, fractions=REJECT_FRACTIONS):
    """Both layers, the all-people comparison, the pose level's sparsification curves and
    risk-coverage of the people from collect_people (with ground truth)."""
    pose, curves = pose_layer(people)
    return {"detection": detection_layer(people), "pose": pose,
            "all_people": all_people_layer(people), "sparsification": curves,
            "risk_coverage": risk_coverage(people, coco_gt, image_ids, fractions)}
