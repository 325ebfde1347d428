"""How much the three experts disagree about each person, and whether that predicts the error.

This module holds the metrics: pure functions on keypoint arrays. model.uncertainty_set
applies them to the COCO keypoint result records of one evaluation set, model.report.
uncertainty writes the tables and figures of eval/util_ainu.py.

Found keypoints
    model.keypoints.found_mask: score > 0 and not the (0, 0) placeholder that result writers
    use for missing parts (the rule of every metric of the project).

Matching people across experts (`match_people`)
    Similarity of two predictions = OKS between predictions (model.keypoints.prediction_oks):
    COCO's per-keypoint kernel
    exp(-d^2 / (2 s^2 k^2)) with k = 2 * COCO_SIGMAS (pycocotools' constants) and s^2 = the
    area of the union of the two predictions' keypoint boxes, summed over the keypoints both
    found and divided by the number found by the sparser of the two. Dividing by the sparser
    prediction keeps a partial detection of a person (one expert missing the legs, say) a match
    of the full one, while two predictions that found different parts score low. The experts
    are matched in order (normal, dark, motion blur): the first expert's people open the
    groups, each further expert is assigned to the groups by Hungarian assignment
    (scipy.optimize.linear_sum_assignment) on the mean similarity to the group's members; a
    pair joins only at similarity >= `match_oks` (default 0.3). Why 0.3: the errors of two
    predictions add, so two predictions that each have OKS about 0.5 against the same person
    (COCO AP's loosest threshold) score about 0.5 between them, 10 % of such pairs below 0.5
    (measured on a 60 x 160 px person with 8 px noise per keypoint); 0.3 keeps those
    together, while the same person shifted by a quarter of its scale (25 px there, an
    overlapping neighbour) scores 0.26 and by 40 px 0.10. Close neighbours are told apart by
    the assignment itself. Unassigned people open new groups.

Disagreement per person (`disagreement`), both in [0, 1]
    translational: mean over expert pairs of the mean distance between the keypoints both
        experts found, divided by the person's scale = sqrt(area of the union box of all
        matched experts' found keypoints); capped at 1 (a whole person-scale).
    rotational: mean over expert pairs of the mean over limbs of |angle difference| wrapped to
        [0, pi] and divided by pi, over the 19 limbs (model.skeleton.LIMBS, CMU order, neck =
        midpoint of the shoulders via coco_to_cmu) whose two ends both experts found; a limb of
        zero length has no direction and is skipped.
    A person found by fewer than two experts is flagged and gets the maximal disagreement 1 in
    both; so does a person whose experts share no keypoint (translational) or no limb
    (rotational): there is no evidence that they agree. Per-limb values use the same pairs:
    translational = mean of the two end-point distances / scale, rotational as above; a limb no
    pair compared is NaN for that person.

Quality of the uncertainty (docs/recipe.md sections 9 and 11), in two layers
    A person found by fewer than two experts has disagreement 1 and a model that did not
    predict a person has error 1, so over all people a correlation mostly measures whether
    the experts found the same people. The two questions are therefore asked apart.

    Matching to the ground truth: a person's ground truth is found by Hungarian assignment
    per image on the best OKS of its experts' predictions (pycocotools' OKS,
    model.keypoints.coco_oks), kept at OKS >= 0.1 (GT_MATCH_OKS); people COCOeval ignores
    (crowd, no labelled keypoint) are never matched. The ensemble's prediction of a person:
    Hungarian assignment on the mean OKS between predictions with the person's members,
    >= match_oks. A model's OKS of a person is that of its own prediction against the
    person's ground truth.

    (a) Detection level (`detection_outcome`, `judge_detection`). For each model, each
        prediction it made and each ground-truth person it did not predict but some expert
        found is one case. Correct: the prediction matches a ground-truth person at OKS >=
        0.5 (DETECTION_OKS). Error: a false positive (a prediction that matches no
        ground-truth person at OKS >= 0.5) or a miss (a ground-truth person the model did not
        predict). A prediction of a ground-truth person below 0.5 leaves that person unmatched
        too, but both are one person with one disagreement: it counts once, as a false
        positive. A ground-truth person no expert found has no disagreement and is left out
        (counted), as is an ensemble prediction matched to no expert's person. AUROC
        (`auroc`) = the probability that an error has a larger disagreement than a correct
        detection, ties counted half (the Mann-Whitney statistic / (errors x correct)); 0.5
        is chance, 1 a perfect separation; undefined without both kinds.
    (b) Pose level (`pose_people`, `judge_pose`): the error of predictions that exist. Only
        the people that at least two experts found, that the judged model predicted and that
        match a ground-truth person; error = 1 - OKS of the model's prediction. Pearson and
        Spearman correlation (scipy.stats, with p-values); sparsification curve (mean error of
        the people left after removing the k most uncertain, k = 0..n-1, as a fraction k/n)
        against the oracle curve (removing the largest errors first), AUSE = trapezoid area
        between them over [0, (n-1)/n], in units of error (not normalised). People with equal
        uncertainty are removed as one block: the curve uses their mean error, so it does not
        depend on how ties happen to be ordered. With fewer than MIN_POSE_PEOPLE (10) people
        every statistic is n/a (None) with the count.
    All people (for comparison only, labelled so): the same statistics over every matched
        person with error = 1 - OKS, 1 where the model did not predict the person or the
        person has no ground truth. They mix the two questions above and judge neither.

    Risk-coverage (detection level, over all people): the most uncertain 10/20/30/50 % of
    people are rejected (ties broken by image and person order) and COCOeval is re-run on
    the same images, twice: `ap` with their predictions removed and the ground truth as is
    (what a user of the filtered output gets: rejected true positives cost recall), and
    `ap_kept_people` with their predictions removed and their matched ground-truth people
    ignored (COCOeval's treatment of people without keypoints): the accuracy on the people the
    system keeps, which rises when the uncertainty ranks well. An ensemble prediction matched
    to no expert's person has no disagreement and is removed with the first rejection.
"""

