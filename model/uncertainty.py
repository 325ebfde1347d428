"""How much the three experts disagree about each person, and whether that predicts the error.

Everything here works on COCO keypoint result records ({image_id, category_id, keypoints: 51
floats in COCO order, score}) as the evaluation writes them.

Found keypoints
    A predicted keypoint counts as found when its third value (score/visibility) is > 0 and
    it is not the (0, 0) placeholder that result writers use for missing parts.

Matching people across experts (`match_people`)
    Similarity of two predictions = OKS between predictions: COCO's per-keypoint kernel
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

Quality of the uncertainty (REFERENCE section 9)
    error = 1 - OKS against the matched ground-truth person (pycocotools' OKS, `coco_oks`);
    a model that did not predict the person, or a person with no ground truth, has error 1.
    A matched person's ground truth: Hungarian assignment per image on the best OKS of its
    experts' predictions, kept at OKS >= 0.1 (GT_MATCH_OKS); people COCOeval ignores (crowd,
    no labelled keypoint) are never matched. The ensemble's prediction of a person: Hungarian
    assignment on the mean OKS between predictions with the person's members, >= match_oks.
    Pearson and Spearman correlation (scipy.stats, with p-values); sparsification curve (mean
    error of the people left after removing the k most uncertain, k = 0..n-1, as a fraction
    k/n) against the oracle curve (removing the largest errors first), AUSE = trapezoid area
    between them over [0, (n-1)/n], in units of error (not normalised). People with equal
    uncertainty are removed as one block: the curve uses their mean error, so it does not
    depend on how ties happen to be ordered. Risk-coverage: the most uncertain 10/20/30/50 %
    of people are rejected (ties broken by image and person order) and COCOeval is re-run on
    the same images, twice: `ap` with their predictions removed and the ground truth as is
    (what a user of the filtered output gets: rejected true positives cost recall), and
    `ap_kept_people` with their predictions removed and their matched ground-truth people
    ignored (COCOeval's treatment of people without keypoints): the accuracy on the people the
    system keeps, which rises when the uncertainty ranks well. An ensemble prediction matched
    to no expert's person has no disagreement and is removed with the first rejection.
"""
import logging
import re
import shlex
import time
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy import stats
from scipy.optimize import linear_sum_assignment

from model import evaluation, plots
from model.cli import UserError
from model.files import read_json, write_csv, write_json
from model.paths import EFFECT_NAMES, EXPERT_EFFECTS, annotation_file
from model.skeleton import (COCO_KEYPOINTS, COCO_SIGMAS, COCO_TO_CMU, LIMB_NAMES, LIMBS, NECK,
                            NUM_COCO, NUM_LIMBS, NUM_PARTS, coco_to_cmu)

log = logging.getLogger(__name__)

DEFAULT_MATCH_OKS = 0.3
# A ground-truth person belongs to a predicted person only above this OKS: below it the two
# are essentially unrelated (COCO AP starts counting at 0.5).
GT_MATCH_OKS = 0.1
MAX_DISAGREEMENT = 1.0
REJECT_FRACTIONS = (0.1, 0.2, 0.3, 0.5)

_VARS = (2 * COCO_SIGMAS) ** 2          # pycocotools: vars = (sigmas * 2) ** 2
_EPS = np.spacing(1)                    # pycocotools adds it to the area
_LSHO = COCO_KEYPOINTS.index("left_shoulder")
_RSHO = COCO_KEYPOINTS.index("right_shoulder")


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


def found_mask(keypoints):
    """(..., 17, 3) -> (..., 17) bool: score > 0 and not the (0, 0) placeholder."""
    kp = np.asarray(keypoints, np.float64)
    return (kp[..., 2] > 0) & ~((kp[..., 0] == 0) & (kp[..., 1] == 0))


def _extent(kp, found):
    """Keypoint box (x0, y0, x1, y1) of the found keypoints over the last axis (inf if none)."""
    x, y = kp[..., 0], kp[..., 1]
    return (np.where(found, x, np.inf).min(-1), np.where(found, y, np.inf).min(-1),
            np.where(found, x, -np.inf).max(-1), np.where(found, y, -np.inf).max(-1))


