"""One model's evaluation run on one set (eval/eval_coco2014_single_scale.py): predict with
resume, or reuse saved results, then evaluate, all inside the run folder (model.runs).

Resume: while predicting, every 25 decoded images, and on an interrupt or an error once the
worker threads have stopped, the predictions so far are checkpointed to partial_results.json
together with the key of the run (backend, weights with the file's size and time, config,
inference settings, image ids; the test-time correction of a corrected model such as the
normal expert + gamma). A rerun with the same key predicts only the images not yet done; a
checkpoint of any other key, or a damaged one (not JSON, images outside the run, records
of images it does not list), is set aside with a note in the log that says why and that
all images are predicted again, so a changed setting, retrained weights or another backend
(model.backends) never mixes into old predictions (a key written before the backend was
part of it is TensorFlow's; one written before the weight file's size and time were is
compared without them). The partial file is removed once the results JSON and run.json are
written; temporaries that killed runs left in the run folder are removed on start.

run.json keeps the key, so that another run can take this one's people for an image whose
network input would be the same (reusable_predictions): the fused ensemble for an image that
weighs one expert alone, the gamma baseline for an image the correction leaves as it is.
"""
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from model import backends, effects, evaluation, files, network, paths, predict_set, runs
from model.domains import ENSEMBLE
from model.errors import UserError

log = logging.getLogger("eval")

SHOWN_REASONS = 3     # skipped images whose reasons the log and metrics.csv name


def _flags(args):
    """The command line's flags as JSON values (paths as strings)."""
    return {k: v if isinstance(v, (int, float, bool, str, list, type(None))) else str(v)
            for k, v in vars(args).items()}


# Fields of the key that a checkpoint written before they existed does not record: not compared.
_OPTIONAL_KEY_FIELDS = ("weights_file",)


def weights_fingerprint(weights):
    """Size and modification time of the weight file: retrained weights under the same name
    are another run."""
    st = Path(weights).stat()
    return {"bytes": int(st.st_size), "mtime_ns": int(st.st_mtime_ns)}


def _content_problem(done, key):
    """What makes a checkpoint's content unusable for `key` (None when it is sound)."""
    ids, records, seconds = done.get("image_ids"), done.get("records"), done.get("seconds")
    if not isinstance(ids, list) or not all(type(i) is int for i in ids):
        return "image_ids is not a list of image ids"
    predicted = set(ids)
    if len(predicted) != len(ids) or not predicted <= set(key["image_ids"]):
        return "image_ids repeats images or names images outside this run"
    if not isinstance(records, list) or not all(
            isinstance(r, dict) and r.get("image_id") in predicted for r in records):
        return "records hold people of images it does not list as predicted"
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds >= 0:
        return "seconds is not a duration"
    return None


