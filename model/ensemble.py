"""The expert ensemble: hard routing (the fork's), map fusion (ours) and the per-image oracle.

route   for each image, the predictions of the expert whose domain the classifier finds most
        probable (argmax of effect_prob; a tie goes to the earlier expert: normal, dark,
        motion blur).
fuse    for each image, run the experts, average their heatmaps and PAFs weighted by the
        domain probabilities (normalised to sum 1), then decode once
        (model.predict_set.predict_dataset with each image's weights: batched and pipelined
        like the evaluation; the average is taken on the decoder's working grid, after the
        resolution step, which is linear, so it equals averaging the full-resolution maps and
        resampling once). An expert whose weight is 0 (probability below `skip_below`,
        default 0, or exactly 0) is not run on that image and the others are renormalised.
        An image that weighs one expert alone takes that expert's people from its evaluation
        run on the set, when the run used the same weight file, configuration, settings and
        backend (the fusion of one map is that map): the demo's fused ensembles run a network
        on only the few images whose classifier is unsure.
        The networks run on TensorFlow, or as exported .onnx models on ONNX Runtime or
        OpenVINO (`backend`, model.backends); the average and the decoder are the same.
oracle  an upper bound of any per-image choice of one expert: the expert whose predictions
        score best against the ground truth; score = sum of the OKS of the Hungarian-matched
        (prediction, ground truth) pairs / max(#predictions, #ground-truth people), so missed
        people and extra predictions both cost; an image with neither scores 1. Ground-truth
        people that COCOeval ignores (crowd, no labelled keypoint) are left out.
"""
import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from model import backends, eval_run, evaluation, files, inference, network, predict_set
from model.domains import EFFECT_NAMES, ENSEMBLE, ENSEMBLE_FUSE, EXPERT_EFFECTS
from model.errors import UserError
from model.files import read_json
from model.keypoints import coco_oks, evaluated_gt, group_by_image, records_to_array
from model.paths import DOMAIN_RESULTS_DIR, image_dir, image_file_name
from model.recipes import get_recipe
from model.runs import (ENSEMBLE_REPORT_CSV, ENSEMBLE_REPORT_JSON, ORACLE_JSON, RUN_JSON,
                        RunLayout, create_command)
from model.uncertainty_set import load_ground_truth

log = logging.getLogger(__name__)

NUM_DOMAINS = 3          # effect_prob order: normal, dark, motion blur (EXPERT_EFFECTS)
STAT_NAMES = evaluation.STAT_NAMES
METHOD_EFFECT = {"route": ENSEMBLE, "fuse": ENSEMBLE_FUSE}
DEFAULT_CONFIG = "full"     # eval/eval_coco2014_single_scale.py's default --config


def load_domain_probs(path, image_ids, hint=""):
    """train_domain_classifier/results/<X>.json -> {image_id: (3,) probabilities summing to 1}.

    UserError for a malformed file or an image of `image_ids` without an entry (named)."""
    data = read_json(path, "domain probabilities")
    if not isinstance(data, list):
        raise UserError(f"domain probabilities {path}: expected a list of "
                        f"{{image_id, effect_prob}}, got {type(data).__name__}")
    probs = {}
    for i, entry in enumerate(data):
        try:
            image_id = int(entry["image_id"])
            p = np.asarray(entry["effect_prob"], np.float64)
        except (TypeError, KeyError, ValueError):
            raise UserError(f"domain probabilities {path}: entry {i} lacks image_id or "
                            f"effect_prob") from None
        if p.shape != (NUM_DOMAINS,) or not np.isfinite(p).all() or (p < 0).any() \
                or p.sum() <= 0:
            raise UserError(f"domain probabilities {path}: image {image_id} has effect_prob "
                            f"{entry['effect_prob']!r}; expected 3 non-negative numbers "
                            f"(normal, dark, motion blur)")
        probs[image_id] = p / p.sum()
    missing = [i for i in image_ids if int(i) not in probs]
    if missing:
        raise UserError(f"domain probabilities {path} have no entry for image id {missing[0]} "
                        f"({len(missing)} of {len(image_ids)} evaluated images missing){hint}")
    return probs


def route_choice(probs, image_ids):
    """{image_id: index of the most probable domain's expert}."""
    return {int(i): int(np.argmax(probs[int(i)])) for i in image_ids}


