"""The numbers the summary derives from the collected results, and the demo's acceptance
checks, computed from the same numbers:

  * the normal expert's AP on the normal test set >= 0.5;
  * the motion-blur expert's AP on the motion-blur set > the normal expert's there;
  * the domain classifier's validation accuracy >= 0.98 (validate.py's metrics.json; the
    best epoch's val_accuracy from best.json when validate.py has not run);
  * at the pose level (model.uncertainty: only people found by at least two experts that the
    judged model predicted and that match a ground-truth person), the translational
    disagreement's Spearman correlation with the error (1 - OKS) of the routed ensemble's
    prediction (the normal expert's when the analysis had no ensemble) > 0 with p < 0.01 on
    every test domain; n/a where a domain has fewer than 10 such people. Over all people the
    correlation would mostly say whether the experts found the same people (disagreement 1)
    where the model missed one (error 1). One measure and one model, fixed in advance:
    choosing the best of several after the fact would make the test meaningless.
"""
import numpy as np
import pandas as pd

from model import paths
from model.domains import (DARK, DOMAIN_LABELS, ENSEMBLE, EVAL_MODELS, LOW_RESOLUTION,
                           MOTION_BLUR, NORMAL, TEST_EFFECTS)

# The fork's published AP (docs/recipe.md section 7): test domain -> model -> AP. The fork had
# no fused ensemble.
FORK_AP = {
    NORMAL: {NORMAL: 0.509, DARK: 0.387, MOTION_BLUR: 0.094, ENSEMBLE: 0.509},
    DARK: {NORMAL: 0.467, DARK: 0.424, MOTION_BLUR: 0.101, ENSEMBLE: 0.424},
    MOTION_BLUR: {NORMAL: 0.044, DARK: 0.031, MOTION_BLUR: 0.282, ENSEMBLE: 0.282},
    LOW_RESOLUTION: {NORMAL: 0.335, DARK: 0.224, MOTION_BLUR: 0.053, ENSEMBLE: 0.335},
}
MIN_NORMAL_AP = 0.5
MIN_CLASSIFIER_ACCURACY = 0.98
MAX_SPEARMAN_P = 0.01
CHECK_MEASURE = "translational"
CHECK_MODELS = ("ensemble", "normal")      # whose error the disagreement is judged against
REJECT_FRACTION = 0.2
MEASURES = ("translational", "rotational")


def ap_table(results):
    """Our AP: rows TEST_EFFECTS, columns EVAL_MODELS, NaN where missing."""
    return pd.DataFrame(
        [[np.nan if (v := results.evaluation[paths.EVAL_BASE + t].metric(e, "all", "AP"))
          is None else v for e in EVAL_MODELS] for t in TEST_EFFECTS],
        index=list(TEST_EFFECTS), columns=list(EVAL_MODELS), dtype=np.float64)


def fork_table():
    """The fork's published AP in the layout of ap_table."""
    return pd.DataFrame([[FORK_AP[t].get(e, np.nan) for e in EVAL_MODELS] for t in TEST_EFFECTS],
                        index=list(TEST_EFFECTS), columns=list(EVAL_MODELS), dtype=np.float64)


def uncertainty_row(quality, measure, model):
    """Numbers of one measure judged against one model's error, from a quality.json: the pose
    level (correlation and AUSE over its people), the detection level (AUROC, correct
    detections, false positives, misses) and risk-coverage (AP after rejecting the most
    uncertain REJECT_FRACTION of all people). None without a pose level for the model."""
    pose = (quality or {}).get("pose") or {}
    corr = pose.get("correlation", {}).get(measure, {}).get(model)
    if corr is None:
        return None
    detection = quality.get("detection") or {}
    cases = detection.get("models", {}).get(model, {})
    risk = {round(r["rejected_fraction"], 6): r for r in quality.get("risk_coverage", [])
            if r["measure"] == measure and r["model"] == model}
    base, rejected = risk.get(0.0), risk.get(round(REJECT_FRACTION, 6))
    return {"model": model, "people": corr.get("n"), "min_people": pose.get("min_people"),
            "spearman_r": corr.get("spearman_r"), "spearman_p": corr.get("spearman_p"),
            "pearson_r": corr.get("pearson_r"), "pearson_p": corr.get("pearson_p"),
            "note": corr.get("note"), "ause": pose.get("ause", {}).get(measure, {}).get(model),
            "auroc": cases.get("auroc", {}).get(measure), "correct": cases.get("correct"),
            "false_positives": cases.get("false_positives"), "misses": cases.get("misses"),
            "ap": base["ap"] if base else None,
            "ap_rejected_kept_people": rejected["ap_kept_people"] if rejected else None,
            "ap_rejected": rejected["ap"] if rejected else None}