def _area(x0, y0, x1, y1):
    return np.maximum(x1 - x0, 0) * np.maximum(y1 - y0, 0)


def prediction_oks(a, b):
    """OKS between two sets of predictions: (Na, 17, 3), (Nb, 17, 3) -> (Na, Nb).

    Kernel and constants of COCO; scale = union of the two keypoint boxes; summed over the
    keypoints both found, divided by the count of the sparser prediction (see module doc)."""
    a = np.asarray(a, np.float64).reshape(-1, NUM_COCO, 3)
    b = np.asarray(b, np.float64).reshape(-1, NUM_COCO, 3)
    fa, fb = found_mask(a), found_mask(b)
    ea, eb = _extent(a, fa), _extent(b, fb)
    area = _area(np.minimum(ea[0][:, None], eb[0][None]), np.minimum(ea[1][:, None], eb[1][None]),
                 np.maximum(ea[2][:, None], eb[2][None]), np.maximum(ea[3][:, None], eb[3][None]))
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(-1)
    e = d2 / _VARS / (area[..., None] + _EPS) / 2
    common = fa[:, None] & fb[None]
    denom = np.minimum(fa.sum(1)[:, None], fb.sum(1)[None])
    total = np.where(common, np.exp(-e), 0.0).sum(-1)
    return np.where(denom > 0, total / np.maximum(denom, 1), 0.0)


def coco_oks(dt, gts):
    """COCOeval's OKS between predictions (Nd, 17, 3) and ground-truth annotations with
    labelled keypoints -> (Nd, Ng) (model.evaluation.oks_matrix on the annotations)."""
    dt = np.asarray(dt, np.float64).reshape(-1, NUM_COCO, 3)
    if len(gts) == 0 or len(dt) == 0:
        return np.zeros((len(dt), len(gts)))
    g = np.array([gt["keypoints"] for gt in gts], np.float64).reshape(-1, NUM_COCO, 3)
    return evaluation.oks_matrix(dt, g, [float(gt["area"]) for gt in gts])


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


def disagreement(members, present):
    """Translational and rotational disagreement of N people seen by E experts.

    members (N, E, 17, 3) COCO-ordered keypoints, present (N, E) bool. Returns a dict of
    arrays: translational, rotational (N,), limb_translational, limb_rotational (N, 19, NaN
    where no pair compared the limb), num_experts, flagged, limbs_compared (N,), scale (N,)."""
    kp = np.asarray(members, np.float64)
    present = np.asarray(present, bool)
    n, n_experts = present.shape
    found = found_mask(kp) & present[..., None]
    cmu = coco_to_cmu(kp).astype(np.float64)
    found_cmu = np.zeros((n, n_experts, NUM_PARTS), bool)
    found_cmu[..., COCO_TO_CMU] = found
    found_cmu[..., NECK] = found[..., _LSHO] & found[..., _RSHO]
    ends = found_cmu[..., LIMBS[:, 0]] & found_cmu[..., LIMBS[:, 1]]          # (N, E, 19)
    vec = cmu[..., LIMBS[:, 1], :2] - cmu[..., LIMBS[:, 0], :2]
    oriented = ends & (vec != 0).any(-1)
    angle = np.arctan2(vec[..., 1], vec[..., 0])

    flat = kp.reshape(n, n_experts * NUM_COCO, 3)
    box = _extent(flat, found.reshape(n, n_experts * NUM_COCO))
    scale = np.maximum(np.sqrt(_area(*box)), 1.0)   # a single point still needs a unit

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
        pr = stats.pearsonr(u, e)
        sr = stats.spearmanr(u, e)
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


# ---------------------------------------------------------------- the experts' predictions

RESULTS_JSON = evaluation.RESULTS_JSON      # the COCO results JSON of a run folder