import warnings
from itertools import combinations

import numpy as np
from scipy import stats
from scipy.optimize import linear_sum_assignment

from model.domains import EFFECT_NAMES, EXPERT_EFFECTS
from model.keypoints import box_area, found_mask, keypoint_box, prediction_oks
from model.skeleton import (COCO_KEYPOINTS, COCO_TO_CMU, LIMBS, NECK, NUM_COCO, NUM_LIMBS,
                            NUM_PARTS, coco_to_cmu)

DEFAULT_MATCH_OKS = 0.3
# A ground-truth person belongs to a predicted person only above this OKS: below it the two
# are essentially unrelated (COCO AP starts counting at 0.5).
GT_MATCH_OKS = 0.1
MAX_DISAGREEMENT = 1.0
REJECT_FRACTIONS = (0.1, 0.2, 0.3, 0.5)
MEASURES = ("translational", "rotational")
# Detection level: COCO AP's loosest threshold for a correct detection.
DETECTION_OKS = 0.5
OUTCOMES = ("correct", "false_positive", "miss")
# Pose level: a correlation over fewer people is too noisy to judge anything by.
MIN_POSE_PEOPLE = 10
# The two layers in one sentence each, for the files and the summary.
DETECTION_DEFINITION = (
    "Per model, each prediction it made and each ground-truth person it did not predict (but "
    "an expert found) is one case: correct = the prediction matches a ground-truth person at "
    f"OKS >= {DETECTION_OKS}; error = a false positive (a prediction matching no ground-truth "
    f"person at OKS >= {DETECTION_OKS}) or a miss (a ground-truth person the model did not "
    "predict). AUROC of the disagreement as a score for 'this person is an error' (0.5 "
    "chance, 1 perfect)")
POSE_DEFINITION = (
    "Only people found by at least two experts, predicted by the judged model and matching a "
    "ground-truth person; error = 1 - OKS of the model's prediction; Pearson and Spearman "
    f"correlation, sparsification and AUSE; n/a below {MIN_POSE_PEOPLE} people")
ALL_PEOPLE_DEFINITION = (
    "For comparison only: every matched person, disagreement 1 when found by fewer than two "
    "experts, error 1 when the model did not predict the person or it has no ground truth; "
    "mixes detection agreement with pose error")
# Column labels of the models whose error the uncertainty is judged against.
MODEL_LABELS = tuple(EFFECT_NAMES[e] for e in EXPERT_EFFECTS) + ("ensemble",)

_LSHO = COCO_KEYPOINTS.index("left_shoulder")
_RSHO = COCO_KEYPOINTS.index("right_shoulder")


