"""COCO keypoint evaluation of one model on one evaluation set (the seed's command line).

    python eval/eval_coco2014_single_scale.py --effect _dark --coco_dataType val2014_random1k_dark

Predicts the first --fir_img_num images of the set (batched, pipelined), writes the COCO
results JSON, then evaluates with pycocotools on exactly those images and writes the ten
AP/AR numbers, the prediction time and the difficult-case breakdown. Everything lands in
eval/results/<dataType>-<model>-epoch100-open-pose-single-scale-<N>/ (model.runs):
keypoint_results.json, metrics.csv, run.json. --compute_keypoint False re-evaluates saved
results (how the ensembles, whose results train_expert_classifier/ensemble.py writes, are
evaluated). An interrupted prediction resumes from its partial file (model.eval_run).
--backend onnxruntime|openvino runs an exported .onnx model instead of Keras (model.backends);
the decoder is the same. The baselines: --effect _mixed runs the generalist's weights
(training/weights_mixed), --effect _normal_gamma the normal expert's (training/weights) on
every image gamma-corrected first (model.effects.gamma_correct, --gamma_target); an image
already bright enough, which the correction leaves as it is, takes the normal expert's people
from its run on the set when that run used the same weight file and settings.
"""
import argparse
import logging

from model import backends, effects, eval_run, evaluation, inference, network, paths
from model.cli import (add_coco_root, add_data_type, add_seed, check_data_type,
                       ensure_writable_dir, main_guard, str2bool)
from model.domains import (EFFECT_NAMES, ENSEMBLE, EVAL_MODELS, NORMAL, NORMAL_GAMMA,
                           weights_effect)
from model.errors import UserError
from model.network import CONFIGS
from model.recipes import get_recipe
from model.runs import RunLayout

log = logging.getLogger("eval")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--effect", default=NORMAL,
                   help="model: '' (normal), _dark, _motion_blur (experts), _ensemble (routed), "
                        "_ensemble_fuse (fused; both need --compute_keypoint False), _mixed "
                        "(the generalist), _normal_gamma (the normal expert on gamma-corrected "
                        "images)")
    add_data_type(p, default=paths.EVAL_DATATYPES[0])
    p.add_argument("--fir_img_num", type=int, default=None,
                   help="evaluate the first N images of the set (default: all, at most 1000)")
    p.add_argument("--compute_keypoint", type=str2bool, default=True,
                   help="predict (true) or reuse the saved results JSON (false)")
    p.add_argument("--eval_compute_keypoint", type=str2bool, default=True,
                   help="run the COCO evaluation and the breakdown (default: true)")
    p.add_argument("--weights", default=None,
                   help="Keras weight file (default: training/weights<effect>/weights.0100.h5, "
                        "training/weights/ for _normal_gamma, "
                        "else the newest weights.NNNN.h5 there); with --backend onnxruntime "
                        "or openvino an .onnx file (default: weights.0100.onnx there, else "
                        "the newest weights.NNNN.onnx)")
    p.add_argument("--backend", default=backends.TENSORFLOW, help=backends.BACKEND_HELP)
    p.add_argument("--config", default="full", choices=sorted(CONFIGS),
                   help="network configuration of the weights (default: %(default)s)")
    add_coco_root(p)
    p.add_argument("--scale_search", type=float, nargs="+", default=None,
                   help="scale multipliers; several give the multi-scale test (default: the "
                        "--config's recipe: 1.0 for full, 1.5 for small)")
    p.add_argument("--scale_mode", default=None, choices=inference.SCALE_MODES,
                   help="native: resize by m (the fork's single scale: native resolution); "
                        "boxsize: to m * input_size / image height (for networks trained on a "
                        "small input_size) (default: the --config's recipe: native for full, "
                        "boxsize for small)")
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
    p.add_argument("--allow_partial_weights", type=str2bool, default=False,
                   help="accept a Keras weight file that lacks some layers of --config, "
                        "which then keep their random initial values (default: false)")
    p.add_argument("--gamma_target", type=float, default=None,
                   help="--effect _normal_gamma: the mean luminance (0..1) each image is "
                        f"brightened to (default: {effects.GAMMA_TARGET}, that of normal "
                        "training images; docs/recipe.md section 6)")
    add_seed(p)
    return with_recipe_defaults(p.parse_args(argv))


