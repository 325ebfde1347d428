"""Robustness over corruption severities, COCO-C style (Hendrycks and Dietterich 2019; for pose,
Wang et al., CVPR 2021): the keypoint AP of every model on the first N images of the clean
held-out set after each corruption at five severities, summarised as mPC and rPC.

Corruptions, applied with model.effects' own functions; severity 3 is the fork's setting:
  darkness        brightness factor       0.8  0.65  0.5  0.35  0.2    (effects.darken)
  motion_blur     horizontal length, px   10   20    30   40    50     (effects.motion_blur)
  low_resolution  downscale factor        0.8  0.65  0.5  0.35  0.25   (effects.low_resolution)
Darkness and low resolution step by 0.15 around the fork's 0.5; the last resolution step stops
at a quarter of each side, the coarsest pixelation of ImageNet-C. A corrupted image is stored
and read back as a JPEG of quality 95, as the evaluation sets store theirs (model.evalsets),
so severity 3 gives exactly the pixels of val2014_random1k_dark / _motion_blur / _resolution;
low resolution also scales the annotations (effects.scale_annotation) to the new size.
Severity 0 is the clean images as stored, the reference of rPC on the same images.

  mPC = mean over corruptions of the mean AP over its severities (with five severities each:
        the mean over all corruptions and severities 1-5)
  rPC = mPC / clean AP (None where the clean AP is 0); both also per corruption.

Models: the three experts, the generalist (when its weights exist), and the two ensembles,
derived from the experts' maps so that each network runs once per corrupted image: routed =
the people of the expert of the most probable domain (model.ensemble.route_choice), fused =
the experts' maps weighted by model.ensemble.fusion_weights and decoded once. The domain
classifier sees the corrupted image. Maps and decoder are the evaluation's (model.inference,
model.decode): an expert's people here are those predict_dataset gives on the same image.
COCOeval scores exactly the images predicted (model.evaluation.keypoint_stats).

Resumable: every (corruption, severity) chunk is <out_dir>/chunks/<corruption>_<severity>.json
with a key (set, its annotation file, images, corruption parameter, settings, each weight
file's and the classifier's path, size and time); a rerun keeps every chunk whose key matches. Nothing here
is random: the seed is recorded only.
"""
import logging
import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from model import decode, effects, evaluation, files, inference, network, paths, predict_set
from model.domains import (DARK, EFFECT_NAMES, ENSEMBLE, ENSEMBLE_FUSE, EXPERT_EFFECTS, MIXED,
                           MODEL_LABELS, MOTION_BLUR, NORMAL, TRAINED_MODELS)
from model.ensemble import choice_counts, fusion_weights, route_choice
from model.errors import UserError
from model.evalsets import JPEG_QUALITY
from model.images import decode_image

log = logging.getLogger(__name__)

CLEAN, DARKNESS, BLUR, LOW_RES = "clean", "darkness", "motion_blur", "low_resolution"
CORRUPTIONS = (DARKNESS, BLUR, LOW_RES)
CORRUPTION_LABELS = {CLEAN: "clean", DARKNESS: "darkness", BLUR: "motion blur",
                     LOW_RES: "low resolution"}
PARAMETER_NAMES = {DARKNESS: "brightness factor", BLUR: "blur length (px)",
                   LOW_RES: "downscale factor"}
DEFAULT_SEVERITIES = {DARKNESS: (0.8, 0.65, 0.5, 0.35, 0.2), BLUR: (10, 20, 30, 40, 50),
                      LOW_RES: (0.8, 0.65, 0.5, 0.35, 0.25)}
FORK_SEVERITY = 3
FORK_PARAMETERS = {DARKNESS: effects.DARK_FACTOR, BLUR: effects.BLUR_LENGTH,
                   LOW_RES: effects.RESOLUTION_FACTOR}
assert all(DEFAULT_SEVERITIES[c][FORK_SEVERITY - 1] == FORK_PARAMETERS[c] for c in CORRUPTIONS)
SEVERITY_FLAGS = {DARKNESS: "--dark_factors", BLUR: "--blur_lengths",
                  LOW_RES: "--resolution_factors"}
_APPLY = {DARKNESS: effects.darken, BLUR: effects.motion_blur, LOW_RES: effects.low_resolution}

# The networks, in the order they run: the experts (the ensembles' members, in the domain
# classifier's class order), then the generalist.
NETWORKS = TRAINED_MODELS
ENSEMBLES = (ENSEMBLE, ENSEMBLE_FUSE)
WEIGHT_FLAGS = {NORMAL: "--weights_normal", DARK: "--weights_dark",
                MOTION_BLUR: "--weights_motion_blur", MIXED: "--weights_mixed"}
