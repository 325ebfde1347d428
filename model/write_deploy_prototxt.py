"""Write CMU's deploy prototxt of a network configuration (CMU's layer names and order).

    python -m model.write_deploy_prototxt --out pose_deploy.prototxt [--config full]
        [--height 368 --width 368]

Input blob "image" 1x3xHxW, BGR already normalised as x/256 - 0.5 (the Caffe net has no
normalisation layer); outputs Mconv7_stage<N>_L1 (PAF) and Mconv7_stage<N>_L2 (heatmaps).
With a matching caffemodel it runs in Caffe or OpenCV's DNN module
(cv2.dnn.readNetFromCaffe(prototxt, caffemodel)).
"""
import argparse
import logging
from pathlib import Path

from model import caffe, network
from model.cli import main_guard
from model.errors import UserError


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="prototxt file to write")
    parser.add_argument("--config", default="full", choices=sorted(network.CONFIGS),
                        help="network configuration (default: %(default)s)")
    parser.add_argument("--height", type=int, default=None,
                        help="input height (default: the configuration's input size)")
    parser.add_argument("--width", type=int, default=None,
                        help="input width (default: the configuration's input size)")
    return parser.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    for flag in ("height", "width"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise UserError(f"--{flag} must be a positive number of pixels, got {value}")
    path = caffe.write_deploy_prototxt(args.out, args.config, args.height, args.width)
    logging.getLogger(__name__).info("wrote %s (config %s)", path, args.config)


if __name__ == "__main__":
    main()
