"""Uncertainty of the three experts on one evaluation set, measured without ground truth,
and (where the set has ground truth) how well it predicts their error, in two layers:
detection (AUROC of the disagreement for telling correct detections from false positives and
misses) and pose (Pearson, Spearman, AUSE over the people at least two experts found that the
judged model predicted and that match a ground-truth person; n/a below 10 people).

Reads the experts' predictions (eval/eval_coco2014_single_scale.py --effect "" / _dark /
_motion_blur) and, if present, the routed ensemble's, matches people across the experts and
writes into --results_dir, as <X>-three-model-epoch100-open-pose-single-scale-<N><suffix>:
  .csv                            per limb + totals
  -persons.csv                    per person (with each model's detection-level case)
  -quality.json                   counts, both layers, risk-coverage
  -detection.csv, -pose.csv       the two layers as tables                (ground truth only)
  -sparsification.{csv,png}       the pose level's curves                 (ground truth only)
  -risk_coverage.{csv,png}        AP after rejecting the most uncertain   (ground truth only)
Definitions: model/uncertainty.py and the README; the files: model/report/uncertainty.py.

  python eval/util_ainu.py --coco_dataType val2014_random1k_resolution
"""
import argparse
from pathlib import Path

from model import paths
from model.cli import add_coco_root, add_data_type, check_data_type, ensure_writable_dir, main_guard
from model.domains import ENSEMBLE, ENSEMBLE_FUSE
from model.errors import UserError
from model.report.uncertainty import analyse
from model.uncertainty import DEFAULT_MATCH_OKS, MEASURES


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_type(p, required=True)
    p.add_argument("--fir_img_num", type=int, default=None,
                   help="image count N of the experts' runs (default: the one found in "
                        "--results_dir)")
    p.add_argument("--match_oks", type=float, default=DEFAULT_MATCH_OKS,
                   help="OKS between two experts' predictions needed to call them the same "
                        "person (default: %(default)s)")
    p.add_argument("--ensemble", choices=(ENSEMBLE, ENSEMBLE_FUSE), default=ENSEMBLE,
                   help="whose predictions fill the ensemble columns (default: %(default)s, "
                        "the routed ensemble)")
    p.add_argument("--results_dir", type=Path, default=paths.EVAL_RESULTS_DIR,
                   help="where the models' run folders are and the outputs go "
                        "(default: %(default)s)")
    add_coco_root(p)
    return p.parse_args(argv)


SHORT = {"translational": "transl.", "rotational": "rot."}


def _num(x, spec=".3f"):
    return "n/a" if x is None else format(x, spec)


def print_detection(d):
    print(f"detection level: {d['found_by_fewer_than_two']} of {d['people']} people found by "
          f"fewer than two experts; {d['gt_people_found_by_no_expert']} ground-truth people "
          f"found by none (left out: no disagreement); correct = OKS >= {d['oks_threshold']}")
    print(f"{'model':<13}{'correct':>9}{'false pos.':>12}{'misses':>8}"
          + "".join(f"{'AUROC ' + SHORT[m]:>13}" for m in MEASURES))
    for label, r in d["models"].items():
        print(f"{label:<13}{r['correct']:>9}{r['false_positives']:>12}{r['misses']:>8}"
              + "".join(f"{_num(r['auroc'][m]):>13}" for m in MEASURES))


def print_pose(pose):
    print(f"pose level (people found by >= 2 experts, predicted by the model, matched to a "
          f"ground-truth person; n/a below {pose['min_people']}):")
    print(f"{'measure':<14}{'model':<13}{'people':>7}{'pearson (p)':>22}{'spearman (p)':>22}"
          f"{'AUSE':>8}")
    for m in MEASURES:
        for label, r in pose["correlation"][m].items():
            print(f"{m:<14}{label:<13}{r['n']:>7}"
                  f"{_num(r['pearson_r']):>11} ({_num(r['pearson_p'], '.2g'):>8})"
                  f"{_num(r['spearman_r']):>11} ({_num(r['spearman_p'], '.2g'):>8})"
                  f"{_num(pose['ause'][m][label]):>8}")


def print_risk(risk_coverage):
    fractions = sorted({r["rejected_fraction"] for r in risk_coverage})
    print("risk-coverage: AP on the people kept / AP against all ground truth, after "
          "rejecting the most uncertain people")
    print(f"{'measure':<14}{'model':<13}" + "".join(f"{f:>14.0%}" for f in fractions))
    table = {}
    for r in risk_coverage:
        table.setdefault((r["measure"], r["model"]), []).append(
            f"{r['ap_kept_people']:.3f}/{r['ap']:.3f}")
    for (m, label), cells in table.items():
        print(f"{m:<14}{label:<13}" + "".join(f"{c:>14}" for c in cells))


@main_guard
def main(argv=None):
    args = parse_args(argv)
    check_data_type(args.coco_dataType)
    if args.fir_img_num is not None and args.fir_img_num < 1:
        raise UserError(f"--fir_img_num must be >= 1, got {args.fir_img_num}")
    if not 0 < args.match_oks <= 1:
        raise UserError(f"--match_oks must be in (0, 1], got {args.match_oks}")
    if not args.results_dir.is_dir():
        raise UserError(f"results folder not found: {args.results_dir}")
    ensure_writable_dir(args.results_dir)
    s = analyse(args.coco_dataType, args.results_dir, args.coco_root, args.fir_img_num,
                args.match_oks, args.ensemble)
    c, two = s["counts"], s["mean_found_by_at_least_two"]
    print(f"{s['data_type']}: {c['images']} images ({c['images_without_people']} where no "
          f"expert found anyone), {c['people']} people, {c['flagged']} flagged "
          f"(seen by fewer than 2 experts); mean disagreement of the others translational "
          f"{_num(two['translational'])}, rotational {_num(two['rotational'])}")
    for note in s["notes"]:
        print(f"note: {note}")
    if "pose" in s:
        print_detection(s["detection"])
        print_pose(s["pose"])
        print_risk(s["risk_coverage"])
    print(f"written to {args.results_dir}: {', '.join(s['files'])}")


if __name__ == "__main__":
    main()