def with_recipe_defaults(args):
    """Fill the evaluation scales the user left out from the configuration's recipe
    (docs/recipe.md section 6), so run.json records what ran."""
    recipe = get_recipe(args.config)
    if args.scale_search is None:
        args.scale_search = list(recipe.eval_scale_search)
    if args.scale_mode is None:
        args.scale_mode = recipe.eval_scale_mode
    return args


def check_args(args):
    if args.effect not in EVAL_MODELS:
        raise UserError(f"unknown --effect {args.effect!r}; choose from "
                        f"{', '.join(repr(e) for e in EVAL_MODELS)}")
    check_data_type(args.coco_dataType)
    backends.check_backend(args.backend)
    if args.batch_size < 1:
        raise UserError("--batch_size must be >= 1")
    if args.gamma_target is not None and args.effect != NORMAL_GAMMA:
        raise UserError(f"--gamma_target is for --effect {NORMAL_GAMMA} only")
    if args.gamma_target is not None and not 0 < args.gamma_target < 1:
        raise UserError(f"--gamma_target must be between 0 and 1, got {args.gamma_target}")
    if args.compute_keypoint and args.effect.startswith(ENSEMBLE):
        raise UserError(f"the {EFFECT_NAMES[args.effect]} results are written by "
                        f"train_expert_classifier/ensemble.py; evaluate them with "
                        f"--compute_keypoint False")


def images_to_evaluate(coco, args):
    """The first --fir_img_num image dicts of the set (default: all, at most 1000)."""
    available = len(coco.dataset["images"])
    if available == 0:
        raise UserError(f"{args.coco_dataType} has no images")
    num = (evaluation.default_num_images(available) if args.fir_img_num is None
           else args.fir_img_num)
    if not 1 <= num <= available:
        raise UserError(f"--fir_img_num must be between 1 and {available} (the images of "
                        f"{args.coco_dataType}), got {num}")
    return evaluation.first_images(coco, num)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    check_args(args)
    settings = inference.InferenceSettings(
        tuple(args.scale_search), args.scale_mode, CONFIGS[args.config].input_size,
        args.flip, args.resolution)
    coco = evaluation.load_annotations(
        paths.annotation_file(args.coco_root, args.coco_dataType),
        hint=f"; make the evaluation sets with python dataset/make_domain_datasets.py "
             f"--coco_root {args.coco_root}")
    images = images_to_evaluate(coco, args)
    if args.compute_keypoint:  # before anything is written
        weights, note = backends.find_model_file(args.backend, weights_effect(args.effect),
                                                 args.weights, args.config)
        backends.check_model_file(args.backend, weights, args.config)
        if args.backend == backends.TENSORFLOW and not args.allow_partial_weights:
            network.check_weight_coverage(args.config, weights,
                                          "; pass --allow_partial_weights true to use it")
    run_dir = ensure_writable_dir(RunLayout(args.results_dir).folder(
        args.coco_dataType, args.effect, len(images), settings))
    log.info("%s model on %s: %d images -> %s (seed %d)", EFFECT_NAMES[args.effect],
             args.coco_dataType, len(images), run_dir, args.seed)

    if args.compute_keypoint:
        correction = (eval_run.GammaCorrection(args.gamma_target or effects.GAMMA_TARGET)
                      if args.effect == NORMAL_GAMMA else None)
        # The gamma baseline takes the normal expert's people where it leaves an image as is.
        uncorrected = (RunLayout(args.results_dir).folder(args.coco_dataType, NORMAL,
                                                          len(images), settings)
                       if correction else None)
        records, predicted, seconds = eval_run.predict(args, weights, note, images, settings,
                                                       run_dir, correction, uncorrected)
    else:
        records, predicted, seconds = eval_run.saved_results(
            args.coco_dataType, args.effect, coco, images, run_dir)
    if not args.eval_compute_keypoint:
        return
    rows = eval_run.evaluate(coco, records, predicted, seconds, run_dir, args.difficult_csv)
    if not any(int(r["image_id"]) in set(predicted) for r in records):
        print(f"AP 0: {evaluation.NO_PREDICTIONS}")
    for line in evaluation.format_summary(rows):
        print(line)
    print(f"results: {run_dir}")


if __name__ == "__main__":
    main()
