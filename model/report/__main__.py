"""Rebuild the experiment summary from the outputs that are there, without rerunning anything.

    python -m model.report --output_root DIR      # the folders run_experiment.py --output_root
                                                  # DIR writes
    python -m model.report                        # the repository's default folders

Each folder flag overrides one place. The step timings and the runner's settings are known
only to the runner, so those two sections say n/a here.
"""
import argparse
from pathlib import Path

from model.cli import add_coco_root, main_guard, str2bool
from model.errors import UserError
from model.report.document import write_summary
from model.steps import output_dirs      # the runner's folders, so both read the same places


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m model.report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output_root", type=Path, default=None,
                   help="the --output_root of run_experiment.py (default: the repository's "
                        "default folders)")
    add_coco_root(p)
    p.add_argument("--eval_dir", type=Path, default=None,
                   help="evaluation run folders (default: <output_root>/eval_results)")
    p.add_argument("--weights_dir", type=Path, default=None,
                   help="folder holding weights<effect>/ of each expert (default: "
                        "<output_root>/weights<effect>)")
    p.add_argument("--classifier_log_dir", type=Path, default=None,
                   help="the domain classifier's runs (default: <output_root>/classifier_log)")
    p.add_argument("--domain_dir", type=Path, default=None,
                   help="per-image domain probabilities (default: <output_root>/domain_results)")
    p.add_argument("--out_dir", type=Path, default=None,
                   help="where summary.md, summary.json and the figures go (default: "
                        "<output_root>/results)")
    p.add_argument("--num_images", type=int, default=None,
                   help="N of the evaluation runs (default: found per test set)")
    p.add_argument("--classifier_validation", type=Path, default=None,
                   help="validate.py's metrics.json or its folder (default: <out_dir>/"
                        "classifier_validation/, then the newest run's validation/*/)")
    p.add_argument("--figures", type=str2bool, default=True, help="also draw the figures")
    return p.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    if args.num_images is not None and args.num_images < 1:
        raise UserError(f"--num_images must be >= 1, got {args.num_images}")
    d = output_dirs(args)
    text = write_summary(coco_root=args.coco_root, eval_dir=args.eval_dir or d["eval"],
                         weights_dir=args.weights_dir or d["weights"],
                         classifier_log_dir=args.classifier_log_dir or d["classifier_log"],
                         domain_dir=args.domain_dir or d["domain"],
                         out_dir=args.out_dir or d["results"], num_images=args.num_images,
                         classifier_validation=args.classifier_validation,
                         figures=args.figures)
    print(text)


if __name__ == "__main__":
    main()