CSV_NAME, JSON_NAME, FIGURE_NAME = "robustness.csv", "robustness.json", "robustness.png"
CHUNK_DIR = "chunks"
KEY_VERSION = 1


# ------------------------------------------------------------------------------ corruptions

def _as_number(text, flag):
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UserError(f"{flag}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{flag}: {text!r} is not a finite number")
    return value


def check_severities(corruption, values):
    """The severities 1.. of one corruption as a tuple (ints for blur lengths, floats for
    factors); UserError (naming the flag) for an empty list, a factor outside (0, 1], a length
    that is not a whole number >= 1, or values that do not grow harsher with the severity."""
    flag = SEVERITY_FLAGS[corruption]
    numbers = [_as_number(v, flag) for v in values]
    if not numbers:
        raise UserError(f"{flag} needs at least one value (severity 1 first)")
    if corruption == BLUR:
        bad = [v for v in numbers if v < 1 or not v.is_integer()]
        if bad:
            raise UserError(f"{flag}: blur lengths must be whole numbers >= 1, got {bad[0]:g}")
        numbers = [int(v) for v in numbers]
        harsher = all(b > a for a, b in zip(numbers, numbers[1:]))
        order = "strictly increasing"
    else:
        bad = [v for v in numbers if not 0 < v <= 1]
        if bad:
            raise UserError(f"{flag}: factors must be in (0, 1], got {bad[0]:g}")
        harsher = all(b < a for a, b in zip(numbers, numbers[1:]))
        order = "strictly decreasing"
    if not harsher:
        raise UserError(f"{flag} must grow harsher with the severity ({order}), got "
                        f"{' '.join(f'{v:g}' for v in numbers)}")
    return tuple(numbers)


def corrupt(image, corruption, parameter):
    """A BGR uint8 image after `corruption` at `parameter`, stored and read back as a JPEG of
    the evaluation sets' quality; CLEAN returns the image unchanged."""
    if corruption == CLEAN:
        return image
    out = _APPLY[corruption](image, parameter)
    ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    return decode_image(buf.tobytes())


def corrupted_ground_truth(coco_gt, sizes, corruption, parameter):
    """The ground truth of the corrupted images: coco_gt itself, except for low resolution,
    whose images (those of `sizes`, {image id: (height, width) of the clean image}) get the
    new size and their annotations scaled to it."""
    if corruption != LOW_RES:
        return coco_gt
    images, anns = [], []
    for image_id, (h, w) in sizes.items():
        new_w, new_h = effects.low_resolution_size(w, h, parameter)
        images.append(dict(coco_gt.imgs[image_id], width=new_w, height=new_h))
        anns += [effects.scale_annotation(a, new_w / w, new_h / h, new_h, new_w)
                 for a in coco_gt.imgToAnns.get(image_id, [])]
    return evaluation.coco_from_dataset({
        "images": images, "annotations": anns,
        "categories": coco_gt.dataset.get("categories") or [{"id": 1, "name": "person"}]})


# ------------------------------------------------------------------------------ mPC and rPC

def _mean(values):
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def _ratio(value, clean):
    return None if value is None or not clean else value / clean


def robustness_metrics(clean_ap, corrupted_ap):
    """mPC and rPC of every model, overall and per corruption.

    clean_ap: {model: AP at severity 0}; corrupted_ap: {model: {corruption: [AP at severity
    1, 2, ...]}}. Returns {"mPC": {model: x}, "rPC": {model: x}, "per_corruption":
    {corruption: {model: {"mPC": x, "rPC": x}}}}; rPC is None where the clean AP is 0."""
    out = {"mPC": {}, "rPC": {}, "per_corruption": defaultdict(dict)}
    for model, clean in clean_ap.items():
        means = []
        for corruption, aps in corrupted_ap[model].items():
            m = _mean(aps)
            means.append(m)
            out["per_corruption"][corruption][model] = {"mPC": m, "rPC": _ratio(m, clean)}
        out["mPC"][model] = _mean(means)
        out["rPC"][model] = _ratio(out["mPC"][model], clean)
    out["per_corruption"] = dict(out["per_corruption"])
    return out


# ------------------------------------------------------------------------------ the models

