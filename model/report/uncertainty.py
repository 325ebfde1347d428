"""The uncertainty step of one evaluation set (eval/util_ainu.py): read the models'
predictions from their run folders (model.runs), measure and judge the disagreement
(model.uncertainty_set) and write, beside the run folders:

  <X>-three-model-epoch100-open-pose-single-scale-<N>.csv               per limb + totals
  ...-persons.csv                                                       per person
  ...-quality.json                counts; detection and pose level; risk-coverage
  ...-detection.csv               per model: correct / false positives / misses, AUROC
  ...-pose.csv                    per measure and model: people, Pearson, Spearman, AUSE
  ...-sparsification.{csv,png}    the pose level's curves
  ...-risk_coverage.{csv,png}     AP after rejecting the most uncertain people
(all but the first three with ground truth only; the layers: model.uncertainty's docstring).

Every table is a pandas DataFrame of formatted cells (model.report.tables).
"""
import logging
import time

import numpy as np

from model import evaluation, plots
from model.domains import EFFECT_NAMES, ENSEMBLE, EXPERT_EFFECTS
from model.errors import UserError
from model.files import write_json
from model.paths import annotation_file
from model.report.tables import frame, write_csv
from model.runs import RunLayout
from model.skeleton import LIMB_NAMES
from model.uncertainty import (DEFAULT_MATCH_OKS, GT_MATCH_OKS, MEASURES, MODEL_LABELS,
                               detection_outcome, limb_summary)
from model.uncertainty_set import collect_people, finite_records, load_ground_truth, quality

log = logging.getLogger(__name__)

PERSON_HEADER = (["image_id", "person", "found_by", "num_experts", "flagged", "translational",
                  "rotational", "limbs_compared", "gt_id"]
                 + [f"oks_{m}" for m in MODEL_LABELS]
                 + [f"detection_{m}" for m in MODEL_LABELS])
LIMB_HEADER = ["limb", "translational", "rotational", "people_translational",
               "people_rotational"]
SPARSIFICATION_HEADER = ["measure", "model", "fraction_removed", "mean_error",
                         "oracle_mean_error"]
RISK_HEADER = ["measure", "model", "rejected_fraction", "people_kept", "predictions_kept",
               "ap", "ap_kept_people"]
DETECTION_HEADER = (["model", "people", "found_by_fewer_than_two", "cases", "correct",
                     "false_positives", "misses"] + [f"auroc_{m}" for m in MEASURES])
POSE_HEADER = ["measure", "model", "people", "pearson_r", "pearson_p", "spearman_r",
               "spearman_p", "ause", "note"]


def _fmt(x):
    return "" if x is None or (isinstance(x, float) and not np.isfinite(x)) else \
        (f"{x:.6f}" if isinstance(x, (float, np.floating)) else str(x))


def limb_table(people):
    """The seed's CSV: one row per limb, then the totals."""
    t_mean, t_count = limb_summary(people["limb_translational"])
    r_mean, r_count = limb_summary(people["limb_rotational"])
    rows = [[name, _fmt(float(t)), _fmt(float(r)), int(tc), int(rc)]
            for name, t, r, tc, rc in zip(LIMB_NAMES, t_mean, r_mean, t_count, r_count)]
    multi = ~people["flagged"].astype(bool)
    for label, sel in (("total (people seen by >= 2 experts)", multi),
                       ("total (all people, flagged ones at 1)", np.ones_like(multi))):
        n = int(sel.sum())
        rows.append([label] + [_fmt(float(people[m][sel].mean())) if n else "" for m in MEASURES]
                    + [n, n])
    return frame(rows, LIMB_HEADER)


def person_table(people):
    """One row per matched person: who found it, its disagreement, its ground truth, the OKS
    of each model's prediction of it and its detection-level case for each model (empty
    without ground truth)."""
    n_models = len(people["records"])
    gt_known = bool(np.isfinite(people["oks"][:, :n_models]).all())     # NaN: no ground truth
    outcome = [detection_outcome(people["predicted"][:, m], people["gt_id"],
                                 people["oks"][:, m]) if gt_known else None
               for m in range(n_models)]
    rows = []
    for k in range(len(people["image_id"])):
        gt = int(people["gt_id"][k])
        found_by = "+".join(m for m, p in zip(MODEL_LABELS, people["present"][k]) if p)
        rows.append([int(people["image_id"][k]), int(people["person"][k]), found_by,
                     int(people["num_experts"][k]), int(bool(people["flagged"][k])),
                     _fmt(float(people["translational"][k])),
                     _fmt(float(people["rotational"][k])), int(people["limbs_compared"][k]),
                     "" if gt < 0 else gt]
                    + [_fmt(float(people["oks"][k, m])) if m < n_models else ""
                       for m in range(len(MODEL_LABELS))]
                    + [outcome[m][k] if m < n_models and outcome[m] is not None else ""
                       for m in range(len(MODEL_LABELS))])
    return frame(rows, PERSON_HEADER)


