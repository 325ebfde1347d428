"""Shared command-line pieces: real booleans, the common flags, one-line errors."""
import argparse
import functools
import logging
import os
import sys
from pathlib import Path

from model import paths
from model.errors import UserError


def str2bool(text):
    """argparse type for real booleans ("False", "false", "0", "no" are false)."""
    value = str(text).strip().lower()
    if value in ("1", "true", "t", "yes", "y", "on"):
        return True
    if value in ("0", "false", "f", "no", "n", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false/1/0), got {text!r}")


def add_coco_root(parser):
    parser.add_argument("--coco_root", type=Path, default=paths.DEFAULT_COCO_ROOT,
                        help="COCO 2014 layout: images/, annotations/ (default: %(default)s)")


def add_data_type(parser, **kwargs):
    """--coco_dataType, the seed's name for an evaluation set (checked by check_data_type)."""
    parser.add_argument("--coco_dataType", **kwargs,
                        help=f"evaluation set, one of: {', '.join(paths.EVAL_DATATYPES)}")


def check_data_type(data_type):
    if data_type not in paths.EVAL_DATATYPES:
        raise UserError(f"unknown --coco_dataType {data_type!r}; choose from "
                        f"{', '.join(paths.EVAL_DATATYPES)}")
    return data_type


def add_seed(parser, default=0):
    parser.add_argument("--seed", type=int, default=default,
                        help="seed of every random choice, written next to the outputs "
                             "(default: %(default)s)")


def setup_logging():
    logging.basicConfig(level=os.environ.get("LOGLEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")


def ensure_writable_dir(path):
    """Create `path` if needed; UserError if it cannot be written."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create output directory {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise UserError(f"output directory is not writable: {path}")
    return path


def main_guard(main):
    """Decorator for scripts' main(): UserError -> one line on stderr and exit 2."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        setup_logging()
        try:
            return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
    return wrapper