def file_identity(path):
    """What a chunk's key records of an input file: resolved path, size, modification time."""
    st = os.stat(path)
    return {"path": str(Path(path).resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def find_network_weights(given):
    """({effect: weight file} of NETWORKS, notes). given: {effect: path or None}. A missing
    expert is a UserError naming its flag; a missing generalist is left out with a note
    (unless its file was given)."""
    chosen, notes = {}, []
    for effect in NETWORKS:
        name, flag = EFFECT_NAMES[effect], WEIGHT_FLAGS[effect]
        path = given.get(effect)
        if path is not None:
            if not Path(path).is_file():
                raise UserError(f"{name} weights not found: {path} ({flag})")
            chosen[effect] = Path(path)
            continue
        try:
            chosen[effect], _ = network.find_weights(effect, None)
        except UserError:
            folder = paths.expert_weights_dir(effect)
            if effect == MIXED:
                notes.append(f"generalist skipped: no weights.NNNN.h5 in {folder} (train it, "
                             f"or pass {flag} FILE)")
                continue
            raise UserError(f"no weights for the {name} expert in {folder} (weights.NNNN.h5): "
                            f"train them with python training/train_pose.py --effect "
                            f"'{effect}', or pass {flag} FILE") from None
    return chosen, notes


class PoseNetworks:
    """The pose networks of the sweep, loaded on first use (a rerun whose chunks are all
    finished loads nothing)."""

    def __init__(self, config, weights):
        self.config, self.weights = config, dict(weights)
        self.effects = [e for e in NETWORKS if e in self.weights]
        for effect in self.effects:          # every file checked before anything loads
            network.check_weight_coverage(config, self.weights[effect],
                                          f" ({WEIGHT_FLAGS[effect]})")
        self._models = None

    @property
    def models(self):
        if self._models is None:
            self._models = [network.load_pose_model(self.config, self.weights[e])
                            for e in self.effects]
            log.info("loaded %s (config %s)", ", ".join(
                f"{EFFECT_NAMES[e]} {self.weights[e]}" for e in self.effects), self.config)
        return self._models

    def identity(self):
        return {EFFECT_NAMES[e]: file_identity(self.weights[e]) for e in self.effects}


CLASSIFIER_HINT = ("train one with python train_domain_classifier/train.py (or python "
                   "run_experiment.py), or pass --classifier RUN_FOLDER|model_NNNN.pth")


class DomainClassifier:
    """The trained domain classifier on single BGR images -> (3,) probabilities (normal,
    dark, motion blur), each image prepared as train_domain_classifier/ensemble.py prepares
    the evaluation images; the checkpoint is found now, the network loaded on first use."""

    def __init__(self, spec=None, log_dir=paths.DOMAIN_LOG_DIR):
        from train_domain_classifier import runs
        try:
            self.path, self.why = runs.resolve_checkpoint(spec, log_dir, prefer_best=True)
        except UserError as e:
            where = f"no training run with checkpoints in {log_dir}" if spec is None else e
            raise UserError(f"no domain classifier: {where}; {CLASSIFIER_HINT}") from None
        if not Path(self.path).is_file():
            raise UserError(f"domain classifier checkpoint not found: {self.path}; "
                            f"{CLASSIFIER_HINT}")
        self.log_dir, self._net = log_dir, None

    def load(self):
        """Load the network (once)."""
        if self._net is not None:
            return
        import torch        # here: importing this module (the summary does) loads no torch
        from train_domain_classifier import data, inference as classifier_inference
        from train_domain_classifier.network import probabilities
        model, state, _ = classifier_inference.load_classifier(self.path, self.log_dir)
        self._net = (torch, data, probabilities, model, data.eval_size(state))
        log.info("domain classifier %s (%s): %s, fed %d px", self.path, self.why,
                 state["arch"], data.eval_size(state))

    def __call__(self, image_bgr):
        self.load()
        torch, data, probabilities, model, size = self._net
        rgb = data.prepare_image(image_bgr, NORMAL, size)
        x = data.normalise(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))
        with torch.inference_mode():
            return probabilities(model(x[None]))[0].double().numpy()

    def identity(self):
        return file_identity(self.path)


# ------------------------------------------------------------------------------ one image

def heatmap_grid(outputs, m, image_hw, settings):
    """Model m's part heatmaps on the working grid, the mean over the inputs (weights and
    order as model.inference's accumulator, so a single model's maps are the same)."""
    heat, weight = None, np.float64(1.0) / len(outputs)
    for scale, flipped, per_model in outputs:
        h = inference.heatmaps_to_grid(per_model[m][1][0], image_hw, scale, settings.resolution)
        if flipped:
            h = inference.unflip_heatmaps(h)
        heat = h * weight if heat is None else heat + h * weight
    return heat


def paf_grid(outputs, model_weights, image_hw, settings):
    """GridPafs of the models' PAFs weighted by model_weights (summing to 1; weight 0 left
    out), averaged over the inputs."""
    pafs = inference.GridPafs(image_hw, settings.resolution)
    for scale, flipped, per_model in outputs:
        for (paf, _), w in zip(per_model, model_weights):
            if w > 0:
                pafs.add(paf[0], scale, flipped, np.float64(w) / len(outputs))
    return pafs


def predict_image(models, effects_run, image, probs, settings, skip_below=0.0, timer=None):
    """People of every model on one BGR image: {effect: model.decode people} for each network
    (`effects_run`, the experts first), the routed and the fused ensemble; plus the routed
    expert's index and the fusion weights. Each network runs once; the heatmaps of each are
    resampled once and the fused heatmaps are their weighted sum (resampling is linear)."""
    timer = timer if timer is not None else defaultdict(float)
    hw, experts = image.shape[:2], len(EXPERT_EFFECTS)
    t0 = time.perf_counter()
    outputs = inference.network_outputs(models, image, settings)
    t1 = time.perf_counter()
    heats = [heatmap_grid(outputs, m, hw, settings) for m in range(len(models))]
    one_hot = np.eye(len(models))
    people = {e: inference.decode_maps(heats[m], paf_grid(outputs, one_hot[m], hw, settings),
                                       hw, settings) for m, e in enumerate(effects_run)}
    chosen = route_choice({0: probs}, [0])[0]
    people[ENSEMBLE] = people[EXPERT_EFFECTS[chosen]]
    w = fusion_weights(probs, skip_below)
    w = w / w.sum()          # as model.inference normalises per-image weights
    fused_heat = None
    for m in range(experts):
        if w[m] > 0:
            fused_heat = heats[m] * w[m] if fused_heat is None else fused_heat + heats[m] * w[m]
    weights = np.concatenate([w, np.zeros(len(models) - experts)])
    people[ENSEMBLE_FUSE] = inference.decode_maps(
        fused_heat, paf_grid(outputs, weights, hw, settings), hw, settings)
    timer["network"] += t1 - t0
    timer["decoding"] += time.perf_counter() - t1
    return people, chosen, w


# ------------------------------------------------------------------------------ one chunk

@dataclass
class SweepPlan:
    """What every chunk shares: the set, its first N images, the inference settings."""
    coco_root: Path
    data_type: str
    coco_gt: object                   # pycocotools COCO of the clean set
    images: list                      # the first N image dicts
    settings: inference.InferenceSettings
    config: str
    skip_below: float = 0.0
    seed: int = 0
    severities: dict = field(default_factory=lambda: dict(DEFAULT_SEVERITIES))

    def chunks(self):
        """[(corruption, severity, parameter)]: the clean images first."""
        return [(CLEAN, 0, None)] + [(c, k + 1, p) for c in CORRUPTIONS
                                     for k, p in enumerate(self.severities[c])]


def make_plan(coco_root, data_type, num_images, settings, config, skip_below=0.0, seed=0,
              severities=None):
    """A SweepPlan of the first `num_images` images of `data_type` (None: all, at most 1000,
    as the evaluation); UserError for a missing set, a count out of range or skip_below
    outside [0, 1)."""
    if not 0 <= skip_below < 1:
        raise UserError(f"--fuse_skip_below must be in [0, 1), got {skip_below}")
    coco = evaluation.load_annotations(
        paths.annotation_file(coco_root, data_type),
        hint=f"; make the evaluation sets with python dataset/make_domain_datasets.py "
             f"--coco_root {coco_root}")
    available = len(coco.dataset["images"])
    if available == 0:
        raise UserError(f"{data_type} has no images")
    num = evaluation.default_num_images(available) if num_images is None else num_images
    if not 1 <= num <= available:
        raise UserError(f"--num_images must be between 1 and {available} (the images of "
                        f"{data_type}), got {num}")
    return SweepPlan(Path(coco_root), data_type, coco, evaluation.first_images(coco, num),
                     settings, config, float(skip_below), int(seed),
                     dict(severities or DEFAULT_SEVERITIES))


def chunk_key(plan, nets, classifier, corruption, parameter):
    """Everything a chunk's numbers depend on."""
    return {"version": KEY_VERSION, "data_type": plan.data_type,
            "annotations": file_identity(paths.annotation_file(plan.coco_root,
                                                               plan.data_type)),
            "image_ids": [int(im["id"]) for im in plan.images], "corruption": corruption,
            "parameter": parameter, "jpeg_quality": JPEG_QUALITY, "config": plan.config,
            "settings": settings_dict(plan.settings), "skip_below": plan.skip_below,
            "networks": nets.identity(), "classifier": classifier.identity()}


def settings_dict(settings):
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(settings).items()}