def select_records(expert_records, choice):
    """Each image's records from the expert `choice[image_id]` picked; images outside
    `choice` are dropped."""
    by_expert = [group_by_image(recs) for recs in expert_records]
    out = []
    for image_id, e in choice.items():
        out.extend(by_expert[e].get(image_id, []))
    return out


def fusion_weights(probs, skip_below=0.0):
    """Domain probabilities -> expert weights summing to 1; experts below `skip_below` get 0
    (unless that would drop all, then the most probable alone is kept)."""
    w = np.asarray(probs, np.float64).copy()
    w[w < skip_below] = 0
    if w.sum() <= 0:
        w = np.zeros_like(w)
        w[int(np.argmax(probs))] = 1
    return w / w.sum()


def image_score(records, gt_anns):
    """Score of one expert's predictions on one image against its ground truth (module doc)."""
    gts = evaluated_gt(gt_anns)
    kps, _ = records_to_array(records)
    if len(kps) == 0 and len(gts) == 0:
        return 1.0
    if len(kps) == 0 or len(gts) == 0:
        return 0.0
    oks = coco_oks(kps, gts)
    rows, cols = linear_sum_assignment(oks, maximize=True)
    return float(oks[rows, cols].sum() / max(len(kps), len(gts)))


def oracle_choice(expert_records, gt_by_image, image_ids):
    """{image_id: index of the expert with the best image_score} (ties: the earlier expert)."""
    by_expert = [group_by_image(recs) for recs in expert_records]
    choice = {}
    for image_id in image_ids:
        gts = gt_by_image.get(int(image_id), [])
        scores = [image_score(b.get(int(image_id), []), gts) for b in by_expert]
        choice[int(image_id)] = int(np.argmax(scores))
    return choice


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


# ------------------------------------------------------ train_expert_classifier/ensemble.py

# ------------------------------------------------------ train_expert_classifier/ensemble.py

def domain_results_hint(data_type):
    return (f"; create them with: python train_domain_classifier/ensemble.py "
            f"--coco_dataType {data_type}")


def load_experts(layout, data_type, num_images, required=True):
    """The three experts' records, or None for a missing one when not `required`."""
    out = []
    for effect in EXPERT_EFFECTS:
        try:
            out.append(layout.read_results(data_type, effect, num_images))
        except UserError:
            if required:
                raise
            out.append(None)
    return out


def choice_counts(choice):
    counts = np.bincount(list(choice.values()), minlength=NUM_DOMAINS) if choice else \
        np.zeros(NUM_DOMAINS, int)
    return {EFFECT_NAMES[e]: int(c) for e, c in zip(EXPERT_EFFECTS, counts)}


def compare(coco_gt, image_ids, entries):
    """COCO keypoint metrics of several prediction sets on the same images.

    entries: {label: (records, seconds or None)} -> list of rows {model, AP..., seconds}."""
    rows = []
    for label, (records, seconds) in entries.items():
        stats, note = evaluation.keypoint_stats(coco_gt, records, image_ids)
        rows.append({"model": label, **stats, "predictions": len(records), "seconds": seconds,
                     "note": note})
    return rows


def write_report(run_dir, report):
    """ensemble_report.json and .csv in the method's run folder."""
    files.write_json(run_dir / ENSEMBLE_REPORT_JSON, report, indent=1)
    header = ["model"] + list(STAT_NAMES) + ["predictions", "seconds"]
    files.write_csv(run_dir / ENSEMBLE_REPORT_CSV,
                    [[r["model"]] + [f"{r[k]:.4f}" for k in STAT_NAMES]
                     + [r["predictions"], "" if r["seconds"] is None else f"{r['seconds']:.3f}"]
                     for r in report.get("comparison", [])], header)


def _num_images(layout, method, data_type, coco_gt, num_images):
    """The image count of the experts' runs; a fused ensemble without runs to follow takes
    the evaluation's default."""
    if num_images is not None:
        return num_images
    try:
        return layout.find_num_images(data_type)
    except UserError:
        if method == "route" or coco_gt is None:
            raise
        return evaluation.default_num_images(len(coco_gt.dataset["images"]))