def evaluated_image_ids(results_dir, data_type, num_images, coco_gt, record_lists,
                        effects=EXPERT_EFFECTS):
    """The images the experts' runs predicted: the image_ids their run.json files record
    (images all of them predicted; unreadable ones are skipped by the evaluation), else the
    first `num_images` of the annotation file, else (no ground truth) every image some model
    has a prediction for."""
    recorded = []
    for effect in effects:
        path = run_dir(results_dir, data_type, effect, num_images) / evaluation.RUN_JSON
        if path.is_file():
            ids = read_json(path, "run settings").get("image_ids")
            if ids:
                recorded.append([int(i) for i in ids])
    if recorded:
        common = set.intersection(*map(set, recorded))
        return [i for i in recorded[0] if i in common]
    if coco_gt is not None:
        return [int(im["id"]) for im in evaluation.first_images(coco_gt, num_images)]
    return sorted({int(r["image_id"]) for recs in record_lists for r in recs})


def run_dir(results_dir, data_type, effect, num_images):
    """The run folder of one model (model.evaluation.run_folder, single scale)."""
    return evaluation.run_folder(results_dir, data_type, effect, num_images)


def results_file(results_dir, data_type, effect, num_images):
    """The COCO keypoint results JSON of one model's run (the evaluation's file name)."""
    return run_dir(results_dir, data_type, effect, num_images) / RESULTS_JSON


def create_command(data_type, effect, num_images):
    """The command line that writes a model's predictions on a set."""
    if effect == "_ensemble":
        return (f"python train_expert_classifier/ensemble.py --coco_dataType {data_type} "
                f"--method route --fir_img_num {num_images}")
    if effect == "_ensemble_fuse":
        return (f"python train_expert_classifier/ensemble.py --coco_dataType {data_type} "
                f"--method fuse --fir_img_num {num_images}")
    return (f"python eval/eval_coco2014_single_scale.py --effect {shlex.quote(effect)} "
            f"--coco_dataType {data_type} --fir_img_num {num_images}")


def load_results(results_dir, data_type, effect, num_images):
    """A model's COCO keypoint result records; UserError naming the model and the command
    that creates them when the file is missing or malformed."""
    path = results_file(results_dir, data_type, effect, num_images)
    name = EFFECT_NAMES[effect]
    if not path.is_file():
        raise UserError(f"no predictions of the {name} model on {data_type} ({num_images} "
                        f"images): {path} is missing; create them with: "
                        f"{create_command(data_type, effect, num_images)}")
    records = read_json(path, f"predictions of the {name} model")
    if not isinstance(records, list):
        raise UserError(f"{path}: expected a list of COCO keypoint results")
    for i, r in enumerate(records):
        if not isinstance(r, dict) or "image_id" not in r or \
                len(r.get("keypoints", ())) != 3 * NUM_COCO:
            raise UserError(f"{path}: record {i} is not a COCO keypoint result "
                            f"(image_id and 51 keypoint values)")
    return records


def find_num_images(results_dir, data_type, effects=EXPERT_EFFECTS):
    """The image count N of the runs of all `effects` on `data_type` found in results_dir.

    UserError when a model has no run (naming it and the command) or when several counts
    are common to all (then --fir_img_num must choose)."""
    counts = None
    for effect in effects:
        pattern = re.compile(re.escape(run_dir(results_dir, data_type, effect, 0).name[:-1])
                             + r"(\d+)$")
        found = {int(m.group(1)) for p in Path(results_dir).glob("*")
                 if (m := pattern.match(p.name)) and (p / RESULTS_JSON).is_file()}
        if not found:
            raise UserError(f"no predictions of the {EFFECT_NAMES[effect]} model on {data_type} "
                            f"in {results_dir}; create them with: "
                            f"{create_command(data_type, effect, 1000)} (or fewer images)")
        counts = found if counts is None else counts & found
    if not counts:
        raise UserError(f"the experts' runs on {data_type} in {results_dir} cover different "
                        f"image counts; pass --fir_img_num")
    if len(counts) > 1:
        raise UserError(f"runs on {data_type} exist for several image counts "
                        f"({', '.join(map(str, sorted(counts)))}); choose one with --fir_img_num")
    return counts.pop()


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


# ---------------------------------------------------------------- the analysis of a set

MODEL_LABELS = tuple(EFFECT_NAMES[e] for e in EXPERT_EFFECTS) + ("ensemble",)