def _model_names(nets):
    return [EFFECT_NAMES[e] for e in nets.effects + list(ENSEMBLES)]


def run_chunk(plan, nets, classifier, corruption, severity, parameter, progress=True):
    """Predict and score one (corruption, severity) chunk: the chunk's record (module doc)."""
    load_start = time.perf_counter()
    models = nets.models                # loading, the first time, is not the chunk's time
    if hasattr(classifier, "load"):
        classifier.load()
    start, timer = time.perf_counter(), defaultdict(float)
    folder = paths.image_dir(plan.coco_root, plan.data_type)
    effects_run = nets.effects
    records = {e: [] for e in effects_run + list(ENSEMBLES)}
    sizes, skipped, chosen, probabilities = {}, [], {}, []
    desc = f"{corruption} {severity}"
    for im in tqdm(plan.images, desc=desc, unit="img", disable=not progress, leave=False):
        image_id = int(im["id"])
        t0 = time.perf_counter()
        image, reason = predict_set.read_set_image(folder / im["file_name"], im)
        if image is None:
            skipped.append([image_id, reason])
            log.warning("skipped image %d: %s", image_id, reason)
            continue
        sizes[image_id] = image.shape[:2]
        image = corrupt(image, corruption, parameter)
        t1 = time.perf_counter()
        probs = np.asarray(classifier(image), np.float64)
        timer["corrupt"] += t1 - t0
        timer["classifier"] += time.perf_counter() - t1
        people, chosen[image_id], _ = predict_image(models, effects_run, image, probs,
                                                    plan.settings, plan.skip_below, timer)
        probabilities.append(probs)
        for effect, ppl in people.items():
            records[effect].extend(decode.people_to_coco(ppl, image_id))
    t2 = time.perf_counter()
    predicted = list(sizes)
    gt = corrupted_ground_truth(plan.coco_gt, sizes, corruption, parameter)
    stats, notes = {}, {}
    for effect, recs in records.items():
        stats[EFFECT_NAMES[effect]], note = evaluation.keypoint_stats(gt, recs, predicted)
        if note:
            notes[EFFECT_NAMES[effect]] = note
    timer["evaluation"] = time.perf_counter() - t2
    seconds = time.perf_counter() - start
    return {"corruption": corruption, "severity": severity, "parameter": parameter,
            "image_ids": predicted, "skipped": skipped, "stats": stats, "notes": notes,
            "predictions": {EFFECT_NAMES[e]: len(r) for e, r in records.items()},
            "routed_images": choice_counts(chosen),
            "mean_domain_probabilities": [round(float(v), 4) for v in np.mean(
                probabilities, axis=0)] if probabilities else None,
            "seconds": round(seconds, 3), "load_seconds": round(start - load_start, 3),
            "seconds_per_image": round(seconds / max(len(predicted), 1), 4),
            "stage_seconds": {k: round(v, 3) for k, v in timer.items()}}