def match_people(people, threshold=DEFAULT_MATCH_OKS):
    """Group the people of one image across experts.

    people: one (P_e, 17, 3) array per expert. Returns an int array (G, E): for each group
    (matched person) the index of each expert's prediction, -1 where that expert has none."""
    people = [np.asarray(p, np.float64).reshape(-1, NUM_COCO, 3) for p in people]
    n_experts = len(people)
    groups = np.full((len(people[0]), n_experts), -1, int)
    groups[:, 0] = np.arange(len(people[0]))
    for e in range(1, n_experts):
        cand = people[e]
        matched = np.zeros(len(cand), bool)
        if len(groups) and len(cand):
            sim = np.zeros((len(groups), len(cand)))
            count = np.zeros(len(groups))
            for m in range(e):
                has = groups[:, m] >= 0
                if has.any():
                    sim[has] += prediction_oks(people[m][groups[has, m]], cand)
                    count += has
            sim /= np.maximum(count, 1)[:, None]
            rows, cols = linear_sum_assignment(sim, maximize=True)
            keep = sim[rows, cols] >= threshold
            groups[rows[keep], e] = cols[keep]
            matched[cols[keep]] = True
        new = np.full((int((~matched).sum()), n_experts), -1, int)
        new[:, e] = np.flatnonzero(~matched)
        groups = np.concatenate([groups, new])
    return groups


def gather_members(people, groups):
    """(G, E) groups -> members (G, E, 17, 3) (zeros where absent) and present (G, E)."""
    groups = np.asarray(groups, int).reshape(-1, len(people))
    members = np.zeros(groups.shape + (NUM_COCO, 3))
    present = groups >= 0
    for e, p in enumerate(people):
        rows = np.flatnonzero(present[:, e])
        if len(rows):
            members[rows, e] = np.asarray(p, np.float64).reshape(-1, NUM_COCO, 3)[groups[rows, e]]
    return members, present


def wrap_angle(delta):
    """Absolute angle difference wrapped to [0, pi]."""
    return np.abs((np.asarray(delta) + np.pi) % (2 * np.pi) - np.pi)


def _limbs(kp, found):
    """CMU parts (N, E, 18, 3) of COCO keypoints and, per limb (N, E, 19): both ends found,
    oriented (both found and of non-zero length), angle."""
    n, n_experts = found.shape[:2]
    cmu = coco_to_cmu(kp).astype(np.float64)
    found_cmu = np.zeros((n, n_experts, NUM_PARTS), bool)
    found_cmu[..., COCO_TO_CMU] = found
    found_cmu[..., NECK] = found[..., _LSHO] & found[..., _RSHO]
    ends = found_cmu[..., LIMBS[:, 0]] & found_cmu[..., LIMBS[:, 1]]
    vec = cmu[..., LIMBS[:, 1], :2] - cmu[..., LIMBS[:, 0], :2]
    oriented = ends & (vec != 0).any(-1)
    angle = np.arctan2(vec[..., 1], vec[..., 0])
    return cmu, ends, oriented, angle


def _pair_sums(kp, found, limbs, scale):
    """Sums and counts over the expert pairs of the per-person and per-limb disagreements."""
    cmu, ends, oriented, angle = limbs
    n, n_experts = found.shape[:2]
    t_sum, t_n = np.zeros(n), np.zeros(n)
    r_sum, r_n = np.zeros(n), np.zeros(n)
    lt_sum, lt_n = np.zeros((n, NUM_LIMBS)), np.zeros((n, NUM_LIMBS))
    lr_sum, lr_n = np.zeros((n, NUM_LIMBS)), np.zeros((n, NUM_LIMBS))
    for i, j in combinations(range(n_experts), 2):
        common = found[:, i] & found[:, j]
        dist = np.hypot(*(kp[:, i, :, :2] - kp[:, j, :, :2]).transpose(2, 0, 1))
        nc = common.sum(1)
        ok = nc > 0
        t_sum += np.where(ok, (dist * common).sum(1) / np.maximum(nc, 1), 0) / scale
        t_n += ok

        both = oriented[:, i] & oriented[:, j]
        dang = wrap_angle(angle[:, i] - angle[:, j]) / np.pi
        nl = both.sum(1)
        r_sum += np.where(nl > 0, (dang * both).sum(1) / np.maximum(nl, 1), 0)
        r_n += nl > 0
        lr_sum += np.where(both, dang, 0)
        lr_n += both

        lboth = ends[:, i] & ends[:, j]
        dc = np.hypot(*(cmu[:, i, :, :2] - cmu[:, j, :, :2]).transpose(2, 0, 1))
        limb_d = (dc[:, LIMBS[:, 0]] + dc[:, LIMBS[:, 1]]) / 2 / scale[:, None]
        lt_sum += np.where(lboth, limb_d, 0)
        lt_n += lboth
    return t_sum, t_n, r_sum, r_n, lt_sum, lt_n, lr_sum, lr_n


