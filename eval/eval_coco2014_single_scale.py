"""COCO keypoint evaluation of one model on one evaluation set (the seed's command line).

    python eval/eval_coco2014_single_scale.py --effect _dark --coco_dataType val2014_random1k_dark

Predicts the first --fir_img_num images of the set (batched, pipelined), writes the COCO
results JSON, then evaluates with pycocotools on exactly those images and writes the ten
AP/AR numbers, the prediction time and the difficult-case breakdown. Everything lands in
eval/results/<dataType>-<model>-epoch100-open-pose-single-scale-<N>/ (model.paths.eval_run_dir):
keypoint_results.json, metrics.csv, run.json. --compute_keypoint False re-evaluates saved
results (how the ensembles, whose results train_expert_classifier/ensemble.py writes, are
evaluated). An interrupted prediction resumes from its partial file.
"""
import argparse
import json
import logging
import time
from dataclasses import asdict

from model import evaluation, files, inference, paths
from model.cli import (UserError, add_coco_root, add_data_type, add_seed, check_data_type,
                       ensure_writable_dir, main_guard, str2bool)

log = logging.getLogger("eval")
PARTIAL_JSON = "partial_results.json"


def parse_args(argv=None):
    from model.network import CONFIGS
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--effect", default="",
                   help="model: '' (normal), _dark, _motion_blur (experts), _ensemble (routed), "
                        "_ensemble_fuse (fused; both need --compute_keypoint False)")
    add_data_type(p, default=paths.EVAL_DATATYPES[0])
    p.add_argument("--fir_img_num", type=int, default=None,
                   help="evaluate the first N images of the set (default: all, at most 1000)")
    p.add_argument("--compute_keypoint", type=str2bool, default=True,
                   help="predict (true) or reuse the saved results JSON (false)")
    p.add_argument("--eval_compute_keypoint", type=str2bool, default=True,
                   help="run the COCO evaluation and the breakdown (default: true)")
    p.add_argument("--weights", default=None,
                   help="Keras weight file (default: training/weights<effect>/weights.0100.h5, "
                        "else the newest weights.NNNN.h5 there)")
    p.add_argument("--config", default="full", choices=sorted(CONFIGS),
                   help="network configuration of the weights (default: %(default)s)")
    add_coco_root(p)
    p.add_argument("--scale_search", type=float, nargs="+", default=[1.0],
                   help="scale multipliers; several give the multi-scale test (default: 1.0)")
    p.add_argument("--scale_mode", default="native", choices=inference.SCALE_MODES,
                   help="native: resize by m (the fork's single scale: native resolution); "
                        "boxsize: to m * input_size / image height (for networks trained on a "
                        "small input_size, e.g. --config small) (default: %(default)s)")
    p.add_argument("--flip", type=str2bool, default=False,
                   help="also predict the mirrored image and average (default: false)")
    p.add_argument("--resolution", type=int, default=inference.DEFAULT_RESOLUTION,
                   help="decoder grid in image pixels per map pixel (default: %(default)s)")
    p.add_argument("--batch_size", type=int, default=4, help="images per network call")
    p.add_argument("--difficult_csv", default=None,
                   help="CSV of image ids with columns deformation, rare_novel_poses, "
                        "crowded_background: adds their AP and PCK to the breakdown")
    p.add_argument("--results_dir", default=str(paths.EVAL_RESULTS_DIR),
                   help="parent of the run folders (default: %(default)s)")
    add_seed(p)
    return p.parse_args(argv)


def predict(args, weights, note, images, settings, run_dir):
    log.info("weights: %s (%s), config %s", weights, note, args.config)
    key = json.loads(json.dumps({"weights": str(weights), "config": args.config,
                                 "settings": asdict(settings),
                                 "image_ids": [int(im["id"]) for im in images]}))
    partial = run_dir / PARTIAL_JSON
    done = files.read_json(partial) if partial.is_file() else {}
    if done.get("key") != key:
        done = {"key": key, "records": [], "image_ids": [], "seconds": 0.0}
    todo = [im for im in images if int(im["id"]) not in set(done["image_ids"])]
    if done["image_ids"]:
        log.info("resuming: %d of %d images already predicted", len(done["image_ids"]),
                 len(images))

    def checkpoint(records, predicted, seconds):
        files.write_json(partial, dict(done, records=done["records"] + records,
                                       image_ids=done["image_ids"] + predicted,
                                       seconds=done["seconds"] + seconds))

    start = time.perf_counter()
    model = inference.load_pose_model(args.config, weights)
    log.info("model loaded in %.1f s; predicting %d images", time.perf_counter() - start,
             len(todo))
    folder = paths.image_dir(args.coco_root, args.coco_dataType)
    records, info = inference.predict_dataset(model, todo, folder, settings,
                                              batch_size=args.batch_size, checkpoint=checkpoint)
    records = done["records"] + records
    predicted = sorted(done["image_ids"] + info["image_ids"])
    skipped = [list(s) for s in info["skipped"]]
    seconds = done["seconds"] + info["seconds"]
    files.write_json(run_dir / evaluation.RESULTS_JSON, records)
    files.write_json(run_dir / evaluation.RUN_JSON, {
        "weights": str(weights), "weights_note": note, "config": args.config,
        "flags": {k: v if isinstance(v, (int, float, bool, str, list, type(None))) else str(v)
                  for k, v in vars(args).items()},
        "seed": args.seed, "settings": asdict(settings), "image_ids": predicted,
        "skipped": skipped, "prediction_seconds": round(seconds, 3),
        "network_seconds": round(info["network_seconds"], 3), "num_records": len(records)},
        indent=1)
    partial.unlink(missing_ok=True)
    if skipped:
        log.warning("%d of %d images could not be read and were skipped", len(skipped),
                    len(images))
    log.info("predicted %d images in %.1f s (%.3f s/image, network %.1f s): %d people",
             len(predicted), seconds, seconds / max(len(predicted), 1),
             info["network_seconds"], len(records))
    return records, predicted, seconds