def sparsification_table(curves_per_measure):
    rows = []
    for measure, curves in curves_per_measure.items():
        for model_label, (f, curve, oracle, _) in curves.items():
            rows += [[measure, model_label, _fmt(float(a)), _fmt(float(b)), _fmt(float(c))]
                     for a, b, c in zip(f, curve, oracle)]
    return frame(rows, SPARSIFICATION_HEADER)


def detection_table(detection):
    """Layer (a), one row per model."""
    return frame([[m, detection["people"], detection["found_by_fewer_than_two"], r["cases"],
                   r["correct"], r["false_positives"], r["misses"]]
                  + [_fmt(r["auroc"][measure]) for measure in MEASURES]
                  for m, r in detection["models"].items()], DETECTION_HEADER)


def pose_table(pose):
    """Layer (b), one row per measure and model; empty statistics where n/a."""
    rows = []
    for measure, per_model in pose["correlation"].items():
        for m, c in per_model.items():
            rows.append([measure, m, c["n"], _fmt(c["pearson_r"]), _fmt(c["pearson_p"]),
                         _fmt(c["spearman_r"]), _fmt(c["spearman_p"]),
                         _fmt(pose["ause"][measure][m]), c.get("note", "")])
    return frame(rows, POSE_HEADER)


def risk_table(risk_coverage):
    return frame([[r["measure"], r["model"], r["rejected_fraction"], r["people_kept"],
                   r["predictions_kept"], _fmt(r["ap"]), _fmt(r["ap_kept_people"])]
                  for r in risk_coverage], RISK_HEADER)


def risk_curves(risk_coverage):
    """{measure: {model: (coverages, AP on the people kept)}} for plots.plot_risk_coverage."""
    rc = {m: {} for m in MEASURES}
    for r in risk_coverage:
        cov, ap = rc[r["measure"]].setdefault(r["model"], ([], []))
        cov.append(1 - r["rejected_fraction"])
        ap.append(r["ap_kept_people"])
    return rc


def _drop_non_finite(experts, ensemble, ensemble_effect, notes):
    """The models' records without those holding NaN or infinite values; each model's count
    of dropped records becomes a note. Returns (experts, ensemble, records dropped)."""
    kept, total = [], 0
    for effect, recs in zip(EXPERT_EFFECTS + (ensemble_effect,), experts + [ensemble]):
        if recs is None:
            kept.append(None)
            continue
        good, dropped = finite_records(recs)
        if dropped:
            notes.append(f"{dropped} of {len(recs)} predictions of the {EFFECT_NAMES[effect]} "
                         f"model hold NaN or infinite values: skipped")
            log.warning("%s", notes[-1])
        kept.append(good)
        total += dropped
    return kept[:-1], kept[-1], total


def load_inputs(layout, data_type, coco_root, num_images, ensemble_effect, notes):
    """(experts' records, the ensemble's or None, ground truth or None), each checked."""
    experts = [layout.read_results(data_type, e, num_images) for e in EXPERT_EFFECTS]
    try:
        ensemble = layout.read_results(data_type, ensemble_effect, num_images)
    except UserError as e:
        ensemble = None
        notes.append(f"ensemble columns left empty: {e}")
        log.warning("%s", notes[-1])
    coco_gt = load_ground_truth(coco_root, data_type)
    if coco_gt is None:
        notes.append(f"no ground truth for {data_type} "
                     f"({annotation_file(coco_root, data_type)} missing): disagreement only, "
                     f"the error-based numbers (OKS, correlation, AUSE, risk-coverage) skipped")
        log.warning("%s", notes[-1])
    if coco_gt is not None:
        for effect, recs in zip(EXPERT_EFFECTS + (ensemble_effect,), experts + [ensemble]):
            if recs is not None:
                evaluation.check_records(recs, coco_gt, layout.results_file(
                    data_type, effect, num_images))
    return experts, ensemble, coco_gt