def chunk_file(out_dir, corruption, severity):
    return Path(out_dir) / CHUNK_DIR / f"{corruption}_{severity}.json"


def read_finished_chunk(path, key):
    """The chunk record at `path` if it is complete and was made with `key`, else None."""
    if not path.is_file():
        return None
    try:
        chunk = files.read_json(path, "robustness chunk")
    except UserError as e:
        log.warning("%s; it is redone", e)
        return None
    if not isinstance(chunk, dict) or chunk.get("key") != key or "stats" not in chunk:
        return None
    return chunk


# ------------------------------------------------------------------------------ the sweep

def run_sweep(plan, nets, classifier, out_dir, overwrite=False, progress=True, notes=()):
    """Every chunk of the plan (finished ones kept unless overwrite), then robustness.csv and
    robustness.json in out_dir. Returns the report (the JSON's content)."""
    out_dir = files.ensure_writable_dir(out_dir)
    for name in (CSV_NAME, JSON_NAME, FIGURE_NAME):
        files.remove_stale_temporaries(out_dir / name)
    chunks, ran = [], 0
    for corruption, severity, parameter in plan.chunks():
        path = chunk_file(out_dir, corruption, severity)
        files.remove_stale_temporaries(path)
        key = chunk_key(plan, nets, classifier, corruption, parameter)
        chunk = None if overwrite else read_finished_chunk(path, key)
        if chunk is None:
            chunk = dict(run_chunk(plan, nets, classifier, corruption, severity, parameter,
                                   progress), key=key, seed=plan.seed)
            files.write_json(path, chunk, indent=1)
            ran += 1
            status = f"{chunk['seconds']:.1f} s"
        else:
            status = "finished before, kept"
        aps = ", ".join(f"{m} {s['AP']:.3f}" for m, s in chunk["stats"].items())
        log.info("%s severity %d (%s): %d images, AP %s; %s", corruption, severity,
                 "-" if parameter is None else f"{parameter:g}", len(chunk["image_ids"]),
                 aps, status)
        chunks.append(chunk)
    report = build_report(plan, nets, classifier, chunks, list(notes))
    report["chunks_run"] = ran
    write_outputs(out_dir, report)
    return report


