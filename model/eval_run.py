"""One model's evaluation run on one set (eval/eval_coco2014_single_scale.py): predict with
resume, or reuse saved results, then evaluate, all inside the run folder (model.runs).

Resume: while predicting, every finished batch is checkpointed to partial_results.json
together with the key of the run (backend, weights, config, inference settings, image ids).
A rerun with the same key predicts only the images not yet done; any other key starts over,
so a changed setting, or another backend (model.backends), never mixes into old predictions
(a key written before the backend was part of it is TensorFlow's). The partial file is
removed once the results JSON and run.json are written.
"""
import json
import logging
import time
from dataclasses import asdict

from model import backends, evaluation, files, inference, network, paths, runs
from model.domains import ENSEMBLE
from model.errors import UserError

log = logging.getLogger("eval")

SHOWN_REASONS = 3     # skipped images whose reasons the log and metrics.csv name


def _flags(args):
    """The command line's flags as JSON values (paths as strings)."""
    return {k: v if isinstance(v, (int, float, bool, str, list, type(None))) else str(v)
            for k, v in vars(args).items()}


def _resume_state(partial, key, images):
    """The finished part of an interrupted prediction with this key (or a fresh one) and the
    images still to predict."""
    done = files.read_json(partial) if partial.is_file() else {}
    earlier = done.get("key")
    if isinstance(earlier, dict) and "backend" not in earlier:   # written before --backend
        earlier = dict(earlier, backend=backends.TENSORFLOW)
    if earlier != key:
        if earlier is not None:
            changed = sorted(k for k in key if not isinstance(earlier, dict)
                             or earlier.get(k) != key[k])
            log.info("starting over: %s holds an interrupted run with another %s", partial,
                     ", ".join(changed))
        done = {"key": key, "records": [], "image_ids": [], "seconds": 0.0}
    done["key"] = key
    todo = [im for im in images if int(im["id"]) not in set(done["image_ids"])]
    if done["image_ids"]:
        log.info("resuming: %d of %d images already predicted", len(done["image_ids"]),
                 len(images))
    return done, todo


def predict(args, weights, note, images, settings, run_dir):
    """Predict `images` (resuming an interrupted run), write keypoint_results.json and
    run.json; returns (records, predicted image ids, prediction seconds)."""
    log.info("weights: %s (%s), config %s, backend %s", weights, note, args.config,
             args.backend)
    key = json.loads(json.dumps({"backend": args.backend, "weights": str(weights),
                                 "config": args.config,
                                 "settings": asdict(settings),
                                 "image_ids": [int(im["id"]) for im in images]}))
    partial = run_dir / runs.PARTIAL_JSON
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
    records, info = inference.predict_dataset(model, todo, folder, settings,
                                              batch_size=args.batch_size, checkpoint=checkpoint)
    records = done["records"] + records
    predicted = sorted(done["image_ids"] + info["image_ids"])
    skipped = [list(s) for s in info["skipped"]]
    seconds = done["seconds"] + info["seconds"]
    files.write_json(run_dir / runs.RESULTS_JSON, records)
    files.write_json(run_dir / runs.RUN_JSON, {
        "weights": str(weights), "weights_note": note, "config": args.config,
        "flags": _flags(args), "seed": args.seed, "settings": asdict(settings),
        "image_ids": predicted, "skipped": skipped, "prediction_seconds": round(seconds, 3),
        "network_seconds": round(info["network_seconds"], 3), "num_records": len(records)},
        indent=1)
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
