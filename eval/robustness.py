"""Robustness over corruption severities (COCO-C style): every model's keypoint AP on the first
--num_images images of the clean held-out set after darkness, motion blur and low resolution
at five severities each (severity 3 = the fork's setting), with mPC and rPC.

    python eval/robustness.py --config small --num_images 6

Models: the three experts, the generalist (skipped with a note when it has no weights), the
routed and the fused ensemble (the domain classifier sees each corrupted image; both
ensembles come from the experts' maps, so each network runs once per image). Writes
<out_dir>/robustness.csv (corruption, severity, parameter, model, AP), robustness.json (mPC
and rPC per model, overall and per corruption, the image count, seed and settings),
robustness.png, and chunks/ (one file per corruption and severity; a rerun keeps the
finished ones). Definitions: model/robustness.py.
"""
import argparse
import os
from pathlib import Path

# Idle OpenMP threads of the classifier sleep instead of spinning beside TensorFlow's own
# threads, which run next. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from model import inference, paths, robustness  # noqa: E402  (after the environment above)
from model.cli import (add_coco_root, add_data_type, add_seed, check_data_type,  # noqa: E402
                       check_writable_dir, main_guard, str2bool)
from model.domains import DARK, MIXED, MOTION_BLUR, NORMAL  # noqa: E402
from model.network import CONFIGS  # noqa: E402
from model.recipes import get_recipe  # noqa: E402
from model.report import robustness as report  # noqa: E402
from model.runs import robustness_folder  # noqa: E402

R = robustness.DEFAULT_SEVERITIES


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_type(p, default=paths.EVAL_BASE)
    p.add_argument("--num_images", type=int, default=None,
                   help="the first N images of the set (default: all, at most 1000)")
    add_coco_root(p)
    for c, flag in robustness.SEVERITY_FLAGS.items():
        p.add_argument(flag, nargs="*", default=[str(v) for v in R[c]], metavar="V",
                       help=f"{robustness.PARAMETER_NAMES[c]} of severity 1, 2, ... "
                            f"(default: {' '.join(map(str, R[c]))}; the fork's "
                            f"{robustness.FORK_PARAMETERS[c]} is severity "
                            f"{robustness.FORK_SEVERITY})")
    for effect, name in ((NORMAL, "normal"), (DARK, "dark"), (MOTION_BLUR, "motion_blur"),
                         (MIXED, "mixed")):
        p.add_argument(robustness.WEIGHT_FLAGS[effect], default=None,
                       help=f"the {name} network's Keras weights (default: "
                            f"training/weights{effect}/weights.0100.h5 or its newest)"
                            + ("; without any, the generalist is skipped"
                               if effect == MIXED else ""))
    p.add_argument("--classifier", default=None,
                   help="domain classifier run folder or model_NNNN.pth (default: the newest "
                        "run in --classifier_log_dir, its best epoch)")
    p.add_argument("--classifier_log_dir", type=Path, default=paths.DOMAIN_LOG_DIR,
                   help="the classifier's training runs (default: %(default)s)")
    p.add_argument("--config", default="full", choices=sorted(CONFIGS),
                   help="network configuration of the weights (default: %(default)s)")
    p.add_argument("--scale_search", type=float, nargs="+", default=None,
                   help="scale multipliers (default: the --config's recipe)")
    p.add_argument("--scale_mode", default=None, choices=inference.SCALE_MODES,
                   help="native or boxsize (default: the --config's recipe)")
    p.add_argument("--flip", type=str2bool, default=False,
                   help="also predict the mirrored image (default: false)")
    p.add_argument("--resolution", type=int, default=inference.DEFAULT_RESOLUTION,
                   help="decoder grid in image pixels per map pixel (default: %(default)s)")
    p.add_argument("--fuse_skip_below", type=float, default=0.0,
                   help="fused ensemble: leave out experts below this domain probability "
                        "(default: %(default)s)")
    p.add_argument("--results_dir", type=Path, default=paths.EVAL_RESULTS_DIR,
                   help="parent of the default --out_dir (default: %(default)s)")
    p.add_argument("--out_dir", type=Path, default=None,
                   help="default: <results_dir>/robustness-<coco_dataType>-<N>")
    p.add_argument("--overwrite", type=str2bool, default=False,
                   help="redo the chunks a previous run finished (default: false)")
    p.add_argument("--progress", type=str2bool, default=True, help="progress bars")
    add_seed(p)
    return p.parse_args(argv)


def settings_of(args):
    recipe = get_recipe(args.config)
    return inference.InferenceSettings(
        tuple(args.scale_search or recipe.eval_scale_search),
        args.scale_mode or recipe.eval_scale_mode, CONFIGS[args.config].input_size,
        args.flip, args.resolution)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    check_data_type(args.coco_dataType)
    severities = {c: robustness.check_severities(c, getattr(args, flag.lstrip("-")))
                  for c, flag in robustness.SEVERITY_FLAGS.items()}
    plan = robustness.make_plan(args.coco_root, args.coco_dataType, args.num_images,
                                settings_of(args), args.config, args.fuse_skip_below,
                                args.seed, severities)
    given = {e: getattr(args, flag.lstrip("-")) for e, flag in robustness.WEIGHT_FLAGS.items()}
    weights, notes = robustness.find_network_weights(given)
    nets = robustness.PoseNetworks(args.config, weights)
    classifier = robustness.DomainClassifier(args.classifier, args.classifier_log_dir)
    out_dir = args.out_dir or robustness_folder(args.results_dir, args.coco_dataType,
                                                len(plan.images))
    check_writable_dir(out_dir)
    for note in notes:
        print(f"note: {note}")
    result = robustness.run_sweep(plan, nets, classifier, out_dir, args.overwrite,
                                  args.progress, notes)
    figure = report.write_figure(result, out_dir / robustness.FIGURE_NAME)
    print("\n".join(report.robustness_markdown(result)))
    print(f"written to {out_dir}: {robustness.CSV_NAME}, {robustness.JSON_NAME}, "
          f"{figure.name} ({result['chunks_run']} of {len(plan.chunks())} chunks computed "
          f"now)")


if __name__ == "__main__":
    main()
