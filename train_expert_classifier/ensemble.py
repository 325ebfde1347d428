"""The expert ensemble on one evaluation set, written where the evaluation reads it.

--method route (the fork's, default): each image takes the predictions of the expert whose
    domain the classifier finds most probable (train_domain_classifier/results/<X>.json).
    Needs the three experts' predictions (eval/eval_coco2014_single_scale.py --effect ...).
    Output: the "_ensemble" run folder, evaluated with
      python eval/eval_coco2014_single_scale.py --effect _ensemble --coco_dataType X \\
          --compute_keypoint False --eval_compute_keypoint True
--method fuse (ours): runs the three networks, averages their heatmaps and PAFs weighted by
    the domain probabilities, decodes once. Output: the "_ensemble_fuse" run folder
    (evaluate with --effect _ensemble_fuse). --backend onnxruntime|openvino runs the experts'
    exported .onnx models (python -m model.export) instead of Keras.
With ground truth, ensemble_report.{json,csv} in that folder compares the method with each
expert and with the oracle (the best expert per image by OKS: an upper bound), with timings.

  python train_expert_classifier/ensemble.py --coco_dataType val2014_random1k_dark
"""
import argparse
from pathlib import Path

from model import backends, paths
from model.cli import (add_coco_root, add_data_type, check_data_type, ensure_writable_dir,
                       main_guard, str2bool)
from model.errors import UserError
from model.ensemble import METHOD_EFFECT, STAT_NAMES, run
from model.inference import SCALE_MODES


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_type(p, required=True)
    p.add_argument("--method", choices=tuple(METHOD_EFFECT), default="route",
                   help="route: pick one expert per image; fuse: average their maps "
                        "(default: %(default)s)")
    p.add_argument("--fir_img_num", type=int, default=None,
                   help="image count N of the experts' runs (default: the one found in "
                        "--results_dir)")
    p.add_argument("--results_dir", type=Path, default=paths.EVAL_RESULTS_DIR,
                   help="where the models' run folders are (default: %(default)s)")
    p.add_argument("--domain_results", type=Path, default=None,
                   help="domain probabilities JSON (default: "
                        f"{paths.DOMAIN_RESULTS_DIR}/<coco_dataType>.json)")
    p.add_argument("--oracle", type=str2bool, default=True,
                   help="also compute the per-image oracle (needs ground truth; default: "
                        "%(default)s)")
    add_coco_root(p)
    f = p.add_argument_group("fuse only (defaults: what the experts' evaluation runs "
                             "recorded in their run.json, else the evaluation's defaults)")
    f.add_argument("--config", default=None, help="network configuration of the experts "
                   "(model.network.CONFIGS)")
    f.add_argument("--weights", nargs=3, default=None, metavar=("NORMAL", "DARK", "MOTION_BLUR"),
                   help="the experts' weight files: Keras .h5, or .onnx with --backend "
                        "onnxruntime / openvino (default: the weights their runs recorded, "
                        "for an ONNX backend the .onnx beside each)")
    f.add_argument("--backend", default=backends.TENSORFLOW, help=backends.BACKEND_HELP)
    f.add_argument("--scale_search", type=float, nargs="+", default=None,
                   help="scale multipliers")
    f.add_argument("--scale_mode", choices=SCALE_MODES, default=None,
                   help="native or boxsize (see eval_coco2014_single_scale.py)")
    f.add_argument("--flip", type=str2bool, default=None,
                   help="also average the mirrored image's maps")
    f.add_argument("--resolution", type=int, default=None,
                   help="decoder grid in image pixels per map pixel")
    f.add_argument("--skip_below", type=float, default=0.0,
                   help="do not run an expert whose domain probability is below this "
                        "(the others are renormalised; default: %(default)s = run all)")
    return p.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    check_data_type(args.coco_dataType)
    if args.fir_img_num is not None and args.fir_img_num < 1:
        raise UserError(f"--fir_img_num must be >= 1, got {args.fir_img_num}")
    if not 0 <= args.skip_below < 1:
        raise UserError(f"--skip_below must be in [0, 1), got {args.skip_below}")
    fuse = None
    if args.method == "fuse":
        backends.check_backend(args.backend)
        backends.check_given_files(args.backend, args.weights, args.config)
        fuse = {k: getattr(args, k) for k in ("config", "weights", "scale_search",
                                               "scale_mode", "flip", "resolution",
                                               "skip_below", "backend")}
    ensure_writable_dir(args.results_dir)
    report = run(args.method, args.coco_dataType, args.results_dir, args.coco_root,
                 args.domain_results, args.fir_img_num, args.oracle, fuse)
    print(f"{args.method} ensemble of {args.coco_dataType}: {report['predictions']} predictions "
          f"in {report['seconds']:.2f} s ({report['seconds_per_image'] * 1000:.1f} ms/image)")
    for key in ("routed_images", "oracle_images"):
        if key in report:
            print(f"  {key.replace('_', ' ')}: " + ", ".join(f"{k} {v}"
                                                            for k, v in report[key].items()))
    for note in report["notes"]:
        print(f"note: {note}")
    if report.get("comparison"):
        print(f"  {'model':<14}" + "".join(f"{k:>7}" for k in STAT_NAMES[:5]) + f"{'seconds':>10}")
        for r in report["comparison"]:
            sec = "" if r["seconds"] is None else f"{r['seconds']:.2f}"
            print(f"  {r['model']:<14}" + "".join(f"{r[k]:>7.3f}" for k in STAT_NAMES[:5])
                  + f"{sec:>10}")
    print(f"written: {report['results_file']} (and ensemble_report.json/csv beside it)")


if __name__ == "__main__":
    main()