def _fuse(layout, data_type, coco_root, num_images, image_ids, probs, coco_gt, fuse_options,
          report, run_info):
    """The fused ensemble's (records, seconds, predicted image ids); fills report, run_info."""
    opts = dict(fuse_options or {})
    skip_below = opts.pop("skip_below", 0.0)
    backend = opts.pop("backend", backends.TENSORFLOW)
    config, settings, weights = fuse_plan(layout.results_dir, data_type, num_images,
                                          backend=backend, **opts)
    listed = coco_gt.imgs if coco_gt is not None else {}
    images = [{"file_name": image_file_name(data_type, i), **listed.get(i, {}), "id": i}
              for i in image_ids]
    records, seconds, info = fuse_set(
        data_type, coco_root, images, probs, (config, settings), weights, skip_below,
        backend=backend, expert_runs=[layout.folder(data_type, e, num_images)
                                      for e in EXPERT_EFFECTS])
    report.update(info)
    skipped = {i for i, _ in info["skipped_images"]}
    run_info.update(config=config, settings=info["settings"], weights=info["weights"],
                    skipped=info["skipped_images"], skip_below=skip_below, backend=backend)
    return records, seconds, [i for i in image_ids if i not in skipped]


def _comparison(report, method, coco_gt, image_ids, experts, records, seconds, choice,
                oracle, out_dir, data_type, num_images):
    """report["comparison"] (and the oracle's numbers): the method against each expert and
    the per-image oracle, on the predicted images."""
    if any(e is None for e in experts):
        missing = [EFFECT_NAMES[x] for x, e in zip(EXPERT_EFFECTS, experts) if e is None]
        report["notes"].append(f"predictions of the {', '.join(missing)} expert(s) missing: "
                               f"oracle and expert rows skipped; create them with: "
                               + "; ".join(create_command(data_type, x, num_images)
                                           for x, e in zip(EXPERT_EFFECTS, experts)
                                           if e is None))
        report["comparison"] = compare(coco_gt, image_ids, {method: (records, seconds)})
        return
    entries = {EFFECT_NAMES[x]: (e, None) for x, e in zip(EXPERT_EFFECTS, experts)}
    entries[method] = (records, seconds)
    if oracle:
        gt_by_image = {i: coco_gt.imgToAnns.get(i, []) for i in image_ids}
        best, oracle_seconds = timed(oracle_choice, experts, gt_by_image, image_ids)
        oracle_records = select_records(experts, best)
        files.write_json(out_dir / ORACLE_JSON, oracle_records)
        entries["oracle"] = (oracle_records, oracle_seconds)
        report["oracle_images"] = choice_counts(best)
        if method == "route":
            report["route_agrees_with_oracle"] = float(np.mean(
                [choice[i] == best[i] for i in image_ids])) if image_ids else None
    report["comparison"] = compare(coco_gt, image_ids, entries)