def judged_model(quality):
    """The model whose error the checks judge the disagreement against (CHECK_MODELS order),
    among those the pose level of the quality.json covers."""
    pose = (quality or {}).get("pose") or {}
    available = pose.get("correlation", {}).get(CHECK_MEASURE, {})
    return next((m for m in CHECK_MODELS if m in available), None)


def classifier_accuracy(classifier):
    """(accuracy, where it comes from) or (None, None) of a collect.ClassifierRun."""
    if classifier.validation:
        v = classifier.validation
        return float(v["accuracy"]), f"validate.py, {v.get('samples', '?')} samples"
    best = classifier.best
    if best and best.get("val_accuracy") is not None:
        return float(best["val_accuracy"]), f"best.json, epoch {best.get('epoch')}"
    return None, None


def _check(name, ok, measured):
    return {"name": name, "status": "n/a" if ok is None else ("PASS" if ok else "FAIL"),
            "measured": measured}


def _ap_checks(results):
    normal, blur = paths.EVAL_DATATYPES[0], paths.EVAL_BASE + MOTION_BLUR
    ap = results.evaluation[normal].metric(NORMAL, "all", "AP")
    yield _check(f"normal expert AP >= {MIN_NORMAL_AP} on the normal test set",
                 None if ap is None else ap >= MIN_NORMAL_AP,
                 f"AP {ap:.3f}" if ap is not None else
                 f"no evaluation of the normal expert on {normal}")
    ap_blur = results.evaluation[blur].metric(MOTION_BLUR, "all", "AP")
    ap_norm = results.evaluation[blur].metric(NORMAL, "all", "AP")
    both = ap_blur is not None and ap_norm is not None
    yield _check("motion-blur expert beats the normal expert on the motion-blur set",
                 ap_blur > ap_norm if both else None,
                 f"AP {ap_blur:.3f} vs {ap_norm:.3f}" if both else
                 f"evaluation of the {'motion-blur' if ap_blur is None else 'normal'} expert on "
                 f"{blur} missing")


def _domain_verdict(quality):
    """(True / False / None for n/a, what was measured, the judged model) of one domain."""
    model = judged_model(quality)
    row = uncertainty_row(quality, CHECK_MEASURE, model) if model else None
    if row is None:
        return None, "n/a (no analysis with ground truth)", None
    if row["spearman_r"] is None:
        if row["people"] is not None and row["people"] < (row["min_people"] or 0):
            return None, f"n/a ({row['people']} people, fewer than {row['min_people']})", model
        return False, f"undefined ({row['note']})", model
    return (row["spearman_r"] > 0 and row["spearman_p"] < MAX_SPEARMAN_P,
            f"rho {row['spearman_r']:.3f}, p {row['spearman_p']:.2g}, {row['people']} people",
            model)


def _uncertainty_check(results):
    """The pose-level check on every test domain: PASS when each passes, FAIL when any
    fails, n/a otherwise (a domain without the analysis or with too few people)."""
    name = (f"{CHECK_MEASURE} disagreement vs pose error (people found by >= 2 experts, "
            f"predicted and matched): Spearman > 0 with p < {MAX_SPEARMAN_P} on every test "
            f"domain")
    verdicts = [(DOMAIN_LABELS[t],) + _domain_verdict(
        results.uncertainty.get(paths.EVAL_BASE + t)) for t in TEST_EFFECTS]
    models = {m for *_, m in verdicts if m}
    parts = [f"{label}: {text}" + (f" (error of {m})" if m and len(models) > 1 else "")
             for label, _, text, m in verdicts]
    measured = (f"error of {min(models)}; " if len(models) == 1 else "") + "; ".join(parts)
    oks = [ok for _, ok, _, _ in verdicts]
    status = False if False in oks else (True if all(oks) else None)
    return _check(name, status, measured)


def compute_checks(results):
    """The acceptance conditions (module docstring): [{name, status, measured}], status
    PASS, FAIL or n/a (an input is missing)."""
    checks = list(_ap_checks(results))
    acc, source = classifier_accuracy(results.classifier)
    checks.append(_check(f"domain classifier validation accuracy >= "
                         f"{MIN_CLASSIFIER_ACCURACY:.0%}",
                         None if acc is None else acc >= MIN_CLASSIFIER_ACCURACY,
                         f"{acc:.2%} ({source})" if acc is not None else
                         "no validation metrics or best.json"))
    checks.append(_uncertainty_check(results))
    return checks
