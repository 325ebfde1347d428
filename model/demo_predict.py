"""What the demo runs on one image or frame: one pose network, or the three experts with the
domain classifier (routed or fused) and the experts' disagreement on every person.

Both predictors return a Prediction and charge their time to a StageTimer (network,
decoding; the ensemble also classifier and uncertainty), so the demo can say where a frame's
time goes. The maps are averaged exactly as model.inference.predict_people averages them
(the same functions, weights and order), so the single-network path gives its people.

The ensemble runs all three experts on every image (the disagreement needs them):
routed  the people of the expert of the most probable domain (model.ensemble.route_choice);
fused   the experts' maps averaged with model.ensemble.fusion_weights of the domain
        probabilities and decoded once, as the evaluation's fused ensemble does.
Each output person's disagreement is that of the three experts' people matched to it, with
the functions eval/util_ainu.py uses (model.uncertainty.match_people, then disagreement):
routed, the group that holds the chosen expert's person; fused, the group whose members have
the highest mean OKS with the fused person (Hungarian, at least match_oks). A person seen by
fewer than two experts has no disagreement (None, written as null) and counts as uncertain.
"""
import contextlib
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

from model import inference
from model.domains import EFFECT_NAMES, EXPERT_EFFECTS
from model.ensemble import fusion_weights, route_choice
from model.keypoints import prediction_oks
from model.skeleton import COCO_TO_CMU, NUM_COCO
from model.uncertainty import DEFAULT_MATCH_OKS, disagreement, gather_members, match_people

ROUTED, FUSED = "routed", "fused"
# Translational disagreement above which a person is drawn as uncertain. On the demo's four
# test sets (875 people seen by at least two experts, run_experiment.py, seed 0) 18 % of the
# people lie above 0.08 and half of those are wrong (routed ensemble OKS < 0.5), against
# 10 % of the people below it: the best balanced accuracy of the thresholds tried
# (0.02-0.30, README "Demo").
DEFAULT_UNCERTAIN_ABOVE = 0.08


class StageTimer:
    """Seconds spent per named stage: `with timer("network"): ...`."""

    def __init__(self):
        self.seconds = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, stage):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start


@dataclass
class Prediction:
    people: list                                   # model.decode people of the image
    frame_info: dict = field(default_factory=dict)  # extra fields of the frame's JSON
    person_info: list = None                       # per person: extra fields of its JSON
    uncertain: list = None                         # per person: drawn as uncertain

    def __post_init__(self):
        if self.person_info is None:
            self.person_info = [{} for _ in self.people]
        if self.uncertain is None:
            self.uncertain = [False] * len(self.people)


class SinglePose:
    """One network (Keras, ONNX Runtime or OpenVINO: model.backends.load_model)."""

    def __init__(self, model, settings):
        self.model, self.settings = model, settings

    def __call__(self, image, timer):
        with timer("network"):
            outputs = inference.network_outputs([self.model], image, self.settings)
        with timer("decoding"):
            people = inference.decode_outputs(outputs, image.shape[:2], self.settings, [1.0])
        return Prediction(people)


def coco_keypoints(people):
    """Decoder people -> (P, 17, 3) COCO keypoints as the evaluation's result records hold
    them (x, y, 1 for a found part; zeros for a missing one)."""
    out = np.zeros((len(people), NUM_COCO, 3))
    for i, person in enumerate(people):
        kp = np.asarray(person["keypoints"], np.float64)[COCO_TO_CMU]
        found = kp[:, 2] > 0
        out[i, found, :2] = kp[found, :2]
        out[i, found, 2] = 1
    return out


def match_to_groups(members, present, people, threshold):
    """Index of the group (or None) of each of `people` (P, 17, 3): Hungarian assignment on
    the mean OKS with each group's members, pairs below `threshold` left unmatched."""
    group_of = [None] * len(people)
    if not len(people) or not len(present):
        return group_of
    sim = np.zeros((len(present), len(people)))
    for e in range(present.shape[1]):
        has = present[:, e]
        if has.any():
            sim[has] += prediction_oks(members[has, e], people)
    sim /= np.maximum(present.sum(1), 1)[:, None]
    rows, cols = linear_sum_assignment(sim, maximize=True)
    for g, p in zip(rows, cols):
        if sim[g, p] >= threshold:
            group_of[p] = int(g)
    return group_of


