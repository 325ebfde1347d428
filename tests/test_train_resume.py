"""A real kill -9 of training/train_pose.py while it writes its training state, then the
same command again: it resumes from the last complete state and ends where an
uninterrupted run ends."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from model import network, train_config, trainer
from model.state import STATE_FILE, read_state_record
from model.hdf5 import generate_hdf5

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def command(hdf5_dir, out_dir):
    return [sys.executable, str(REPO / "training" / "train_pose.py"), "--config", "small",
            "--hdf5_dir", str(hdf5_dir), "--out_dir", str(out_dir), "--epochs", "2",
            "--steps_per_epoch", "3", "--batch_size", "2", "--save_every", "1",
            "--workers", "1", "--seed", "5", "--tensorboard", "false", "--progress", "false"]


@pytest.mark.slow
def test_kill_during_checkpoint_write_then_same_command_resumes(synthetic_coco, tmp_path):
    hdf5_dir = tmp_path / "hdf5"
    generate_hdf5(synthetic_coco, hdf5_dir, workers=1)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(hdf5_dir, killed), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    state_file = killed / STATE_FILE
    deadline = time.time() + 120
    caught_writing = False
    try:
        # Wait for a first complete state, then for the next write to be under way.
        while time.time() < deadline and proc.poll() is None:
            if state_file.is_file() and any(killed.glob(f".{STATE_FILE}.*.tmp")):
                caught_writing = True
                break
            time.sleep(0.002)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert caught_writing
    # The half-written file is a temporary: the state file itself is complete.
    before = read_state_record(state_file)
    assert 1 <= before.iteration < 6

    rerun = subprocess.run(command(hdf5_dir, killed), env=ENV, capture_output=True,
                           text=True, timeout=180)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed from {state_file} at epoch {before.epoch + 1}, batch {before.batch} " \
           f"(iteration {before.iteration})" in rerun.stderr
    assert not list(killed.glob(".*.tmp"))
    after = read_state_record(state_file)
    assert (after.epoch, after.batch, after.iteration) == (2, 0, 6)
    assert [h["iteration"] for h in after.history] == [3, 6]

    # The uninterrupted run of the same command, in this process (saves a TF start-up).
    straight = tmp_path / "straight"
    trainer.train(train_config.TrainConfig(
        config="small", effect="", epochs=2, batch_size=2, seed=5, steps_per_epoch=3,
        workers=1, train_hdf5=str(hdf5_dir / "train_dataset_2014.h5"),
        val_hdf5=str(hdf5_dir / "val_dataset_2014.h5"), out_dir=str(straight),
        save_every=1, tensorboard=False, progress=False))
    a = network.read_weight_file(straight / "weights.0002.h5")
    b = network.read_weight_file(killed / "weights.0002.h5")
    for layer in a:
        for x, y in zip(a[layer], b[layer]):
            np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6, err_msg=layer)
    ref = read_state_record(straight / STATE_FILE)
    np.testing.assert_allclose([h["val_loss"] for h in after.history],
                               [h["val_loss"] for h in ref.history], rtol=1e-4)
    with h5py.File(straight / STATE_FILE, "r") as fa, h5py.File(state_file, "r") as fb:
        # Optimizer slots too: iteration counter, Adam's moments.
        assert len(fa["optimizer"]) == len(fb["optimizer"])
        for k in fa["optimizer"]:
            np.testing.assert_allclose(fb["optimizer"][k][()], fa["optimizer"][k][()],
                                       rtol=1e-3, atol=1e-7)