def saved_results(args, coco, images, run_dir):
    path = run_dir / evaluation.RESULTS_JSON
    if not path.is_file():
        how = ("python train_expert_classifier/ensemble.py --coco_dataType "
               f"{args.coco_dataType} --method {'route' if args.effect == '_ensemble' else 'fuse'}"
               if args.effect.startswith("_ensemble") else
               "this script with --compute_keypoint True")
        raise UserError(f"no saved results: {path} is missing; create them with {how}")
    records = files.read_json(path, "results JSON")
    evaluation.check_records(records, coco, path)
    run = files.read_json(run_dir / evaluation.RUN_JSON) if (
        run_dir / evaluation.RUN_JSON).is_file() else {}
    predicted = run.get("image_ids") or [int(im["id"]) for im in images]
    log.info("reusing %d results of %d images from %s", len(records), len(predicted), path)
    return records, predicted, run.get("prediction_seconds")


@main_guard
def main(argv=None):
    args = parse_args(argv)
    if args.effect not in paths.EVAL_MODELS:
        raise UserError(f"unknown --effect {args.effect!r}; choose from "
                        f"{', '.join(repr(e) for e in paths.EVAL_MODELS)}")
    check_data_type(args.coco_dataType)
    if args.batch_size < 1:
        raise UserError("--batch_size must be >= 1")
    if args.compute_keypoint and args.effect.startswith("_ensemble"):
        raise UserError(f"the {paths.EFFECT_NAMES[args.effect]} results are written by "
                        f"train_expert_classifier/ensemble.py; evaluate them with "
                        f"--compute_keypoint False")
    from model.network import CONFIGS
    settings = inference.InferenceSettings(
        tuple(args.scale_search), args.scale_mode, CONFIGS[args.config].input_size,
        args.flip, args.resolution)
    coco = evaluation.load_annotations(
        paths.annotation_file(args.coco_root, args.coco_dataType),
        hint=f"; make the evaluation sets with python dataset/make_domain_datasets.py "
             f"--coco_root {args.coco_root}")
    available = len(coco.dataset["images"])
    if available == 0:
        raise UserError(f"{args.coco_dataType} has no images")
    num = (evaluation.default_num_images(available) if args.fir_img_num is None
           else args.fir_img_num)
    if not 1 <= num <= available:
        raise UserError(f"--fir_img_num must be between 1 and {available} (the images of "
                        f"{args.coco_dataType}), got {num}")
    images = evaluation.first_images(coco, num)
    if args.compute_keypoint:  # before anything is written
        weights, note = inference.find_weights(args.effect, args.weights)
    run_dir = ensure_writable_dir(evaluation.run_folder(
        args.results_dir, args.coco_dataType, args.effect, num, settings))
    log.info("%s model on %s: %d images -> %s (seed %d)", paths.EFFECT_NAMES[args.effect],
             args.coco_dataType, num, run_dir, args.seed)

    if args.compute_keypoint:
        records, predicted, seconds = predict(args, weights, note, images, settings, run_dir)
    else:
        records, predicted, seconds = saved_results(args, coco, images, run_dir)
    if not args.eval_compute_keypoint:
        return
    start = time.perf_counter()
    rows = evaluation.breakdown(coco, records, predicted, args.difficult_csv)
    if seconds is not None:
        rows += [("all", "prediction_seconds", float(seconds)),
                 ("all", "seconds_per_image", float(seconds) / max(len(predicted), 1))]
    evaluation.write_metrics(run_dir / evaluation.METRICS_CSV, rows)
    log.info("evaluated %d images in %.1f s", len(predicted), time.perf_counter() - start)
    if not any(int(r["image_id"]) in set(predicted) for r in records):
        print(f"AP 0: {evaluation.NO_PREDICTIONS}")
    for line in evaluation.format_summary(rows):
        print(line)
    print(f"results: {run_dir}")


if __name__ == "__main__":
    main()