def _rounded(value):
    return None if value is None else round(float(value), 4)


def person_uncertainty(expert_people, people, chosen=None, match_oks=DEFAULT_MATCH_OKS):
    """Per output person {num_experts, found_by, translational_disagreement,
    rotational_disagreement}: the three experts' people matched (model.uncertainty) and
    measured; `chosen` is the routed expert (its people are the output), None for fused."""
    arrays = [coco_keypoints(p) for p in expert_people]
    groups = match_people(arrays, match_oks)
    members, present = gather_members(arrays, groups)
    measured = disagreement(members, present)
    if chosen is not None:
        holder = {int(groups[g, chosen]): g for g in range(len(groups)) if groups[g, chosen] >= 0}
        group_of = [holder.get(k) for k in range(len(people))]
    else:
        group_of = match_to_groups(members, present, coco_keypoints(people), match_oks)
    rows = []
    for g in group_of:
        seen_by = [] if g is None else [EFFECT_NAMES[x] for x, p in
                                        zip(EXPERT_EFFECTS, present[g]) if p]
        enough = len(seen_by) >= 2
        rows.append({"num_experts": len(seen_by), "found_by": seen_by,
                     "translational_disagreement":
                         _rounded(measured["translational"][g]) if enough else None,
                     "rotational_disagreement":
                         _rounded(measured["rotational"][g]) if enough else None})
    return rows


def is_uncertain(row, uncertain_above):
    """Drawn as uncertain: seen by fewer than two experts, or translational disagreement
    above the threshold."""
    t = row["translational_disagreement"]
    return t is None or t > uncertain_above


class ExpertEnsemble:
    """The domain classifier and the three experts on one image (module docstring).

    classifier(image) -> (3,) probabilities (normal, dark, motion blur); experts: the three
    networks in that order."""

    def __init__(self, method, classifier, experts, settings, match_oks=DEFAULT_MATCH_OKS,
                 uncertain_above=DEFAULT_UNCERTAIN_ABOVE):
        if method not in (ROUTED, FUSED):
            raise ValueError(f"method must be {ROUTED!r} or {FUSED!r}, got {method!r}")
        self.method, self.classifier, self.experts = method, classifier, list(experts)
        self.settings, self.match_oks = settings, match_oks
        self.uncertain_above = uncertain_above

    def __call__(self, image, timer):
        hw = image.shape[:2]
        with timer("classifier"):
            probs = np.asarray(self.classifier(image), np.float64)
        with timer("network"):
            outputs = inference.network_outputs(self.experts, image, self.settings)
        with timer("decoding"):
            one_hot = np.eye(len(self.experts))
            expert_people = [inference.decode_outputs(outputs, hw, self.settings, w) for w in one_hot]
            chosen = route_choice({0: probs}, [0])[0]
            frame = {"ensemble": self.method, "domain": EFFECT_NAMES[EXPERT_EFFECTS[chosen]],
                     "domain_probabilities": {EFFECT_NAMES[x]: round(float(p), 6)
                                              for x, p in zip(EXPERT_EFFECTS, probs)}}
            if self.method == ROUTED:
                people = expert_people[chosen]
                frame["expert"] = EFFECT_NAMES[EXPERT_EFFECTS[chosen]]
            else:
                weights = fusion_weights(probs)
                people = inference.decode_outputs(outputs, hw, self.settings, weights)
                frame["fusion_weights"] = {EFFECT_NAMES[x]: round(float(w), 6)
                                           for x, w in zip(EXPERT_EFFECTS, weights)}
        with timer("uncertainty"):
            rows = person_uncertainty(expert_people, people,
                                      chosen if self.method == ROUTED else None,
                                      self.match_oks)
            uncertain = [is_uncertain(r, self.uncertain_above) for r in rows]
            for row, flag in zip(rows, uncertain):
                row["uncertain"] = flag
        return Prediction(people, frame, rows, uncertain)