def write_quality(out, data_type, num_images, people, coco_gt, image_ids):
    """The ground-truth outputs: quality numbers (returned), the two layers' CSV,
    sparsification (pose level) and risk-coverage CSV and figures (their suffixes returned
    too)."""
    q = quality(people, coco_gt, image_ids)
    write_csv(out.uncertainty_file(data_type, num_images, "-detection.csv"),
              detection_table(q["detection"]))
    write_csv(out.uncertainty_file(data_type, num_images, "-pose.csv"), pose_table(q["pose"]))
    write_csv(out.uncertainty_file(data_type, num_images, "-sparsification.csv"),
              sparsification_table(q["sparsification"]))
    write_csv(out.uncertainty_file(data_type, num_images, "-risk_coverage.csv"),
              risk_table(q["risk_coverage"]))
    people_pose = "/".join(str(v) for v in q["pose"]["people"].values())
    plots.plot_sparsification(
        out.uncertainty_file(data_type, num_images, "-sparsification.png"),
        q["sparsification"], f"{data_type}, pose level ({people_pose} people of "
        f"{'/'.join(q['pose']['people'])})")
    plots.plot_risk_coverage(out.uncertainty_file(data_type, num_images, "-risk_coverage.png"),
                             risk_curves(q["risk_coverage"]),
                             f"{data_type} ({len(people['image_id'])} people)")
    return q, ["-detection.csv", "-pose.csv", "-sparsification.csv", "-sparsification.png",
               "-risk_coverage.csv", "-risk_coverage.png"]


def _means(people, selected):
    """Mean of each disagreement over the selected people (None without any)."""
    return {m: float(people[m][selected].mean()) if selected.any() else None
            for m in MEASURES}


def analyse(data_type, results_dir, coco_root, num_images=None, match_oks=DEFAULT_MATCH_OKS,
            ensemble_effect=ENSEMBLE, out_dir=None):
    """eval/util_ainu.py: every output of the uncertainty analysis of one set.

    Returns the summary dict that is also written as <stem>-quality.json."""
    start = time.time()
    layout = RunLayout(results_dir)
    if num_images is None:
        num_images = layout.find_num_images(data_type)
    out = RunLayout(results_dir if out_dir is None else out_dir)
    notes = []
    experts, ensemble, coco_gt = load_inputs(layout, data_type, coco_root, num_images,
                                             ensemble_effect, notes)
    experts, ensemble, non_finite = _drop_non_finite(experts, ensemble, ensemble_effect, notes)
    image_ids = layout.evaluated_image_ids(data_type, num_images, coco_gt,
                                           experts + ([ensemble] if ensemble else []))
    log.info("uncertainty of %s: %d images, %s predictions of %s", data_type, len(image_ids),
             "/".join(str(len(r)) for r in experts), "/".join(MODEL_LABELS[:3]))
    people = collect_people(image_ids, experts, ensemble, coco_gt, match_oks)
    counts = people["counts"]
    counts.update(people=len(people["image_id"]), flagged=int(people["flagged"].sum()))
    if non_finite:   # a key only then: clean sets keep their counts
        counts["predictions_non_finite"] = non_finite
    if counts.get("gt_people_non_finite"):
        notes.append(f"{counts['gt_people_non_finite']} ground-truth people hold NaN or "
                     f"infinite keypoints: skipped")
        log.warning("%s", notes[-1])
    if counts["records_outside_images"]:
        log.warning("%d predictions are of images outside the %d evaluated ones: ignored",
                    counts["records_outside_images"], len(image_ids))
    log.info("matched %d people (%d flagged: seen by fewer than 2 experts); %d images where "
             "no expert found anyone", counts["people"], counts["flagged"],
             counts["images_without_people"])

    write_csv(out.uncertainty_file(data_type, num_images, ".csv"), limb_table(people))
    write_csv(out.uncertainty_file(data_type, num_images, "-persons.csv"),
              person_table(people))
    summary = {"data_type": data_type, "num_images": num_images, "match_oks": match_oks,
               "gt_match_oks": GT_MATCH_OKS, "ensemble": EFFECT_NAMES[ensemble_effect]
               if ensemble is not None else None, "counts": counts, "notes": notes,
               "mean_all_people": _means(people, np.ones(len(people["flagged"]), bool)),
               "mean_found_by_at_least_two": _means(people, ~people["flagged"].astype(bool)),
               "randomness": "none: the analysis is deterministic (no seed)"}
    written = [".csv", "-persons.csv"]
    if coco_gt is not None:
        q, more = write_quality(out, data_type, num_images, people, coco_gt, image_ids)
        summary.update(detection=q["detection"], pose=q["pose"], all_people=q["all_people"],
                       risk_coverage=q["risk_coverage"])
        written += more
    stem = out.uncertainty_stem(data_type, num_images).name
    summary["files"] = [stem + s for s in written + ["-quality.json"]]
    summary["seconds"] = round(time.time() - start, 2)
    write_json(out.uncertainty_file(data_type, num_images, "-quality.json"), summary, indent=1)
    log.info("uncertainty of %s done in %.1f s: %s", data_type, summary["seconds"],
             ", ".join(summary["files"]))
    return summary
