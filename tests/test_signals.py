"""Signals at awkward moments: inside the pipelined prediction's worker threads, inside
tqdm's constructor, inside a finaliser, and twice inside a block that defers them. Each must
end with exit 130 and the one line `interrupted` (no traceback, no "Exception ignored"), or,
in-process, with KeyboardInterrupt raised where the code chose, its threads joined and its
work saved."""
import os
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest

from model import cli, paths, predict_set
from model.skeleton import NUM_HEATMAPS, NUM_PAFS

REPO = paths.REPO_ROOT


def zero_maps(batch):
    b, h, w = np.asarray(batch).shape[:3]
    return (np.zeros((b, h // 8, w // 8, NUM_PAFS), np.float32),
            np.zeros((b, h // 8, w // 8, NUM_HEATMAPS), np.float32))


class FailingNetwork:
    """All-zero maps; on call number `at` it sends the process SIGINT (or raises `error`) and
    takes `pause` seconds, long enough for the decoder to finish the images before."""

    def __init__(self, at, error=None, pause=0.3):
        self.at, self.error, self.pause, self.calls = at, error, pause, 0

    def __call__(self, batch, training=False):
        self.calls += 1
        if self.calls == self.at:
            time.sleep(self.pause)
            if self.error is not None:
                raise self.error
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(self.pause)       # the signal lands here: deferred, not raised
        return zero_maps(batch)


@pytest.fixture()
def images(tmp_path):
    """8 JPEGs of 24x40 (one network input each at the default settings), ids 1..8."""
    rng = np.random.default_rng(0)
    found = []
    for i in range(1, 9):
        name = f"im{i}.jpg"
        cv2.imwrite(str(tmp_path / name), rng.integers(0, 255, (24, 40, 3), dtype=np.uint8))
        found.append({"id": i, "file_name": name, "height": 24, "width": 40})
    return found


def pipeline_threads():
    return [t.name for t in threading.enumerate() if t.name in ("loader", "decoder")]


@pytest.mark.parametrize("error", [None, ValueError("network failed")])
def test_a_stopped_prediction_joins_its_threads_and_checkpoints(images, tmp_path, error):
    """SIGINT during the third network call (batch size 1): KeyboardInterrupt once that call
    has returned, no fourth call, no thread left, and one checkpoint holding the images
    decoded (the first two certainly, the third if the decoder took it). An error in the
    network takes the same way out."""
    saved, handler = [], signal.getsignal(signal.SIGINT)
    net = FailingNetwork(at=3, error=error)
    with pytest.raises(KeyboardInterrupt if error is None else ValueError):
        predict_set.predict_dataset(net, images, tmp_path, batch_size=1, progress=False,
                                  checkpoint=lambda r, ids, s: saved.append((r, ids, s)),
                                  checkpoint_every=100)
    assert net.calls == 3 and pipeline_threads() == []
    assert len(saved) == 1
    records, ids, seconds = saved[0]
    assert ids in ([1, 2], [1, 2, 3]) and records == [] and seconds > 0
    assert signal.getsignal(signal.SIGINT) is handler        # given back


def test_a_deferred_signal_is_raised_where_the_code_checks():
    handler = signal.getsignal(signal.SIGINT)
    reached = []
    with pytest.raises(KeyboardInterrupt):
        with cli.deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            reached.append("after the signal")
            cli.raise_deferred_signal()
            reached.append("after the check")
    assert reached == ["after the signal"] and signal.getsignal(signal.SIGINT) is handler


def test_leaving_the_block_raises_a_signal_noted_after_the_last_check():
    with pytest.raises(KeyboardInterrupt):
        with cli.deferred_signals():
            cli.raise_deferred_signal()                # nothing noted: no-op
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
    with cli.deferred_signals():                       # no signal: nothing raised
        cli.raise_deferred_signal()
    cli.raise_deferred_signal()                        # outside a block: no-op


# ---------------------------------------------------------------------------- subprocesses

HALF_BUILT_BAR = """
import os, signal, sys
from tqdm import tqdm
from model.cli import main_guard

class SignallingStream:
    # Ctrl-C lands inside tqdm's constructor, before it has set its attributes
    def isatty(self):
        os.kill(os.getpid(), signal.SIGINT)
        return True
    def write(self, s):
        sys.stderr.write(s)
    def flush(self):
        sys.stderr.flush()

@main_guard
def main():
    tqdm(range(3), file=SignallingStream(), disable=None)

main()
"""

IN_A_FINALISER = """
import os, signal, time
from model.cli import main_guard

class Finalised:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass

@main_guard
def main():
    Finalised()
    print("after the finaliser", flush=True)
    time.sleep(30)
    print("never interrupted", flush=True)

main()
"""

DEFERRING = """
import sys, time
from model.cli import deferred_signals, main_guard, raise_deferred_signal

@main_guard
def main():
    with deferred_signals():
        print("working", flush=True)
        for _ in range(3000):              # 30 s
            time.sleep(0.01)
            if sys.argv[1] == "checks":
                raise_deferred_signal()
    print("not interrupted", flush=True)

main()
"""


def run_python(code, *argv, signals=(), wait_for=None, timeout=30):
    """(exit code, stdout, stderr, seconds from the first signal to the exit)."""
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if wait_for is not None:
            line = proc.stdout.readline()
            assert wait_for in line, line
        started = time.time()
        for k, s in enumerate(signals):
            if k:
                time.sleep(0.3)
            proc.send_signal(s)
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return proc.returncode, out, err, time.time() - started


def assert_interrupted(code, err):
    assert code == 130, err
    assert "Traceback" not in err and "Exception ignored" not in err, err
    assert err.strip() == "interrupted", err


def test_a_signal_inside_a_progress_bar_constructor_exits_quietly():
    code, _, err, _ = run_python(HALF_BUILT_BAR)
    assert_interrupted(code, err)


def test_a_signal_inside_a_finaliser_is_not_lost():
    code, out, err, seconds = run_python(IN_A_FINALISER)
    assert_interrupted(code, err)
    assert "after the finaliser" in out and "never interrupted" not in out
    assert seconds < 10                       # delivered again at once, not after the sleep


def test_a_deferred_signal_ends_the_run_at_the_check():
    code, out, err, seconds = run_python(DEFERRING, "checks", signals=[signal.SIGINT],
                                         wait_for="working")
    assert_interrupted(code, err)
    assert "not interrupted" not in out and seconds < 10


def test_a_second_signal_during_a_deferral_exits_at_once():
    """No check for 30 s: the first signal waits, the second exits at once."""
    code, out, err, seconds = run_python(DEFERRING, "no checks",
                                         signals=[signal.SIGINT, signal.SIGINT],
                                         wait_for="working")
    assert_interrupted(code, err)
    assert "not interrupted" not in out and seconds < 10