def run(method, data_type, results_dir, coco_root, domain_results=None, num_images=None,
        oracle=True, fuse_options=None):
    """train_expert_classifier/ensemble.py: write the ensemble's predictions where the
    evaluation reads them, and (with ground truth) its report against the experts and the
    oracle. Returns the report dict."""
    start = time.time()
    layout = RunLayout(results_dir)
    effect = METHOD_EFFECT[method]
    domain_results = Path(domain_results or DOMAIN_RESULTS_DIR / f"{data_type}.json")
    coco_gt = load_ground_truth(coco_root, data_type)
    num_images = _num_images(layout, method, data_type, coco_gt, num_images)
    experts = load_experts(layout, data_type, num_images, required=method == "route")
    if coco_gt is not None:
        for x, recs in zip(EXPERT_EFFECTS, experts):
            if recs is not None:
                evaluation.check_records(recs, coco_gt, layout.results_file(
                    data_type, x, num_images))
    image_ids = layout.evaluated_image_ids(data_type, num_images, coco_gt,
                                           [e for e in experts if e is not None])
    probs = load_domain_probs(domain_results, image_ids, domain_results_hint(data_type))
    log.info("%s ensemble of %s: %d images, domain probabilities from %s", method, data_type,
             len(image_ids), domain_results)
    report = {"method": method, "data_type": data_type, "num_images": num_images,
              "domain_results": str(domain_results), "notes": [],
              "randomness": "none: the ensemble is deterministic (no seed)"}
    run_info = {"method": method, "domain_results": str(domain_results)}
    choice = None
    if method == "route":
        choice, seconds = timed(route_choice, probs, image_ids)
        records = select_records(experts, choice)
        report["routed_images"] = choice_counts(choice)
        predicted = list(image_ids)
    else:
        records, seconds, predicted = _fuse(layout, data_type, coco_root, num_images,
                                            image_ids, probs, coco_gt, fuse_options, report,
                                            run_info)
    report["seconds"] = round(seconds, 3)
    report["seconds_per_image"] = round(seconds / max(len(image_ids), 1), 5)
    out = layout.results_file(data_type, effect, num_images)
    files.write_json(out, records)
    # run.json as the evaluation writes it: eval_coco2014_single_scale.py --compute_keypoint
    # False evaluates exactly these images and reports this prediction time.
    files.write_json(out.parent / RUN_JSON, dict(
        run_info, image_ids=predicted, prediction_seconds=round(seconds, 3),
        num_records=len(records)), indent=1)
    report["predictions"] = len(records)
    report["results_file"] = str(out)
    log.info("%s: %d predictions of %d images in %.2f s, written to %s", method, len(records),
             len(predicted), seconds, out)
    if coco_gt is None:
        report["notes"].append(f"no ground truth for {data_type}: AP and the oracle skipped")
    else:
        _comparison(report, method, coco_gt, predicted, experts, records, seconds, choice,
                    oracle, out.parent, data_type, num_images)
    for note in report["notes"]:
        log.warning("%s", note)
    report["total_seconds"] = round(time.time() - start, 2)
    write_report(out.parent, report)
    return report


def fuse_plan(results_dir, data_type, num_images, config=None, weights=None,
              scale_search=None, scale_mode=None, flip=None, resolution=None,
              backend=backends.TENSORFLOW):
    """(config name, model.inference.InferenceSettings, weights) of the fused ensemble.

    Each value given wins; otherwise what the experts' evaluation runs recorded in their
    run.json (so the fusion averages the maps the experts were scored with; recorded weights
    of the other backend's kind are replaced by the file beside them, weights.0100.onnx for
    weights.0100.h5 and back, model.backends.recorded_file); otherwise the evaluation's
    defaults (config "full", the configuration's recipe scales (model.recipes), each
    expert's default file for `backend`)."""
    layout = RunLayout(results_dir)
    runs = [layout.read_settings(data_type, effect, num_images) for effect in EXPERT_EFFECTS]
    if config is None:
        recorded = sorted({r["config"] for r in runs if r.get("config")})
        if len(recorded) > 1:
            raise UserError(f"the experts' runs on {data_type} used different network "
                            f"configurations ({', '.join(recorded)}); pass --config")
        config = recorded[0] if recorded else DEFAULT_CONFIG
    cfg = network.get_config(config)
    base = next((r["settings"] for r in runs if isinstance(r.get("settings"), dict)), None)
    if base:
        base = dict(base, scale_search=tuple(base.get("scale_search", (1.0,))))
        fields = {f.name for f in dataclasses.fields(inference.InferenceSettings)}
        settings = inference.InferenceSettings(**{k: v for k, v in base.items() if k in fields})
    else:
        recipe = get_recipe(cfg.name)
        settings = inference.InferenceSettings(tuple(recipe.eval_scale_search),
                                               recipe.eval_scale_mode, cfg.input_size)
    given = {"scale_search": None if scale_search is None else tuple(scale_search),
             "scale_mode": scale_mode, "flip": flip, "resolution": resolution}
    settings = dataclasses.replace(settings, **{k: v for k, v in given.items() if v is not None})
    if weights is None:
        weights = [r.get("weights") for r in runs]
        weights = [backends.recorded_file(backend, w, cfg.name) for w in weights]
    return cfg.name, settings, list(weights)


def _reused(images, expert_weights, expert_runs, keys):
    """({image id: (expert index, records)} of the images whose whole weight is on one
    expert that a matching evaluation run predicted, the seconds those runs spent on them)."""
    runs = [None if d is None else eval_run.reusable_predictions(d, k)
            for d, k in zip(expert_runs or [None] * len(keys), keys)]
    reused, seconds = {}, 0.0
    for im in images:
        i = int(im["id"])
        weighed = np.flatnonzero(expert_weights[i])
        run = runs[weighed[0]] if len(weighed) == 1 else None
        if run is not None and i in run[0]:
            reused[i] = (int(weighed[0]), run[0][i])
            seconds += run[1]
    return reused, seconds


