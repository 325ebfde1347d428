"""Predict the domain (normal / dark / motion blur) of every image of an evaluation set.

Writes train_domain_classifier/results/<coco_dataType>.json: a list of
{"image_id": id, "effect_prob": [p_normal, p_dark, p_motion_blur]} (softmax probabilities),
image ids from the set's annotation file, then prints how the predictions are distributed
(on val2014_random1k_resolution, a domain the classifier never saw, too).

  python train_domain_classifier/ensemble.py --coco_dataType val2014_random1k_dark
"""
import argparse
import logging
from pathlib import Path

from model import files, paths
from model.cli import add_coco_root, add_data_type, main_guard
from train_domain_classifier import inference
from train_domain_classifier.network import ARCHS

log = logging.getLogger("domain_classifier")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_type(p, required=True)
    add_coco_root(p)
    p.add_argument("--checkpoint", default=None,
                   help="a model_NNNN.pth, or a run folder (its best epoch, else its last); "
                        "default: the newest run in --log_dir")
    p.add_argument("--log_dir", type=Path, default=paths.DOMAIN_LOG_DIR,
                   help="folder of the training runs (default: %(default)s)")
    p.add_argument("--arch", choices=ARCHS, default=None,
                   help="expected architecture; an error if the checkpoint holds another")
    p.add_argument("--out_dir", type=Path, default=paths.DOMAIN_RESULTS_DIR,
                   help="(default: %(default)s)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    return p.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    inference.eval_set_refs(args.coco_root, args.coco_dataType)  # bad set: fail before loading
    model, state, path = inference.load_classifier(args.checkpoint, args.log_dir, args.arch,
                                                   args.device)
    results, skipped = inference.predict_eval_set(model, state, args.coco_root,
                                                  args.coco_dataType, args.batch_size,
                                                  args.workers, args.device)
    out = Path(args.out_dir) / f"{args.coco_dataType}.json"
    files.write_json(out, results)
    dist = inference.distribution(results)
    shares = ", ".join(f"{name} {count} ({count / max(dist['images'], 1):.1%})"
                       for name, count in dist["counts"].items())
    print(f"{args.coco_dataType}: {dist['images']} images, {skipped} skipped; predicted "
          f"{shares}; mean probabilities {dist['mean_prob']} (checkpoint {path}, epoch "
          f"{state.get('epoch')}, run seed {state.get('seed')})")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