def disagreement(members, present):
    """Translational and rotational disagreement of N people seen by E experts.

    members (N, E, 17, 3) COCO-ordered keypoints, present (N, E) bool. Returns a dict of
    arrays: translational, rotational (N,), limb_translational, limb_rotational (N, 19, NaN
    where no pair compared the limb), num_experts, flagged, limbs_compared (N,), scale (N,)."""
    kp = np.asarray(members, np.float64)
    present = np.asarray(present, bool)
    n, n_experts = present.shape
    found = found_mask(kp) & present[..., None]
    flat = kp.reshape(n, n_experts * NUM_COCO, 3)
    box = keypoint_box(flat, found.reshape(n, n_experts * NUM_COCO))
    scale = np.maximum(np.sqrt(box_area(*box)), 1.0)   # a single point still needs a unit
    t_sum, t_n, r_sum, r_n, lt_sum, lt_n, lr_sum, lr_n = _pair_sums(
        kp, found, _limbs(kp, found), scale)

    num_experts = present.sum(1)
    flagged = num_experts < 2
    with np.errstate(invalid="ignore", divide="ignore"):
        trans = np.where(t_n > 0, t_sum / t_n, MAX_DISAGREEMENT)
        rot = np.where(r_n > 0, r_sum / r_n, MAX_DISAGREEMENT)
        limb_t = np.where(lt_n > 0, np.minimum(lt_sum / lt_n, MAX_DISAGREEMENT), np.nan)
        limb_r = np.where(lr_n > 0, lr_sum / lr_n, np.nan)
    trans = np.where(flagged, MAX_DISAGREEMENT, np.minimum(trans, MAX_DISAGREEMENT))
    rot = np.where(flagged, MAX_DISAGREEMENT, rot)
    return {"translational": trans, "rotational": rot, "limb_translational": limb_t,
            "limb_rotational": limb_r, "num_experts": num_experts, "flagged": flagged,
            "limbs_compared": (lr_n > 0).sum(1), "scale": scale}


def limb_summary(limb_values):
    """(N, 19) per-person limb values with NaN gaps -> per-limb mean and count over people."""
    v = np.asarray(limb_values, np.float64).reshape(-1, NUM_LIMBS)
    count = np.isfinite(v).sum(0)
    with np.errstate(invalid="ignore"):
        mean = np.where(count > 0, np.nansum(v, 0) / np.maximum(count, 1), np.nan)
    return mean, count


# ---------------------------------------------------------------- quality of the uncertainty

def correlation(uncertainty, error):
    """Pearson and Spearman correlation with two-sided p-values over the finite pairs.

    Returns a dict; the coefficients are None (with a note) when fewer than 3 pairs remain or
    either side is constant, where a correlation is undefined."""
    u = np.asarray(uncertainty, np.float64).ravel()
    e = np.asarray(error, np.float64).ravel()
    ok = np.isfinite(u) & np.isfinite(e)
    u, e = u[ok], e[ok]
    out = {"n": int(len(u)), "pearson_r": None, "pearson_p": None,
           "spearman_r": None, "spearman_p": None}
    if len(u) < 3:
        out["note"] = "fewer than 3 people: correlation undefined"
    elif np.ptp(u) == 0 or np.ptp(e) == 0:
        out["note"] = "constant " + ("uncertainty" if np.ptp(u) == 0 else "error") + \
                      ": correlation undefined"
    else:
        # A nearly constant side makes SciPy warn that the coefficient may be inaccurate:
        # then the correlation is reported as undefined, with SciPy's reason, never warned.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pr = stats.pearsonr(u, e)
            sr = stats.spearmanr(u, e)
        if caught:
            out["note"] = f"correlation undefined: {caught[0].message}"
        else:
            out.update(pearson_r=float(pr.statistic), pearson_p=float(pr.pvalue),
                       spearman_r=float(sr.statistic), spearman_p=float(sr.pvalue))
    return out


def _remaining_means(errors_in_removal_order):
    """Mean of what is left after removing the first k, for k = 0..n-1."""
    x = np.asarray(errors_in_removal_order, np.float64)
    tail = np.cumsum(x[::-1])[::-1]
    return tail / (len(x) - np.arange(len(x)))


def removal_order(uncertainty):
    """Indices from most to least uncertain; ties keep their input order."""
    u = np.asarray(uncertainty, np.float64).ravel()
    return np.lexsort((np.arange(len(u)), -u))