def _assign(sim, threshold):
    """Hungarian assignment on a similarity matrix, keeping pairs >= threshold."""
    if sim.size == 0:
        return np.zeros(0, int), np.zeros(0, int)
    rows, cols = linear_sum_assignment(sim, maximize=True)
    keep = sim[rows, cols] >= threshold
    return rows[keep], cols[keep]


def collect_people(image_ids, expert_records, ensemble_records=None, coco_gt=None,
                   match_oks=DEFAULT_MATCH_OKS):
    """Match, measure and (with ground truth) score every person of every image.

    Returns a dict: per-person arrays (image_id, person, num_experts, flagged, translational,
    rotational, limbs_compared, limb_translational, limb_rotational, gt_id (-1 none),
    oks (P, 4: the experts then the ensemble; NaN without ground truth or ensemble)),
    `records` and `person_of` per model (the records in order and the person each belongs to,
    -1 for an ensemble prediction matched to nobody) and `counts`."""
    n_exp = len(expert_records)
    sources = list(expert_records) + ([ensemble_records] if ensemble_records is not None else [])
    by_model = [group_by_image(recs) for recs in sources]
    wanted = set(int(i) for i in image_ids)
    outside = sum(len(recs) for b in by_model for i, recs in b.items() if i not in wanted)
    rows = defaultdict(list)
    records = [[] for _ in range(n_exp + 1)]
    person_of = [[] for _ in range(n_exp + 1)]
    counts = dict(images=len(image_ids), images_without_people=0, gt_people=0,
                  gt_people_matched=0, ensemble_unmatched=0, records_outside_images=outside)
    next_person = 0
    for image_id in image_ids:
        image_id = int(image_id)
        recs = [b.get(image_id, []) for b in by_model]
        people = [records_to_array(r)[0] for r in recs]
        groups = match_people(people[:n_exp], match_oks)
        if len(groups) == 0:
            counts["images_without_people"] += 1
        members, present = gather_members(people[:n_exp], groups)
        d = disagreement(members, present)
        n = len(groups)
        ids = next_person + np.arange(n)
        for e in range(n_exp):
            where = np.full(len(recs[e]), -1)
            where[groups[present[:, e], e]] = ids[present[:, e]]
            records[e].extend(recs[e])
            person_of[e].extend(where.tolist())

        member_of_ens = np.full(n, -1)
        if ensemble_records is not None:
            ens = people[n_exp]
            sim = np.zeros((n, len(ens)))
            for e in range(n_exp):
                has = present[:, e]
                if has.any() and len(ens):
                    sim[has] += prediction_oks(members[has, e], ens)
            sim /= np.maximum(present.sum(1), 1)[:, None]
            r, c = _assign(sim, match_oks)
            member_of_ens[r] = c
            where = np.full(len(ens), -1)
            where[c] = ids[r]
            counts["ensemble_unmatched"] += int((where < 0).sum())
            records[n_exp].extend(recs[n_exp])
            person_of[n_exp].extend(where.tolist())

        gt_id = np.full(n, -1)
        oks = np.full((n, n_exp + 1), np.nan)
        if coco_gt is not None:
            gts = evaluated_gt(coco_gt.imgToAnns.get(image_id, []))
            counts["gt_people"] += len(gts)
            # OKS of every expert's member against every ground truth: (n, E, G)
            per = np.zeros((n, n_exp, len(gts)))
            for e in range(n_exp):
                if present[:, e].any() and gts:
                    per[present[:, e], e] = coco_oks(members[present[:, e], e], gts)
            r, c = _assign(per.max(1) if n_exp else np.zeros((n, len(gts))), GT_MATCH_OKS)
            counts["gt_people_matched"] += len(r)
            gt_id[r] = [gts[k]["id"] for k in c]
            oks[:, :n_exp] = 0
            oks[r, :n_exp] = per[r, :, c]
            if ensemble_records is not None:
                oks[:, n_exp] = 0
                for g, k in zip(r, c):
                    if member_of_ens[g] >= 0:
                        oks[g, n_exp] = coco_oks(people[n_exp][member_of_ens[g]][None],
                                                 [gts[k]])[0, 0]
        rows["present"].append(present)
        rows["image_id"].append(np.full(n, image_id))
        rows["person"].append(np.arange(n))
        rows["gt_id"].append(gt_id)
        rows["oks"].append(oks)
        for key in ("num_experts", "flagged", "translational", "rotational", "limbs_compared",
                    "limb_translational", "limb_rotational"):
            rows[key].append(d[key])
        next_person += n
    empty = {"limb_translational": (0, NUM_LIMBS), "limb_rotational": (0, NUM_LIMBS),
             "oks": (0, n_exp + 1), "present": (0, n_exp)}
    out = {k: np.concatenate(rows[k]) if rows[k] else np.zeros(empty.get(k, 0))
           for k in ("image_id", "person", "present", "gt_id", "oks", "num_experts", "flagged",
                     "translational", "rotational", "limbs_compared", "limb_translational",
                     "limb_rotational")}
    used = n_exp + (ensemble_records is not None)
    out["records"] = records[:used]
    out["person_of"] = [np.asarray(p, int) for p in person_of[:used]]
    out["counts"] = counts
    return out


