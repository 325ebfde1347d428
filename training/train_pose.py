"""Train one pose expert (CMU's 6-stage VGG-PAF recipe, or the small CPU configuration).

    python training/train_pose.py --effect _dark --config small --epochs 8

The effect is applied on the fly to the stored image before the augmentation (--effect_stage
crop: to the augmented crop), so the three experts ("", _dark, _motion_blur) and the
generalist (_mixed) train from the same HDF5 files. Checkpoints go to training/weights<effect>/
(weights.NNNN.h5 after every epoch, train_state.h5, log.csv, run.json, logs/ for
TensorBoard). Rerunning the same command after an interruption (even kill -9) continues
from the last complete state; a finished run is left as it is.

TensorFlow loads only after the flags and the input files are checked (model.train_config is
free of it), so --help and bad input answer at once."""
from model.cli import main_guard
from model.train_cli import build_parser, config_from_args
from model.train_config import check_inputs


def parse_args(argv=None):
    return build_parser(__doc__).parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    cfg = config_from_args(args)
    plan = check_inputs(cfg)
    # Imported here, after the checks: it loads TensorFlow (a few seconds).
    from model.trainer import Trainer
    result = Trainer(cfg, plan).run()
    history = result["history"]
    if history:
        last = history[-1]
        print(f"epoch {last['epoch']}/{args.epochs}, iteration {last['iteration']}, train loss "
              f"{last['train_loss']:.4f}, val loss {last['val_loss']:.4f} (seed {args.seed}); "
              f"weights in {result['out_dir']}")


if __name__ == "__main__":
    main()