def _read_partial(partial, key):
    """(checkpoint, None) when `partial` holds an interrupted prediction of this key whose
    content checks out; (None, why not) when it holds something else; (None, None) when
    there is none."""
    if not partial.is_file():
        return None, None
    try:
        done = json.loads(partial.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"is damaged ({type(e).__name__})"
    if not isinstance(done, dict) or not isinstance(done.get("key"), dict):
        return None, "is not a checkpoint of an evaluation"
    earlier = done["key"]
    if "backend" not in earlier:   # written before --backend: TensorFlow's
        earlier = dict(earlier, backend=backends.TENSORFLOW)
    changed = sorted(k for k in set(key) | set(earlier)
                     if not (k in _OPTIONAL_KEY_FIELDS and k not in earlier)
                     and earlier.get(k) != key.get(k))
    held = len(done["image_ids"]) if isinstance(done.get("image_ids"), list) else 0
    if changed:
        return None, f"holds {held} images of a run with another {', '.join(changed)}"
    problem = _content_problem(done, key)
    return (None, f"is inconsistent: {problem}") if problem else (done, None)


def _resume_state(partial, key, images):
    """The finished part of an interrupted prediction with this key (or a fresh one) and the
    images still to predict. A checkpoint of another key, or a damaged one, is set aside: its
    images are predicted again, with a note naming why and how many."""
    done, why = _read_partial(partial, key)
    if why is not None:
        log.warning("starting over, all %d images to predict: %s %s", len(images), partial,
                    why)
    if done is None:
        done = {"key": key, "records": [], "image_ids": [], "seconds": 0.0}
    done["key"] = key
    finished = set(done["image_ids"])
    todo = [im for im in images if int(im["id"]) not in finished]
    if done["image_ids"]:
        log.info("resuming: %d of %d images already predicted", len(done["image_ids"]),
                 len(images))
    return done, todo


def prediction_key(backend, weights, config, settings, images=(), correction=None):
    """What a run's predictions depend on, as JSON values: the resume key, and run.json's
    "key" that reusable_predictions compares (image ids aside)."""
    return json.loads(json.dumps({"backend": backend, "weights": str(weights),
                                  "weights_file": weights_fingerprint(weights),
                                  "config": config, "settings": asdict(settings),
                                  "image_ids": [int(im["id"]) for im in images],
                                  **({"correction": correction.key()} if correction else {})}))


def reusable_predictions(run_dir, key):
    """({image id: its records} of every image the finished run in `run_dir` predicted, its
    prediction seconds per image) when that run's key equals `key` but for the image ids
    (the same backend, weight file with its size and time, configuration, inference settings
    and test-time correction); None for another run, an unfinished one or none."""
    run_file, results_file = Path(run_dir) / runs.RUN_JSON, Path(run_dir) / runs.RESULTS_JSON
    if not (run_file.is_file() and results_file.is_file()):
        return None
    run = files.read_json(run_file, "run settings")
    earlier = run.get("key") if isinstance(run, dict) else None
    if not isinstance(earlier, dict) or any(earlier.get(k) != key.get(k)
                                            for k in set(key) | set(earlier) if k != "image_ids"):
        return None
    ids, seconds = run.get("image_ids"), run.get("prediction_seconds")
    if not isinstance(ids, list) or not isinstance(seconds, (int, float)):
        return None
    records = files.read_json(results_file, "results JSON")
    runs.check_result_records(records, results_file)
    by_image = {int(i): [] for i in ids}
    if any(int(r["image_id"]) not in by_image for r in records):
        return None
    for r in records:
        by_image[int(r["image_id"])].append(r)
    return by_image, float(seconds) / max(len(by_image), 1)


def _unchanged_images(todo, folder, correction, uncorrected):
    """(images still to predict, {image id: records} of those the correction leaves as they
    are and the uncorrected run predicted: its people are theirs, the seconds that run spent
    on them). uncorrected: reusable_predictions of that run, or None."""
    if correction is None or uncorrected is None:
        return todo, {}, 0.0
    (by_image, seconds_per_image), rest, taken = uncorrected, [], {}
    for im in todo:
        i = int(im["id"])
        image = (predict_set.read_set_image(folder / im["file_name"], im)[0]
                 if i in by_image else None)
        if image is not None and correction.leaves_unchanged(image):
            taken[i] = by_image[i]
        else:
            rest.append(im)
    return rest, taken, len(taken) * seconds_per_image


def predict(args, weights, note, images, settings, run_dir, correction=None,
            uncorrected_run=None):
    """Predict `images` (resuming an interrupted run), write keypoint_results.json and
    run.json; returns (records, predicted image ids, prediction seconds). correction: a
    GammaCorrection applied to every image before the network (part of the resume key).
    uncorrected_run: the run folder of the same weights on the same set without it: an image
    the correction leaves as it is takes that run's people (reusable_predictions), and the
    seconds then include that run's time per image for it."""
    log.info("weights: %s (%s), config %s, backend %s", weights, note, args.config,
             args.backend)
    key = prediction_key(args.backend, weights, args.config, settings, images, correction)
    partial = run_dir / runs.PARTIAL_JSON
    files.remove_stale_temporaries_in(run_dir)      # of killed runs; a live one's are kept
    done, todo = _resume_state(partial, key, images)

    def checkpoint(records, predicted, seconds):
        files.write_json(partial, dict(done, records=done["records"] + records,
                                       image_ids=done["image_ids"] + predicted,
                                       seconds=done["seconds"] + seconds))

    start = time.perf_counter()
    if args.backend == backends.TENSORFLOW:
        model = network.load_pose_model(args.config, weights,
                                        allow_partial=getattr(args, "allow_partial_weights",
                                                              False))
    else:
        model = backends.load_model(args.backend, args.config, weights)
    log.info("model loaded in %.1f s; predicting %d images", time.perf_counter() - start,
             len(todo))
    folder = paths.image_dir(args.coco_root, args.coco_dataType)
    uncorrected = uncorrected_run and reusable_predictions(
        uncorrected_run, prediction_key(args.backend, weights, args.config, settings))
    todo, taken, taken_seconds = _unchanged_images(todo, folder, correction, uncorrected)
    if taken:
        log.info("%d images the correction leaves as they are take the predictions of %s",
                 len(taken), uncorrected_run)
    records, info = predict_set.predict_dataset(model, todo, folder, settings,
                                              batch_size=args.batch_size, checkpoint=checkpoint,
                                              preprocess=correction)
    records = sorted(done["records"] + records + [r for recs in taken.values() for r in recs],
                     key=lambda r: (r["image_id"], -r["score"]))
    predicted = sorted(done["image_ids"] + info["image_ids"] + list(taken))
    skipped = [list(s) for s in info["skipped"]]
    seconds = done["seconds"] + info["seconds"] + taken_seconds
    files.write_json(run_dir / runs.RESULTS_JSON, records)
    files.write_json(run_dir / runs.RUN_JSON, {
        "weights": str(weights), "weights_note": note, "config": args.config,
        "flags": _flags(args), "seed": args.seed, "settings": asdict(settings),
        "image_ids": predicted, "skipped": skipped, "prediction_seconds": round(seconds, 3),
        "network_seconds": round(info["network_seconds"], 3), "num_records": len(records),
        **({"correction": correction.summary()} if correction else {}),
        **({"reused": {"run": str(uncorrected_run), "images": len(taken)}} if taken else {}),
        "key": dict(key, image_ids=predicted)}, indent=1)
    partial.unlink(missing_ok=True)
    if skipped:
        log.warning("%d of %d images could not be used and were skipped (not predicted, not "
                    "scored): %s", len(skipped), len(images), _first_reasons(skipped))
    log.info("predicted %d images in %.1f s (%.3f s/image, network %.1f s): %d people",
             len(predicted), seconds, seconds / max(len(predicted), 1),
             info["network_seconds"], len(records))
    return records, predicted, seconds


def _first_reasons(skipped):
    """'image 5: reason; ...' for the first SHOWN_REASONS of [(image id, reason)]."""
    shown = "; ".join(f"image {i}: {reason}" for i, reason in skipped[:SHOWN_REASONS])
    return shown + (f"; ... {len(skipped) - SHOWN_REASONS} more"
                    if len(skipped) > SHOWN_REASONS else "")


def skipped_images(run_dir):
    """[(image id, reason)] of the images the run's prediction skipped (its run.json)."""
    path = run_dir / runs.RUN_JSON
    run = files.read_json(path, "run settings") if path.is_file() else {}
    skipped = run.get("skipped") if isinstance(run, dict) else None
    return [(int(i), str(r)) for i, r in skipped] if isinstance(skipped, list) else []


def saved_results(data_type, effect, coco, images, run_dir):
    """(records, predicted image ids, prediction seconds or None) of a finished run folder,
    checked against the annotations; UserError with the command that creates a missing one."""
    path = run_dir / runs.RESULTS_JSON
    if not path.is_file():
        how = ("python train_expert_classifier/ensemble.py --coco_dataType "
               f"{data_type} --method {'route' if effect == ENSEMBLE else 'fuse'}"
               if effect.startswith(ENSEMBLE) else
               "this script with --compute_keypoint True")
        raise UserError(f"no saved results: {path} is missing; create them with {how}")
    records = files.read_json(path, "results JSON")
    evaluation.check_records(records, coco, path)
    run = files.read_json(run_dir / runs.RUN_JSON) if (run_dir / runs.RUN_JSON).is_file() \
        else {}
    predicted = run.get("image_ids") or [int(im["id"]) for im in images]
    log.info("reusing %d results of %d images from %s", len(records), len(predicted), path)
    return records, predicted, run.get("prediction_seconds")


def evaluate(coco, records, predicted, seconds, run_dir, difficult_csv=None):
    """COCOeval and the breakdown of `records` on the `predicted` images; writes metrics.csv
    and returns its rows."""
    start = time.perf_counter()
    rows = evaluation.breakdown(coco, records, predicted, difficult_csv)
    if seconds is not None:
        rows += [("all", "prediction_seconds", float(seconds)),
                 ("all", "seconds_per_image", float(seconds) / max(len(predicted), 1))]
    skipped = skipped_images(run_dir)
    if skipped:   # only then: a run without skipped images keeps its metrics.csv as it was
        rows.append(("all", "skipped_images", len(skipped)))
        rows += [("skipped", f"image {i}: {reason}", 1) for i, reason in
                 skipped[:SHOWN_REASONS]]
    runs.write_metrics(run_dir / runs.METRICS_CSV, rows)
    log.info("evaluated %d images in %.1f s%s", len(predicted), time.perf_counter() - start,
             f"; {len(skipped)} skipped images not scored" if skipped else "")
    return rows


class GammaCorrection:
    """The test-time correction of the normal expert + gamma baseline: every image brightened
    by model.effects.gamma_correct (the gamma that brings its mean luminance to `target`)
    before the network; the gammas used are kept for run.json. Called from the prediction's
    loader thread (list.append is atomic)."""

    def __init__(self, target=effects.GAMMA_TARGET, min_gamma=effects.GAMMA_MIN):
        self.target, self.min_gamma = float(target), float(min_gamma)
        self.gammas = []

    def key(self):
        """What the predictions depend on (the resume key and run.json)."""
        return {"rule": "model.effects.gamma_correct", "target": self.target,
                "min_gamma": self.min_gamma}

    def __call__(self, image):
        corrected, gamma = effects.gamma_correct(image, self.target, self.min_gamma)
        self.gammas.append(gamma)
        return corrected

    def leaves_unchanged(self, image):
        """True (and its gamma 1 kept) for an image already bright enough: the correction
        would not change it."""
        if effects.brightening_gamma(image, self.target, self.min_gamma) < 1.0:
            return False
        self.gammas.append(1.0)
        return True

    def summary(self):
        """key() and the gammas of the images this invocation predicted (a resumed run's
        earlier images are not among them)."""
        g = np.asarray(self.gammas, np.float64)
        return dict(self.key(), images_corrected=len(g),
                    unchanged=int(np.count_nonzero(g >= 1.0)),
                    gamma_mean=round(float(g.mean()), 4) if len(g) else None,
                    gamma_min=round(float(g.min()), 4) if len(g) else None,
                    gamma_max=round(float(g.max()), 4) if len(g) else None)