MEASURES = ("translational", "rotational")


def quality(people, coco_gt, image_ids, fractions=REJECT_FRACTIONS):
    """Correlations, sparsification/AUSE and risk-coverage of both disagreements against the
    error of every model (people from collect_people, with ground truth)."""
    n_models = len(people["records"])
    labels = MODEL_LABELS[:n_models]
    error = 1 - people["oks"][:, :n_models]
    out = {"correlation": {}, "ause": {}, "sparsification": {}, "risk_coverage": []}
    for measure in MEASURES:
        u = people[measure]
        out["correlation"][measure] = {m: correlation(u, error[:, i]) for i, m in enumerate(labels)}
        curves = {}
        for i, m in enumerate(labels):
            f, curve, oracle = sparsification(u, error[:, i])
            curves[m] = (f, curve, oracle, ause(f, curve, oracle))
        out["sparsification"][measure] = curves
        out["ause"][measure] = {m: c[3] for m, c in curves.items()}
    baseline = [keypoint_ap(coco_gt, recs, image_ids) for recs in people["records"]]
    n = len(people["translational"])
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
                out["risk_coverage"].append({
                    "measure": measure, "model": m, "rejected_fraction": fraction,
                    "people_kept": int(keep.sum()), "people": n,
                    "predictions_kept": int(kept.sum()), "predictions": len(kept),
                    "ap": ap, "ap_kept_people": ap_kept})
    return out


def output_stem(results_dir, data_type, num_images):
    """eval/results/<X>-three-model-epoch100-open-pose-single-scale-<N> (the seed's name)."""
    name = f"{data_type}-three-model-epoch100-open-pose-single-scale-{num_images}"
    return Path(results_dir) / name


def _fmt(x):
    return "" if x is None or (isinstance(x, float) and not np.isfinite(x)) else \
        (f"{x:.6f}" if isinstance(x, (float, np.floating)) else str(x))


def limb_rows(people):
    """Rows of the seed's CSV: one per limb, then the totals."""
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
    return rows


def person_rows(people):
    n_models = len(people["records"])
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
                       for m in range(len(MODEL_LABELS))])
    return rows


PERSON_HEADER = (["image_id", "person", "found_by", "num_experts", "flagged", "translational",
                  "rotational", "limbs_compared", "gt_id"]
                 + [f"oks_{m}" for m in MODEL_LABELS])
LIMB_HEADER = ["limb", "translational", "rotational", "people_translational",
               "people_rotational"]


