"""The command line of training/train_pose.py: its flags and the TrainConfig they give.

In the package (not the script) so that run_experiment.py can check the flags it forwards to
train_pose.py with the same parser, before anything runs. Free of TensorFlow."""
import argparse
from pathlib import Path

from model import network, paths
from model.cli import add_seed, str2bool
from model.augment import EFFECT_STAGES
from model.domains import MIXED, NORMAL, TRAINED_MODELS
from model.errors import UserError
from model.machine import usable_cpus
from model.recipes import per_config
from model.schedules import SCHEDULES
from model.train_config import (DISTRIBUTE, INITS, MIXED_PRECISION, TrainConfig,
                                resolve_mixed_precision)


def precision(text):
    """argparse type of --mixed_precision."""
    try:
        return resolve_mixed_precision(text)
    except UserError:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(MIXED_PRECISION)} "
                                         f"(true = float16), got {text!r}") from None


def build_parser(description=None):
    """train_pose.py's flags (also how run_experiment.py checks the flags it forwards)."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--effect", default=NORMAL, choices=list(TRAINED_MODELS),
                        help="the expert's domain effect: '' = normal, _dark, _motion_blur, "
                             f"or {MIXED} = the generalist (each sample normal, dark or "
                             "motion blur with equal probability) (default: '' = normal)")
    parser.add_argument("--effect_stage", default="source", choices=list(EFFECT_STAGES),
                        help="source = the effect on the stored image before the augmenting "
                             "warp (the 30 px blur scales with the image, as in the "
                             "evaluation sets); crop = on the warped crop "
                             "(default: %(default)s)")
    parser.add_argument("--config", default="full", choices=list(network.CONFIGS),
                        help="network configuration (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=100,
                        help="epochs to train in all, counting resumed ones "
                             "(default: %(default)s)")
    parser.add_argument("--batch_size", type=int, default=10,
                        help="global batch, split over the replicas (default: %(default)s)")
    parser.add_argument("--schedule", default="auto", choices=["auto", *SCHEDULES],
                        help="learning-rate recipe; auto = "
                             + per_config(lambda r: r.schedule) + " (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=None,
                        help="base learning rate (default: the schedule's)")
    parser.add_argument("--weight_decay", type=float, default=None,
                        help="Caffe weight decay on kernels (default: the schedule's, 5e-4)")
    parser.add_argument("--weights", default=None,
                        help="initial weights: Keras' ImageNet VGG19 notop file, a Keras "
                             "weight file or a converted CMU model (default: VGG19 from the "
                             "Keras cache for full width, else the random init)")
    parser.add_argument("--hdf5_dir", type=Path, default=paths.DATASET_DIR,
                        help="folder of train_dataset_2014.h5 and val_dataset_2014.h5 "
                             "(default: %(default)s)")
    parser.add_argument("--out_dir", type=Path, default=None,
                        help="checkpoint folder (default: training/weights<effect>)")
    add_seed(parser)
    parser.add_argument("--steps_per_epoch", type=int, default=0,
                        help="optimizer steps per epoch; 0 = one pass over the training "
                             "data (default: %(default)s)")
    parser.add_argument("--save_every", type=int, default=1000,
                        help="iterations between resumable states within an epoch; 0 = at "
                             "epoch ends only (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=min(2, usable_cpus()),
                        help="threads preparing batches ahead; 0 = in the training thread "
                             "(default: %(default)s)")
    parser.add_argument("--mixed_precision", type=precision, default=False,
                        help="false (float32) | float16 (Keras mixed_float16, dynamic loss "
                             "scaling; 'true' means float16) | bfloat16 (mixed_bfloat16, no "
                             "loss scaling); outputs and losses stay float32 "
                             "(default: false)")
    parser.add_argument("--distribute", default="none", choices=list(DISTRIBUTE),
                        help="none | mirrored (every visible GPU) | multiworker (TF_CONFIG) "
                             "(default: %(default)s)")
    parser.add_argument("--collective_timeout", type=float, default=300.0,
                        help="multiworker: seconds for every worker of TF_CONFIG to be up, "
                             "and for each all-reduce; a worker that stops is noticed within "
                             "min(30, this / 4) s more (default: %(default)s)")
    parser.add_argument("--resume", type=str2bool, default=True,
                        help="continue from <out_dir>/train_state.h5 when present "
                             "(default: %(default)s)")
    parser.add_argument("--batch_norm", default="auto", choices=["auto", "true", "false"],
                        help="batch normalisation while training, folded into the convolutions "
                             "of every saved weights file; auto = "
                             + per_config(lambda r: str(r.batch_norm).lower())
                             + " (default: %(default)s)")
    parser.add_argument("--input_norm", default=network.DEFAULT_INPUT_NORM,
                        choices=list(network.INPUT_NORMS),
                        help="conv1_1's parametrisation: folded = input x/256 - 0.5, ImageNet "
                             "VGG19's scale and mean folded into conv1_1 (its kernel 256x "
                             "VGG's); plain = input x - 128, conv1_1 keeps VGG's kernel scale "
                             "(CMU's): the same function, but an SGD step changes conv1_1 "
                             "256^2 times more relative to its kernel; weight files record "
                             "it (default: %(default)s)")
    parser.add_argument("--init", default="auto", choices=list(INITS),
                        help="initialisation without --weights: caffe = normal(0, 0.01) + "
                             "ImageNet VGG19 when it fits and is found; he = He-normal hidden "
                             "layers; auto = caffe if VGG19 is used, else he "
                             "(default: %(default)s)")
    parser.add_argument("--target_dist", type=float, default=None,
                        help="main person's height / crop size before the random scale "
                             "(default: " + per_config(lambda r: r.target_dist) + ")")
    parser.add_argument("--augment", type=str2bool, default=True,
                        help="random scale/rotation/shift/flip (default: %(default)s)")
    parser.add_argument("--tensorboard", type=str2bool, default=True,
                        help="write TensorBoard logs to <out_dir>/logs (default: %(default)s)")
    parser.add_argument("--progress", type=str2bool, default=True,
                        help="tqdm progress bar (default: %(default)s)")
    return parser


def config_from_args(args):
    return TrainConfig(
        config=args.config, effect=args.effect, effect_stage=args.effect_stage,
        epochs=args.epochs, batch_size=args.batch_size,
        schedule=args.schedule, lr=args.lr, weight_decay=args.weight_decay, seed=args.seed,
        steps_per_epoch=args.steps_per_epoch, workers=args.workers,
        mixed_precision=args.mixed_precision, distribute=args.distribute,
        collective_timeout=args.collective_timeout,
        weights=args.weights, train_hdf5=str(paths.hdf5_file(args.hdf5_dir, "train")),
        val_hdf5=str(paths.hdf5_file(args.hdf5_dir, "val")),
        out_dir=str(args.out_dir) if args.out_dir else None, save_every=args.save_every,
        resume=args.resume, augment=args.augment, init=args.init, target_dist=args.target_dist,
        batch_norm="auto" if args.batch_norm == "auto" else args.batch_norm == "true",
        input_norm=args.input_norm,
        tensorboard=args.tensorboard, progress=args.progress)
