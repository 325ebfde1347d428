"""Train the domain classifier (normal / dark / motion blur) on COCO train2014 images.

Single process:   python train_domain_classifier/train.py --arch resnet18 --epochs 10
Several (DDP):    torchrun --standalone --nproc_per_node 2 train_domain_classifier/train.py ...
Continue a run:   python train_domain_classifier/train.py --resume train_domain_classifier/log/<run>

Writes <log_dir>/<YYYY-MM-DD_HH-MM>/checkpoints/model_NNNN.pth (one per epoch), best.json,
log.csv, config.json, split.json and tensorboard/. Recipe flags left out take the fork's
values (docs/recipe.md section 7), or on --resume the resumed run's values.
"""
import argparse
import os
from pathlib import Path

# Idle OpenMP threads sleep instead of spinning: on a CPU shared with other jobs, spinning
# threads measured 2-4x the wall and CPU time per step (BENCHMARKS.md). Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from model.cli import main_guard
from train_domain_classifier import trainer
from train_domain_classifier.data import INPUT_MODES, VIEW_SCALE
from train_domain_classifier.network import ARCHS

R, F = trainer.RECIPE, trainer.FREE


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coco_root", type=Path, default=None,
                   help=f"COCO 2014 layout with images/train2014 and annotations/ "
                        f"(default: {F['coco_root']}, or the resumed run's)")
    p.add_argument("--arch", choices=ARCHS, default=None,
                   help=f"backbone (default {R['arch']}); resnet18 for CPU; tiny (4 convolutions, "
                        f"no ImageNet weights) for the synthetic demo and tests")
    p.add_argument("--pretrained", default=None,
                   help="'auto' (default): torchvision's ImageNet file if it is in "
                        "$TORCH_HOME/hub/checkpoints, else a warning and random init; "
                        "'none': random init; or a weight file PATH")
    p.add_argument("--epochs", type=int, default=None,
                   help=f"last epoch to train (default {F['epochs']}); more than the resumed "
                        f"run's extends it")
    p.add_argument("--batch_size", type=int, default=None,
                   help=f"batch per process (default {R['batch_size']})")
    p.add_argument("--lr", type=float, default=None, help=f"AdamW learning rate (default {R['lr']})")
    p.add_argument("--weight_decay", type=float, default=None,
                   help=f"AdamW weight decay (default {R['weight_decay']})")
    p.add_argument("--milestones", type=int, nargs="*", default=None,
                   help=f"epochs after which the learning rate is multiplied by --gamma "
                        f"(default {' '.join(map(str, R['milestones']))})")
    p.add_argument("--gamma", type=float, default=None, help=f"(default {R['gamma']})")
    p.add_argument("--input_size", type=int, default=None,
                   help=f"square network input in pixels (default {R['input_size']})")
    p.add_argument("--input_mode", choices=INPUT_MODES, default=None,
                   help=f"resize (default, the fork's): the whole image resized to --input_size; "
                        f"crop: the whole image resized to --view_size, training on random "
                        f"--input_size crops of it, validation and prediction on the whole view "
                        f"(the blur stays {VIEW_SCALE}x wider in pixels); recorded in the "
                        f"checkpoint, so validate.py and ensemble.py follow it")
    p.add_argument("--view_size", type=int, default=None,
                   help=f"crop mode: side of the whole-image view (default {VIEW_SCALE} x "
                        f"--input_size)")
    p.add_argument("--val_fraction", type=float, default=None,
                   help=f"fraction of the train2014 images held out for validation "
                        f"(default {R['val_fraction']})")
    p.add_argument("--max_images", type=int, default=None,
                   help="use a seeded subset of this many train2014 images (default 0 = all)")
    p.add_argument("--seed", type=int, default=None,
                   help="seed of the split, the initialisation and every epoch's shuffling and "
                        "augmentation (default 0); written to config.json and each checkpoint")
    p.add_argument("--workers", type=int, default=None,
                   help=f"DataLoader worker processes per process (default {F['workers']})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                   help="auto (default): cuda if available")
    p.add_argument("--log_dir", type=Path, default=None,
                   help=f"folder of the runs (default {F['log_dir']})")
    p.add_argument("--cache_dir", type=Path, default=None,
                   help="where the prepared (effect + resize) images are cached "
                        "(default <log_dir>/cache)")
    p.add_argument("--keep_last", type=int, default=None,
                   help="keep only the last N epoch checkpoints plus the best (default 0 = all)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR_OR_CHECKPOINT",
                   help="continue a run (its folder: from its last checkpoint) in the same folder")
    return p.parse_args(argv)


@main_guard
def main(argv=None):
    args = vars(parse_args(argv))
    resume = args.pop("resume")
    config, state, path = trainer.resolve_config(args, resume)
    trainer.train(config, state, path)


if __name__ == "__main__":
    main()
