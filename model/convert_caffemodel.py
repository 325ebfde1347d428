"""Convert CMU's released Caffe model (e.g. pose_iter_440000.caffemodel) to Keras weights.

    python -m model.convert_caffemodel --caffemodel pose_iter_440000.caffemodel \
        --out training/weights/weights.0100.h5 [--config full]

Caffe is not needed: the protobuf is parsed directly (model/caffe.py). The output loads by
layer name with model.network.load_weights; a name ending in .weights.h5 is written in
Keras 3's format, any other name in the Keras 2 layout of the public reproductions.
"""
import argparse
from pathlib import Path

from model import caffe, network
from model.cli import main_guard


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--caffemodel", type=Path, required=True,
                        help="CMU's binary .caffemodel (COCO model: pose_iter_440000.caffemodel)")
    parser.add_argument("--out", type=Path, required=True,
                        help="Keras weight file to write (.h5 or .weights.h5)")
    parser.add_argument("--config", default="full", choices=sorted(network.CONFIGS),
                        help="network configuration the caffemodel must match "
                             "(default: %(default)s)")
    return parser.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    caffe.convert_caffemodel(args.caffemodel, args.out, args.config)


if __name__ == "__main__":
    main()