def analyse(data_type, results_dir, coco_root, num_images=None, match_oks=DEFAULT_MATCH_OKS,
            ensemble_effect="_ensemble", out_dir=None):
    """eval/util_ainu.py: every output of the uncertainty analysis of one set.

    Returns the summary dict that is also written as <stem>-quality.json."""
    start = time.time()
    if num_images is None:
        num_images = find_num_images(results_dir, data_type)
    out_dir = Path(results_dir if out_dir is None else out_dir)
    experts = [load_results(results_dir, data_type, e, num_images) for e in EXPERT_EFFECTS]
    notes = []
    try:
        ensemble = load_results(results_dir, data_type, ensemble_effect, num_images)
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
                evaluation.check_records(recs, coco_gt, results_file(
                    results_dir, data_type, effect, num_images))
    image_ids = evaluated_image_ids(results_dir, data_type, num_images, coco_gt,
                                    experts + ([ensemble] if ensemble else []))
    log.info("uncertainty of %s: %d images, %s predictions of %s", data_type, len(image_ids),
             "/".join(str(len(r)) for r in experts), "/".join(MODEL_LABELS[:3]))
    people = collect_people(image_ids, experts, ensemble, coco_gt, match_oks)
    counts = people["counts"]
    counts.update(people=len(people["image_id"]), flagged=int(people["flagged"].sum()))
    if counts["records_outside_images"]:
        log.warning("%d predictions are of images outside the %d evaluated ones: ignored",
                    counts["records_outside_images"], len(image_ids))
    log.info("matched %d people (%d flagged: seen by fewer than 2 experts); %d images where "
             "no expert found anyone", counts["people"], counts["flagged"],
             counts["images_without_people"])

    stem = output_stem(out_dir, data_type, num_images)
    write_csv(stem.with_name(stem.name + ".csv"), limb_rows(people), LIMB_HEADER)
    write_csv(stem.with_name(stem.name + "-persons.csv"), person_rows(people),
              PERSON_HEADER)
    summary = {"data_type": data_type, "num_images": num_images, "match_oks": match_oks,
               "gt_match_oks": GT_MATCH_OKS, "ensemble": EFFECT_NAMES[ensemble_effect]
               if ensemble is not None else None, "counts": counts, "notes": notes,
               "mean": {m: float(people[m].mean()) if len(people[m]) else None
                        for m in MEASURES},
               "randomness": "none: the analysis is deterministic (no seed)"}
    written = [stem.name + ".csv", stem.name + "-persons.csv"]
    if coco_gt is not None:
        q = quality(people, coco_gt, image_ids)
        summary.update(correlation=q["correlation"], ause=q["ause"],
                       risk_coverage=q["risk_coverage"])
        spars_rows = []
        for measure, curves in q["sparsification"].items():
            for model_label, (f, curve, oracle, _) in curves.items():
                spars_rows += [[measure, model_label, _fmt(float(a)), _fmt(float(b)),
                                _fmt(float(c))] for a, b, c in zip(f, curve, oracle)]
        write_csv(stem.with_name(stem.name + "-sparsification.csv"), spars_rows,
                  ["measure", "model", "fraction_removed", "mean_error", "oracle_mean_error"])
        write_csv(stem.with_name(stem.name + "-risk_coverage.csv"),
                  [[r["measure"], r["model"], r["rejected_fraction"], r["people_kept"],
                    r["predictions_kept"], _fmt(r["ap"]), _fmt(r["ap_kept_people"])]
                   for r in q["risk_coverage"]],
                  ["measure", "model", "rejected_fraction", "people_kept", "predictions_kept",
                   "ap", "ap_kept_people"])
        title = f"{data_type} ({counts['people']} people)"
        plots.plot_sparsification(stem.with_name(stem.name + "-sparsification.png"),
                                  q["sparsification"], title)
        rc = {m: {} for m in MEASURES}
        for r in q["risk_coverage"]:
            cov, ap = rc[r["measure"]].setdefault(r["model"], ([], []))
            cov.append(1 - r["rejected_fraction"])
            ap.append(r["ap_kept_people"])
        plots.plot_risk_coverage(stem.with_name(stem.name + "-risk_coverage.png"), rc, title)
        written += [stem.name + s for s in ("-sparsification.csv", "-sparsification.png",
                                            "-risk_coverage.csv", "-risk_coverage.png")]
    summary["files"] = written + [stem.name + "-quality.json"]
    summary["seconds"] = round(time.time() - start, 2)
    write_json(stem.with_name(stem.name + "-quality.json"), summary, indent=1)
    log.info("uncertainty of %s done in %.1f s: %s", data_type, summary["seconds"],
             ", ".join(summary["files"]))
    return summary
