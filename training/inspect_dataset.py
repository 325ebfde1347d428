"""Write PNGs of augmented training samples with their heatmaps, PAFs and mask overlaid.

Each PNG shows one sample exactly as the training pipeline builds it (model.pipeline): the
augmented crop with the expert's effect, the 18 part heatmaps, the 19 PAFs and the
background/mask. The samples are the first --num of epoch 0's seeded order, so a seed picks
the same samples and the same augmentation as training with that seed.
"""
import argparse
import logging
import time

import cv2

from model import paths
from model.augment import AugmentParams
from model.cli import add_seed, check_writable_dir, ensure_writable_dir, main_guard, str2bool
from model.domains import NORMAL
from model.effects import PIXEL_EFFECTS
from model.errors import UserError
from model.files import write_bytes, write_json
from model.hdf5 import Hdf5Samples

log = logging.getLogger("inspect_dataset")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hdf5", default=paths.hdf5_file(paths.DATASET_DIR, "train"),
                   help="compact HDF5 of training/generate_hdf5_coco2014.py "
                        "(default: %(default)s)")
    p.add_argument("--num", type=int, default=8, help="samples to draw (default: %(default)s)")
    p.add_argument("--effect", default=NORMAL, choices=sorted(PIXEL_EFFECTS),
                   help="expert's effect applied to the crops (default: none)")
    p.add_argument("--out", default=paths.REPO_ROOT / "training" / "inspect",
                   help="output directory (default: %(default)s)")
    p.add_argument("--augment", type=str2bool, default=True,
                   help="random augmentation (false: the validation centre crop)")
    p.add_argument("--crop_size", type=int, default=AugmentParams.crop_size,
                   help="crop size in pixels, a multiple of 8 (default: %(default)s)")
    p.add_argument("--epoch", type=int, default=0, help="epoch whose augmentation is drawn")
    add_seed(p)
    return p.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    if args.num < 1:
        raise UserError(f"--num must be >= 1, got {args.num}")
    check_writable_dir(args.out)
    start = time.time()
    try:
        params = AugmentParams(crop_size=args.crop_size)
    except ValueError as e:
        raise UserError(str(e)) from None
    samples = Hdf5Samples(args.hdf5)    # a bad file fails here, before TensorFlow loads
    out = ensure_writable_dir(args.out)  # only once the inputs are known to be good
    from model.pipeline import PoseBatches, render_sample  # imports TensorFlow
    data = PoseBatches(samples, batch_size=1, effect=args.effect, num_stages=1,
                       params=params, seed=args.seed, augment=args.augment, epoch=args.epoch)
    indices = [int(i) for i in data.order[:args.num]]
    log.info("inspect: start, %d of %d samples of %s, effect %r, seed %d, epoch %d",
             len(indices), len(data.samples), args.hdf5, args.effect, args.seed, args.epoch)
    written = []
    for rank, index in enumerate(indices):
        item = data.sample(index)
        ok, png = cv2.imencode(".png", render_sample(item, data.stride))
        name = f"sample_{rank:03d}_index{index}_image{item['image_id']}{args.effect}.png"
        write_bytes(out / name, png.tobytes())
        written.append({"file": name, "index": index, "image_id": int(item["image_id"]),
                        "flip": bool(item["flip"]), "people": int(len(item["joints"]))})
    write_json(out / "inspect.json", {
        "hdf5": str(args.hdf5), "effect": args.effect, "seed": args.seed, "epoch": args.epoch,
        "augment": args.augment, "crop_size": args.crop_size, "samples": written}, indent=1)
    data.close()
    log.info("inspect: end, %d PNGs in %s, %.1f s", len(written), out, time.time() - start)


if __name__ == "__main__":
    main()