def sparsification(uncertainty, error):
    """Sparsification and oracle curves -> (fractions, curve, oracle), each of length n."""
    u = np.asarray(uncertainty, np.float64).ravel()
    e = np.asarray(error, np.float64).ravel()
    if len(u) != len(e):
        raise ValueError(f"{len(u)} uncertainties but {len(e)} errors")
    n = len(u)
    if n == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    order = removal_order(u)
    us, es = u[order], e[order]
    block = np.cumsum(np.r_[True, us[1:] != us[:-1]]) - 1
    es = (np.bincount(block, es) / np.bincount(block))[block]
    return np.arange(n) / n, _remaining_means(es), _remaining_means(np.sort(e)[::-1])


def ause(fractions, curve, oracle):
    """Area between the sparsification curve and the oracle's (0 for a perfect ranking)."""
    if len(fractions) < 2:
        return 0.0
    return float(np.trapezoid(np.asarray(curve) - np.asarray(oracle), np.asarray(fractions)))


def kept_after_rejection(uncertainty, fraction):
    """Boolean mask of people kept after removing the round(fraction * n) most uncertain."""
    u = np.asarray(uncertainty, np.float64).ravel()
    drop = int(np.floor(fraction * len(u) + 0.5))
    keep = np.ones(len(u), bool)
    keep[removal_order(u)[:drop]] = False
    return keep



# ---------------------------------------------------------------- the two layers

def auroc(score, positive):
    """Area under the ROC curve of `score` for telling the positive cases from the others:
    P(score of a positive > score of a negative), ties counted half. None (undefined) unless
    both kinds occur among the cases with a finite score."""
    s = np.asarray(score, np.float64).ravel()
    pos = np.asarray(positive, bool).ravel()
    ok = np.isfinite(s)
    s, pos = s[ok], pos[ok]
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = stats.rankdata(s)            # average ranks: a tie scores one half
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def detection_outcome(predicted, gt_id, oks, threshold=DETECTION_OKS):
    """Per person, the detection-level case of one model: "correct", "false_positive",
    "miss", or "" (not a case: the model did not predict it and it has no ground truth).

    predicted (N,) bool: the model has a prediction of the person; gt_id (N,) the matched
    ground-truth id (-1 none); oks (N,) of the model's prediction against it (NaN ignored)."""
    predicted = np.asarray(predicted, bool)
    has_gt = np.asarray(gt_id) >= 0
    oks = np.nan_to_num(np.asarray(oks, np.float64), nan=0.0)
    hit = predicted & has_gt & (oks >= threshold)
    return np.select([hit, predicted, has_gt], OUTCOMES, default="")


def judge_detection(uncertainty, outcome):
    """Counts of the cases and the AUROC of the uncertainty as a score for an error."""
    outcome = np.asarray(outcome)
    case = outcome != ""
    counts = {key: int((outcome == name).sum()) for key, name in
              zip(("correct", "false_positives", "misses"), OUTCOMES)}
    value = auroc(np.asarray(uncertainty, np.float64)[case], outcome[case] != "correct")
    out = dict(cases=int(case.sum()), **counts, auroc=value)
    if value is None:
        out["note"] = "AUROC undefined: " + ("no correct detection" if counts["correct"] == 0
                                             else "no error")
    return out


def pose_people(num_experts, predicted, gt_id):
    """The pose level's people of one model: found by >= 2 experts, predicted by the model
    and matched to a ground-truth person."""
    return ((np.asarray(num_experts) >= 2) & np.asarray(predicted, bool)
            & (np.asarray(gt_id) >= 0))


def judge_pose(uncertainty, error, min_people=MIN_POSE_PEOPLE):
    """Correlation (correlation's dict) and AUSE of the uncertainty against the error of the
    given people, and the sparsification curves (fractions, curve, oracle, ause), or, with
    fewer than min_people, every statistic None with the count in a note and no curves."""
    u = np.asarray(uncertainty, np.float64).ravel()
    e = np.asarray(error, np.float64).ravel()
    ok = np.isfinite(u) & np.isfinite(e)
    u, e = u[ok], e[ok]
    if len(u) < min_people:
        return {"n": int(len(u)), "pearson_r": None, "pearson_p": None, "spearman_r": None,
                "spearman_p": None, "ause": None,
                "note": f"n/a: {len(u)} people (fewer than {min_people})"}, None
    out = correlation(u, e)
    f, curve, oracle = sparsification(u, e)
    out["ause"] = ause(f, curve, oracle)
    return out, (f, curve, oracle, out["ause"])