def build_report(plan, nets, classifier, chunks, notes):
    """robustness.json's content from the chunk records."""
    models = _model_names(nets)
    clean = chunks[0]
    ap = {m: {CLEAN: clean["stats"][m]["AP"]} for m in models}
    for c in CORRUPTIONS:
        for m in models:
            ap[m][c] = [ch["stats"][m]["AP"] for ch in chunks if ch["corruption"] == c]
    metrics = robustness_metrics({m: ap[m][CLEAN] for m in models},
                                 {m: {c: ap[m][c] for c in CORRUPTIONS} for m in models})
    corrupted = sum(len(ch["image_ids"]) for ch in chunks)
    seconds = sum(ch["seconds"] for ch in chunks)
    stages = defaultdict(float)
    for ch in chunks:
        for k, v in ch["stage_seconds"].items():
            stages[k] += v
    for ch in chunks:
        notes += [f"{ch['corruption']} severity {ch['severity']}: {m}: {n}"
                  for m, n in ch["notes"].items()]
    skipped = clean["skipped"]
    if skipped:
        notes.append(f"{len(skipped)} of {len(plan.images)} images skipped (unreadable), "
                     f"e.g. {skipped[0][0]}: {skipped[0][1]}")
    return {
        "data_type": plan.data_type, "num_images": len(plan.images),
        "images_evaluated": len(clean["image_ids"]), "seed": plan.seed,
        "randomness": "none: the corruptions, networks and decoder are deterministic",
        "fork_severity": FORK_SEVERITY,
        "corruptions": {c: {"label": CORRUPTION_LABELS[c], "parameter": PARAMETER_NAMES[c],
                            "severities": list(plan.severities[c]),
                            "fork_setting": FORK_PARAMETERS[c]} for c in CORRUPTIONS},
        "models": models,
        "model_labels": {m: MODEL_LABELS[e] for m, e in
                         zip(models, nets.effects + list(ENSEMBLES))},
        "ap": ap, **metrics,
        "routed_images": {f"{ch['corruption']}/{ch['severity']}": ch["routed_images"]
                          for ch in chunks},
        "timing": {"seconds": round(seconds, 2), "corrupted_images": corrupted,
                   "seconds_per_corrupted_image": round(seconds / max(corrupted, 1), 4),
                   "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
                   "networks_per_image": len(nets.effects)},
        "settings": {"config": plan.config, "inference": settings_dict(plan.settings),
                     "fuse_skip_below": plan.skip_below, "jpeg_quality": JPEG_QUALITY,
                     "coco_root": str(plan.coco_root)},
        "weights": {EFFECT_NAMES[e]: str(nets.weights[e]) for e in nets.effects},
        "classifier": str(classifier.path), "notes": notes}


def csv_rows(report):
    """(corruption, severity, parameter, model, AP) rows: the clean images as severity 0."""
    rows = [(CLEAN, 0, "", m, f"{report['ap'][m][CLEAN]:.4f}") for m in report["models"]]
    for c in CORRUPTIONS:
        for k, p in enumerate(report["corruptions"][c]["severities"]):
            rows += [(c, k + 1, f"{p:g}", m, f"{report['ap'][m][c][k]:.4f}")
                     for m in report["models"]]
    return rows


def write_outputs(out_dir, report):
    files.write_csv(Path(out_dir) / CSV_NAME, csv_rows(report),
                    ["corruption", "severity", "parameter", "model", "AP"])
    files.write_json(Path(out_dir) / JSON_NAME, report, indent=1)
