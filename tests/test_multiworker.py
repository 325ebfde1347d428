"""--distribute multiworker on loopback: two training/train_pose.py workers on 127.0.0.1
(MultiWorkerMirroredStrategy over TF_CONFIG) against one process on the same global batch,
chief-only writes, a killed worker, and bad TF_CONFIG. Small configuration, 2 steps, the tiny
HDF5 of the session's synthetic COCO."""
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from model import network
from model.hdf5 import generate_hdf5

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "training" / "train_pose.py"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "",
       "OMP_NUM_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}
# Measured between the chief and one process (batch normalisation off, see the test): the
# losses agree to 2e-8 relative, the weights to 5e-5 (7x7 refinement kernels) and 2.7e-4
# (5x5) of each array's largest magnitude: Adam divides by the root of tiny second moments,
# which magnifies the all-reduce's rounding. One Adam step of a x8 layer moves a weight by up
# to 8e-3 (learning rate 1e-3): above the tolerance for every array whose largest weight is
# under 8, so a wrong update still fails.
LOSS_RTOL, WEIGHT_RTOL = 1e-6, 1e-3


@pytest.fixture(scope="module")
def hdf5_dir(synthetic_coco, tmp_path_factory):
    out = tmp_path_factory.mktemp("mw_hdf5")
    generate_hdf5(synthetic_coco, out, workers=1)
    return out


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def tf_config(ports, index):
    return json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                       "task": {"type": "worker", "index": index}})


def command(hdf5_dir, out_dir, *extra, steps=2):
    return [sys.executable, str(SCRIPT), "--config", "small", "--epochs", "1",
            "--steps_per_epoch", str(steps), "--batch_size", "2", "--workers", "0",
            "--save_every", "0", "--tensorboard", "false", "--progress", "false", "--seed", "3",
            "--batch_norm", "false",
            "--hdf5_dir", str(hdf5_dir), "--out_dir", str(out_dir), *extra]


def start(cmd, tf_config_text=None):
    env = dict(ENV)
    if tf_config_text is not None:
        env["TF_CONFIG"] = tf_config_text
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=REPO)


def finish(procs, timeout):
    try:
        return [p.communicate(timeout=timeout) for p in procs]
    finally:
        for p in procs:
            p.kill()


def read_log(out_dir):
    with open(out_dir / "log.csv") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def runs(hdf5_dir, tmp_path_factory):
    """One process, then two workers (worker 0 the chief), same flags and global batch 2."""
    root = tmp_path_factory.mktemp("mw_runs")
    single = subprocess.run(command(hdf5_dir, root / "single"), capture_output=True, text=True,
                            env=ENV, cwd=REPO, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ports = free_ports(2)
    procs = [start(command(hdf5_dir, root / f"worker{i}", "--distribute", "multiworker",
                           "--collective_timeout", "120"), tf_config(ports, i))
             for i in range(2)]
    outs = finish(procs, 300)
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return root


@pytest.mark.slow
def test_chief_equals_one_process_on_the_same_global_batch(runs):
    """Batch normalisation off: with it, the two workers' synchronized batch normalisation
    ended 4 % away from one process's in validation loss (not the same arithmetic yet)."""
    single, chief = read_log(runs / "single"), read_log(runs / "worker0")
    assert len(single) == len(chief) == 1 and chief[0]["iteration"] == "2"
    for key in ("train_loss", "val_loss", "val_loss_last_stage"):
        np.testing.assert_allclose(float(chief[0][key]), float(single[0][key]), rtol=LOSS_RTOL)
    a = network.read_weight_file(runs / "single" / "weights.0001.h5")
    b = network.read_weight_file(runs / "worker0" / "weights.0001.h5")
    assert a.keys() == b.keys()
    worst = max(float(np.max(np.abs(x - y)) / (np.max(np.abs(x)) + 1e-12))
                for k in a for x, y in zip(a[k], b[k]))
    assert worst < WEIGHT_RTOL, worst
    assert json.loads((runs / "worker0" / "run.json").read_text())["replicas"] == 2


@pytest.mark.slow          # its fixture trains three processes (about 40 s)
def test_only_the_chief_writes(runs):
    assert {"weights.0001.h5", "train_state.h5", "log.csv", "run.json"} <= {
        p.name for p in (runs / "worker0").iterdir()}
    assert list((runs / "worker1").iterdir()) == []


@pytest.mark.slow
def test_a_killed_worker_stops_the_other_with_one_line(hdf5_dir, tmp_path):
    ports = free_ports(2)
    procs = [start(command(hdf5_dir, tmp_path / f"w{i}", "--distribute", "multiworker",
                           "--collective_timeout", "20", steps=10_000), tf_config(ports, i))
             for i in range(2)]
    try:
        # Both train: the chief's state file appears only after its first saves... wait for
        # the first log line of the loop instead (the workers meet at variable creation).
        deadline = time.time() + 180
        while not (tmp_path / "w0" / "run.json").is_file():
            assert time.time() < deadline and procs[0].poll() is None, procs[0].stderr.read()
            time.sleep(0.5)
        time.sleep(3)
        procs[1].send_signal(signal.SIGKILL)
        t0 = time.time()
        _, err = procs[0].communicate(timeout=150)
        waited = time.time() - t0
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode == 2, err[-3000:]
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: multi-worker training stopped: a worker of worker "
                           f"127.0.0.1:{ports[0]}, 127.0.0.1:{ports[1]} stopped or did not "
                           "answer within 20 s"), err[-3000:]
    assert waited < 90, waited
    assert not (tmp_path / "w1" / "weights.0001.h5").exists()


@pytest.mark.parametrize("text, message", [
    ("{not json", "error: TF_CONFIG is not valid JSON: "),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}}', 'error: TF_CONFIG has no "task" with'),
    ('{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}',
     "error: TF_CONFIG task 'worker' 1 is not in its cluster (worker: 1)"),
])
def test_bad_tf_config_is_one_line_at_once(hdf5_dir, tmp_path, text, message):
    t0 = time.time()
    r = subprocess.run(command(hdf5_dir, tmp_path, "--distribute", "multiworker"),
                       capture_output=True, text=True, env={**ENV, "TF_CONFIG": text},
                       cwd=REPO, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), r.stderr
    assert time.time() - t0 < 20      # checked before TensorFlow loads


@pytest.mark.slow
def test_an_unreachable_worker_is_one_line_after_the_timeout(hdf5_dir, tmp_path):
    ports = free_ports(2)           # nobody listens on the second one
    t0 = time.time()
    r = subprocess.run(command(hdf5_dir, tmp_path, "--distribute", "multiworker",
                               "--collective_timeout", "10"),
                       capture_output=True, text=True,
                       env={**ENV, "TF_CONFIG": tf_config(ports, 0)}, cwd=REPO, timeout=120)
    waited = time.time() - t0
    # TensorFlow waits for the cluster inside C++, holding the GIL: the watchdog process
    # writes the line and kills the worker (SIGKILL) 5 s after the timeout.
    assert r.returncode == -signal.SIGKILL and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1].startswith(
        f"error: the multi-worker cluster worker 127.0.0.1:{ports[0]}, 127.0.0.1:{ports[1]} "
        "was not complete within --collective_timeout 10 s"), r.stderr[-3000:]
    assert 15 <= waited < 60, waited
