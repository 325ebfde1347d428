"""Shared command-line pieces: real booleans, the common flags, one-line errors, signals.

ensure_writable_dir and check_writable_dir live in model.files; they are re-exported here
for the scripts."""
import argparse
import contextlib
import functools
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from model import paths
from model.errors import UserError
from model.files import check_writable_dir, ensure_writable_dir

__all__ = ["str2bool", "add_coco_root", "add_data_type", "check_data_type", "add_seed",
           "setup_logging", "check_writable_dir", "ensure_writable_dir", "Terminated",
           "main_guard"]


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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like SIGINT's KeyboardInterrupt so that the same clean-up runs."""


_SIGNAL_EXITS = {signal.SIGINT: (130, "interrupted"), signal.SIGTERM: (143, "terminated")}


def _exit_now(signum, frame):
    """A second signal while the first is being handled: one line, exit at once."""
    code, line = _SIGNAL_EXITS[signum]
    tqdm_std = sys.modules.get("tqdm.std")
    bars_open = tqdm_std is not None and bool(getattr(tqdm_std.tqdm, "_instances", None))
    os.write(2, (("\n" if bars_open else "") + line + "\n").encode())
    mp = sys.modules.get("multiprocessing")
    if mp is not None:   # pool workers would outlive a parent that skips its clean-up
        for child in mp.active_children():
            with contextlib.suppress(Exception):
                child.kill()
    os._exit(code)


def _first_signal(signum, frame):
    for s in _SIGNAL_EXITS:
        signal.signal(s, _exit_now)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


@contextlib.contextmanager
def _signal_handlers():
    """SIGINT and SIGTERM raise (KeyboardInterrupt, Terminated) once, then exit at once;
    the previous handlers come back afterwards (main() may run inside a test)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _first_signal) for s in _SIGNAL_EXITS}
    try:
        yield
    finally:
        # after a real signal the process is on its way out: a second one still exits at once
        if signal.getsignal(signal.SIGINT) is not _exit_now:
            for s, handler in previous.items():
                signal.signal(s, handler)


def main_guard(main):
    """Decorator for scripts' main(): UserError -> one line on stderr and exit 2; SIGINT ->
    "interrupted", exit 130; SIGTERM -> "terminated", exit 143; a second signal during the
    clean-up of the first exits at once, without a traceback."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        setup_logging()
        try:
            with _signal_handlers():
                return main(*args, **kwargs)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
        except Terminated:
            print("terminated", file=sys.stderr)
            sys.exit(143)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
    return wrapper