def fuse_set(data_type, coco_root, images, probs, settings, weights=None,
             skip_below=0.0, progress=True, backend=backends.TENSORFLOW, expert_runs=None):
    """Fused predictions of every image: (records, seconds of inference, info).

    images: COCO image dicts (id, file_name, optional height and width); each image averages
    the experts' maps with weights fusion_weights(its domain probabilities, skip_below), and
    an expert with weight 0 is not run on it. settings: (config name,
    model.inference.InferenceSettings); weights: three weight files (None, or None for one:
    that expert's default, model.backends.find_model_file), Keras weights for the
    tensorflow backend, exported .onnx models for onnxruntime and openvino. expert_runs: the
    experts' evaluation run folders on this set (or None): an image whose whole weight is on
    one expert takes that expert's people from its run, when the run predicted it with the
    same weight file, configuration, settings and backend (the fusion of one map is that
    map); the seconds then include what the run spent on those images."""
    config, settings = settings
    chosen = [backends.find_model_file(backend, e, w, config) for e, w in
              zip(EXPERT_EFFECTS, weights or [None] * len(EXPERT_EFFECTS))]
    for effect, (path, note) in zip(EXPERT_EFFECTS, chosen):
        backends.check_model_file(backend, path, config)
        log.info("fuse: %s expert weights %s (%s)", EFFECT_NAMES[effect], path, note)
    expert_weights = {int(im["id"]): fusion_weights(probs[int(im["id"])], skip_below)
                      for im in images}
    reused, reused_seconds = _reused(images, expert_weights, expert_runs, [
        eval_run.prediction_key(backend, p, config, settings) for p, _ in chosen])
    todo = [im for im in images if int(im["id"]) not in reused]
    log.info("fuse: %d of %d images take the predictions of the one expert they weigh; "
             "%d to predict", len(reused), len(images), len(todo))
    # Only the experts some image still needs are loaded (each load takes a second or more);
    # predict_dataset never calls an expert no image weighs.
    needed = [any(expert_weights[int(im["id"])][k] > 0 for im in todo)
              for k in range(len(chosen))]
    (models, load_seconds) = timed(lambda: [
        backends.load_model(backend, config, p) if need else None
        for (p, _), need in zip(chosen, needed)])
    records, pred = predict_set.predict_dataset(
        models, todo, image_dir(coco_root, data_type), settings,
        weights=expert_weights.__getitem__, progress=progress)
    records = sorted(records + [r for _, recs in reused.values() for r in recs],
                     key=lambda r: (r["image_id"], -r["score"]))
    predicted = sorted(pred["image_ids"] + list(reused))
    used = sum((expert_weights[i] > 0).astype(int) for i in predicted) \
        if predicted else np.zeros(len(EXPERT_EFFECTS), int)
    taken = np.bincount([m for m, _ in reused.values()], minlength=len(EXPERT_EFFECTS))
    skipped = [[int(i), reason] for i, reason in pred["skipped"]]
    if skipped:
        log.warning("fuse: %d of %d images skipped", len(skipped), len(images))
    info = {"config": config, "backend": backend,
            "weights": [str(p) for p, _ in chosen], "weights_notes": [n for _, n in chosen],
            "settings": {k: (list(v) if isinstance(v, tuple) else v)
                         for k, v in vars(settings).items()},
            "skip_below": skip_below, "network_runs": int(used.sum() - taken.sum()),
            "expert_runs": {EFFECT_NAMES[e]: int(u) for e, u in zip(EXPERT_EFFECTS, used)},
            "reused_images": {EFFECT_NAMES[e]: int(t) for e, t in zip(EXPERT_EFFECTS, taken)},
            "reused_seconds": round(reused_seconds, 3),
            "skipped_images": skipped, "model_load_seconds": round(load_seconds, 2),
            "loaded_models": [EFFECT_NAMES[e] for e, need in zip(EXPERT_EFFECTS, needed)
                              if need]}
    return records, pred["seconds"] + reused_seconds, info
