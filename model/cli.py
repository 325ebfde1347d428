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
           "main_guard", "deferred_signals", "raise_deferred_signal"]


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
    # A progress bar may be mid-line (tqdm writes no newline until a bar closes, and one
    # closing has already left the open-bar list): start the line afresh whenever tqdm is in.
    newline = "\n" if "tqdm.std" in sys.modules else ""
    os.write(2, (newline + line + "\n").encode())
    mp = sys.modules.get("multiprocessing")
    if mp is not None:   # pool workers would outlive a parent that skips its clean-up
        for child in mp.active_children():
            with contextlib.suppress(Exception):
                child.kill()
    os._exit(code)


def _first_signal(signum, frame):
    """The first SIGINT or SIGTERM: raise KeyboardInterrupt or Terminated, so that the
    clean-up runs; from now on a signal exits at once."""
    global _raised_by_signal, _redelivering
    for s in _SIGNAL_EXITS:
        signal.signal(s, _exit_now)
    if sys.unraisablehook is not _after_signal_hook:
        _after_signal_hook.previous = sys.unraisablehook
        sys.unraisablehook = _after_signal_hook
    redelivered, _redelivering = _redelivering, False
    _raised_by_signal = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    _raised_by_signal.signum, _raised_by_signal.redelivered = signum, redelivered
    raise _raised_by_signal


REDELIVERY_DELAY_S = 0.01
_raised_by_signal = None    # the exception the first signal raised
_redelivering = False       # the signal is being delivered again (_after_signal_hook)


def _after_signal_hook(unraisable):
    """sys.unraisablehook once a signal has arrived: the process is on its way out.

    - The signal's own exception raised inside a __del__ or a callback, where Python prints
      "Exception ignored" and drops it: delivered again, so the interrupt is not lost.
    - A tqdm bar whose constructor the signal interrupted has no `disable` attribute; its
      __del__ then fails at exit with an AttributeError nobody can act on: dropped quietly.
    Everything else goes to the previous hook."""
    global _redelivering
    exc, obj = unraisable.exc_value, unraisable.object
    if exc is not None and exc is _raised_by_signal:
        # once, and not at exit (where it may well be dropped again, and no thread starts)
        if not exc.redelivered and not sys.is_finalizing():
            _redelivering = True
            for s in _SIGNAL_EXITS:
                signal.signal(s, _first_signal)
            # From a thread, a moment later: done here, the handler would run inside this
            # hook and be dropped again.
            timer = threading.Timer(REDELIVERY_DELAY_S, signal.pthread_kill,
                                    (threading.main_thread().ident, exc.signum))
            timer.daemon = True
            timer.start()
        return
    if (isinstance(exc, AttributeError) and getattr(obj, "__qualname__", "") == "tqdm.__del__"
            and getattr(obj, "__module__", "").startswith("tqdm")):
        return
    _after_signal_hook.previous(unraisable)


_after_signal_hook.previous = sys.unraisablehook


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


class _Deferral:
    """The state of a deferred_signals block: the handlers it replaced and the signal noted."""

    def __init__(self, previous):
        self.previous, self.pending, self.delivered = previous, None, False

    def note(self, signum, frame):
        if self.pending is None:
            self.pending = signum
            return
        # a second signal: the user does not want to wait for the safe point
        if self.previous.get(signum) is _first_signal:
            _exit_now(signum, frame)
        self.deliver(signum)

    def deliver(self, signum):
        """Put the replaced handlers back and run the one of `signum` now (it raises)."""
        self.delivered = True
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        handler = self.previous.get(signum)
        if callable(handler):
            handler(signum, None)


_deferral = None


@contextlib.contextmanager
def deferred_signals():
    """Inside the block a SIGINT or SIGTERM only takes note; raise_deferred_signal() raises
    what it would have raised (KeyboardInterrupt, Terminated) at a point the code chose, where
    it can stop and join its worker threads and save its work, and leaving the block raises it
    at the latest. A second signal is not deferred: under main_guard it exits at once.

    Only signals with a Python handler are deferred (a default SIGTERM still kills), only in
    the main thread (signals are delivered there); nested blocks share the outermost one."""
    global _deferral
    if _deferral is not None or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNAL_EXITS}
    previous = {s: h for s, h in previous.items() if callable(h) and h is not _exit_now}
    deferral = _Deferral(previous)
    for s in previous:
        signal.signal(s, deferral.note)
    _deferral = deferral
    try:
        yield
    finally:
        _deferral = None
        if deferral.pending is not None and not deferral.delivered:
            deferral.deliver(deferral.pending)
        elif not deferral.delivered:
            for s, handler in previous.items():
                signal.signal(s, handler)


def raise_deferred_signal():
    """Inside deferred_signals: raise the signal noted so far, if any (a no-op elsewhere)."""
    deferral = _deferral
    if (deferral is not None and deferral.pending is not None and not deferral.delivered
            and threading.current_thread() is threading.main_thread()):
        deferral.deliver(deferral.pending)


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
