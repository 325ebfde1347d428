"""Structural problems: folders that cannot be made, damaged or foreign HDF5 files, runs that
died (their partial outputs and temporary files), and signals. Each bad case must end in one
line naming the problem, the documented exit code, no traceback and no complete-looking
output."""
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from model import files, paths
from model.errors import UserError
from model.hdf5 import Hdf5Samples, completion_problem, generate_hdf5

REPO = paths.REPO_ROOT
HDF5_SCRIPT = REPO / "training" / "generate_hdf5_coco2014.py"
INSPECT_SCRIPT = REPO / "training" / "inspect_dataset.py"
EVALSETS_SCRIPT = REPO / "dataset" / "make_domain_datasets.py"


def run_script(*argv, timeout=120):
    return subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def assert_one_line_error(run, code, *fragments):
    """Exit `code`, no traceback, and exactly one 'error:' line, the last, with `fragments`."""
    assert run.returncode == code, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert errors == lines[-1:], run.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


def dead_pid():
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    return int(child.stdout)


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def written(synthetic_coco, tmp_path_factory):
    """(coco_root, out_dir) with both compact HDF5 files of the synthetic set, written once."""
    out = tmp_path_factory.mktemp("structure_h5")
    generate_hdf5(synthetic_coco, out, workers=1)
    return synthetic_coco, out


def _drop(name):
    def damage(f):
        del f[name]
    return damage


def _set_attr(key, value):
    def damage(f):
        f.attrs[key] = value
    return damage


def _del_attr(key):
    def damage(f):
        del f.attrs[key]
    return damage


def _shorten(name):
    def damage(f):
        data = f[name][:-1]
        del f[name]
        f.create_dataset(name, data=data)
    return damage


def _zero_images(f):
    f["images/bytes"][:] = 0


DAMAGES = {
    "missing dataset": (_drop("images/bytes"),
                        "has no dataset 'images/bytes' (written by another version?)"),
    "wrong format": (_set_attr("format", "someone-elses-format"),
                     "is not a compact COCO HDF5 (format 'someone-elses-format'"),
    "wrong version": (_set_attr("format_version", 99), "has format version 99"),
    "unfinished": (_del_attr("num_samples"),
                   "has no attribute 'num_samples' (its writing never finished)"),
    "short table": (_shorten("samples/num_people"), "entries in 'samples/num_people' for"),
    "truncated": ("truncate", "is truncated ("),
    "not hdf5": ("garbage", "is not an HDF5 file"),
}


def damaged_copy(source, target, kind):
    damage = DAMAGES[kind][0]
    if damage == "truncate":
        data = source.read_bytes()
        target.write_bytes(data[:len(data) // 2])
    elif damage == "garbage":
        target.write_bytes(b"this is not an HDF5 file\n" * 40)
    else:
        shutil.copyfile(source, target)
        with h5py.File(target, "a") as f:
            damage(f)
    return target


# ---------------------------------------------------------------------------- folders

@pytest.mark.parametrize("in_the_way", ["itself", "parent"])
def test_a_file_where_a_folder_must_be_made(tmp_path, in_the_way):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    target = blocker if in_the_way == "itself" else blocker / "sub" / "deeper"
    with pytest.raises(UserError, match=f"cannot create output directory {target}: "
                                        f"{blocker} exists and is not a folder"):
        files.ensure_writable_dir(target)
    with pytest.raises(UserError, match="exists and is not a folder"):
        files.write_text(target / "out.txt", "x")          # atomic_path makes folders alike
    assert blocker.read_text() == "x"


def test_unwritable_folder_is_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:   # root writes anywhere: the permission check is what is tested
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: (str(p) != str(folder)
                                                           and real_access(p, mode)))
    with pytest.raises(UserError, match=f"output directory is not writable: {folder}$"):
        files.ensure_writable_dir(folder)
    with pytest.raises(UserError, match=f"cannot create output directory {folder}/new: "
                                        f"{folder} is not writable"):
        files.write_bytes(folder / "new" / "a.bin", b"x")
    folder.chmod(0o755)
    assert list(folder.iterdir()) == []


def test_disk_full_is_one_line_and_leaves_nothing(tmp_path):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    target = tmp_path / "big.bin"
    with pytest.raises(UserError, match=f"cannot write {target}: no space left on device"):
        with files.atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            with open("/dev/full", "wb") as full:
                full.write(b"x" * 65536)
                full.flush()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("in_the_way", ["itself", "parent"])
def test_hdf5_script_output_folder_is_a_file(tmp_path, in_the_way):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker if in_the_way == "itself" else blocker / "h5"
    run = run_script(HDF5_SCRIPT, "--coco_root", tmp_path / "none", "--out_dir", out)
    assert_one_line_error(run, 2, f"cannot create output directory {out}",
                          "exists and is not a folder")
    assert sorted(os.listdir(tmp_path)) == ["blocker"]


def test_hdf5_script_bad_input_creates_no_output_folder(tmp_path):
    run = run_script(HDF5_SCRIPT, "--coco_root", tmp_path / "none", "--out_dir",
                     tmp_path / "new" / "h5")
    assert_one_line_error(run, 2, "annotation file not found")
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def val_only_coco(synthetic_coco, tmp_path_factory):
    root = tmp_path_factory.mktemp("structure_evalsets")
    shutil.copytree(synthetic_coco / "images" / "val2014", root / "images" / "val2014")
    shutil.copytree(synthetic_coco / "annotations", root / "annotations")
    return root


def test_evaluation_sets_script_output_folder_is_a_file(val_only_coco):
    blocker = paths.image_dir(val_only_coco, paths.EVAL_BASE + "_dark")
    blocker.write_text("x")
    try:
        run = run_script(EVALSETS_SCRIPT, "--coco_root", val_only_coco, "--num", 3)
        assert_one_line_error(run, 2, f"cannot create output directory {blocker}",
                              "exists and is not a folder")
        # checked before any work: not even the first (normal) set was started
        assert sorted(p.name for p in (val_only_coco / "images").iterdir()) == [
            "val2014", blocker.name]
        assert not paths.annotation_file(val_only_coco, paths.EVAL_BASE).exists()
    finally:
        blocker.unlink()


def test_evaluation_sets_script_bad_input_creates_nothing(tmp_path):
    run = run_script(EVALSETS_SCRIPT, "--coco_root", tmp_path / "coco", "--num", 3)
    assert_one_line_error(run, 2, "annotation file not found")
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------- HDF5 layout

@pytest.mark.parametrize("kind", sorted(DAMAGES))
def test_reader_names_what_the_file_lacks(written, tmp_path, kind):
    _, out = written
    bad = damaged_copy(paths.hdf5_file(out, "val"), tmp_path / "val.h5", kind)
    with pytest.raises(UserError) as e:
        Hdf5Samples(bad)
    message = str(e.value)
    assert message.startswith(f"HDF5 file {bad} ") and DAMAGES[kind][1] in message
    assert "\n" not in message and message.endswith("generate_hdf5_coco2014.py")
    assert completion_problem(bad) is not None


@pytest.mark.parametrize("kind", ["missing dataset", "wrong format", "unfinished",
                                  "truncated", "not hdf5"])
def test_inspect_dataset_names_what_the_file_lacks(written, tmp_path, kind):
    _, out = written
    bad = damaged_copy(paths.hdf5_file(out, "val"), tmp_path / "val.h5", kind)
    run = run_script(INSPECT_SCRIPT, "--hdf5", bad, "--out", tmp_path / "inspect", "--num", 1)
    assert_one_line_error(run, 2, f"HDF5 file {bad}", DAMAGES[kind][1])
    assert not (tmp_path / "inspect").exists()       # no output folder for a bad input


def test_undecodable_image_bytes_name_the_record(written, tmp_path):
    _, out = written
    bad = tmp_path / "val.h5"
    shutil.copyfile(paths.hdf5_file(out, "val"), bad)
    with h5py.File(bad, "a") as f:
        _zero_images(f)
    with Hdf5Samples(bad) as ds:                     # the layout is fine: it opens
        k = int(ds._image_index[0])
        with pytest.raises(UserError, match=rf"the image of record {k} \(image "
                                            rf"{ds.image_ids[0]}, sample 0\) does not decode"):
            ds[0]


# ---------------------------------------------------------------------------- verified resume

@pytest.mark.parametrize("kind", ["unfinished", "truncated", "short table"])
def test_hdf5_without_its_completion_mark_is_written_again(written, tmp_path, kind, caplog):
    root, out = written
    target = tmp_path / "h5"
    target.mkdir()
    for split in ("train", "val"):
        shutil.copyfile(paths.hdf5_file(out, split), paths.hdf5_file(target, split))
    val = paths.hdf5_file(target, "val")
    damaged_copy(paths.hdf5_file(out, "val"), val, kind)
    with caplog.at_level(logging.WARNING, logger="model.hdf5"):
        reports = generate_hdf5(root, target, workers=1)
    assert reports["train"]["kept"] and "kept" not in reports["val"]
    notes = [r.getMessage() for r in caplog.records if "written again" in r.getMessage()]
    assert len(notes) == 1 and f"hdf5 val: {val} " in notes[0] and DAMAGES[kind][1] in notes[0]
    assert completion_problem(val) is None
    with Hdf5Samples(val) as ds, Hdf5Samples(paths.hdf5_file(out, "val")) as ref:
        assert len(ds) == len(ref) and ds.image_ids.tolist() == ref.image_ids.tolist()


def temporary(folder, name, pid, host=None, token="abc_1234"):
    """A temporary file name of atomic_path's form, written with some bytes."""
    owner = files.temporary_owner_tag(pid) if host is None else f"{pid}@{host}"
    path = Path(folder) / f".{name}.{owner}.{token}.tmp"
    path.write_bytes(b"partial")
    return path


@contextlib.contextmanager
def live_process():
    """The id of another process that runs for the duration of the block."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_temporaries_of_dead_runs_are_removed_and_live_ones_kept(tmp_path, caplog):
    target = tmp_path / "train_dataset_2014.h5"
    with live_process() as other:
        dead = temporary(tmp_path, target.name, dead_pid())
        live = temporary(tmp_path, target.name, other, token="def_5678")
        mine = temporary(tmp_path, target.name, os.getpid(), token="ghi_9012")
        elsewhere = temporary(tmp_path, target.name, dead_pid(), host="another-machine")
        other_file = temporary(tmp_path, "val_dataset_2014.h5", dead_pid())  # not target's
        target_prefix = temporary(tmp_path, f"{target.name}.bak", dead_pid())  # nor this
        pid_only = tmp_path / f".{target.name}.{dead_pid()}.abc_1234.tmp"  # host unknown
        no_owner = tmp_path / f".{target.name}.k2j4h5l6.tmp"
        for p in (pid_only, no_owner):
            p.write_bytes(b"partial")
        with caplog.at_level(logging.INFO, logger="model.files"):
            assert files.remove_stale_temporaries(target) == 1
        assert not dead.exists()
        assert all(p.exists() for p in (live, mine, elsewhere, other_file, target_prefix,
                                        pid_only, no_owner))
        assert any("removed 1 temporary file(s)" in r.getMessage() for r in caplog.records)
    assert files.remove_stale_temporaries(target) == 1 and not live.exists()  # it exited
    with files.atomic_path(target) as tmp:           # a write names its process and host
        assert tmp.name.startswith(f".{target.name}.{files.temporary_owner_tag()}.")
        assert files.stale_temporary(tmp.name) is False
        assert files.remove_stale_temporaries(target) == 0 and tmp.exists()


def test_a_run_folder_sweep_removes_every_dead_runs_temporary_only(tmp_path):
    """model.state's sweep of a training folder: every output's temporaries of dead
    processes, none of a live run (before, every .*.tmp went, a live run's included)."""
    from model import state

    with live_process() as other:
        dead = [temporary(tmp_path, name, dead_pid())
                for name in (state.STATE_FILE, state.LOG_FILE, "weights.0001.h5")]
        live = temporary(tmp_path, state.STATE_FILE, other, token="live_1")
        foreign = tmp_path / ".keep.me.tmp"
        foreign.write_bytes(b"not ours")
        assert state.remove_stale_temporaries(tmp_path) == 3
        assert not any(p.exists() for p in dead) and live.exists() and foreign.exists()
    assert state.remove_stale_temporaries(tmp_path / "missing") == 0


def test_the_classifier_resume_removes_dead_runs_temporaries_only(tmp_path):
    from types import SimpleNamespace

    from train_domain_classifier import runs as classifier_runs, trainer

    run_dir = classifier_runs.new_run_dir(tmp_path / "log")
    checkpoints = run_dir / "checkpoints"
    with live_process() as other:
        dead = [temporary(checkpoints, "model_0002.pth", dead_pid()),
                temporary(run_dir, "log.csv", dead_pid())]
        live = temporary(checkpoints, "model_0002.pth", other, token="live_1")
        resumed = trainer._run_dir({}, {"epoch": 1}, checkpoints / "model_0001.pth",
                                   SimpleNamespace(main=True))
        assert resumed == run_dir
        assert not any(p.exists() for p in dead) and live.exists()


def test_classifier_run_folders_are_made_by_the_one_helper(tmp_path):
    from train_domain_classifier import runs as classifier_runs

    blocker = tmp_path / "log"
    blocker.write_text("x")
    with pytest.raises(UserError, match=f"cannot create output directory {blocker}: "
                                        f"{blocker} exists and is not a folder"):
        classifier_runs.new_run_dir(blocker)
    log_dir = tmp_path / "runs"
    first, second = classifier_runs.new_run_dir(log_dir), classifier_runs.new_run_dir(log_dir)
    assert second.name.startswith(first.name) and second.name != first.name  # same minute
    assert (first / "checkpoints").is_dir() and (second / "checkpoints").is_dir()


def test_training_checkpoint_folder_is_made_by_the_one_helper(tmp_path):
    from model.train_config import probe_writable

    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    with pytest.raises(UserError, match=f"cannot create output directory {blocker / 'w'}: "
                                        f"{blocker} exists and is not a folder"):
        probe_writable(blocker / "w")
    assert probe_writable(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert list((tmp_path / "a" / "b").iterdir()) == []      # the probe file is gone


def test_hdf5_writer_removes_dead_runs_temporaries(written, tmp_path):
    root, out = written
    target = tmp_path / "h5"
    shutil.copytree(out, target)
    stale = temporary(target, "val_dataset_2014.h5", dead_pid(), token="q1w2e3r4")
    reports = generate_hdf5(root, target, workers=1)
    assert reports["val"]["kept"] and not stale.exists()
    assert sorted(os.listdir(target)) == ["train_dataset_2014.h5", "val_dataset_2014.h5"]


# ---------------------------------------------------------------------------- signals

SLEEPER = """
import sys, time
from tqdm import tqdm
from model.cli import main_guard

@main_guard
def main():
    try:
        for k in tqdm(range(100000), mininterval=0.05):
            if k == 1:
                print("working", flush=True)
            time.sleep(0.01)
    except KeyboardInterrupt:
        print("cleaning up", flush=True)
        for _ in tqdm(range(int(sys.argv[1])), desc="clean-up", mininterval=0.05):
            time.sleep(0.01)     # a slow clean-up: a second signal must not wait for it
        raise

main()
"""


def _wait_for(proc, text, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if text in line:
            return
    raise AssertionError(f"the sleeper never printed {text!r}")


@pytest.mark.parametrize("signals,code,line", [
    (["SIGINT"], 130, "interrupted"),
    (["SIGTERM"], 143, "terminated"),
    (["SIGINT", "SIGINT"], 130, "interrupted"),
    (["SIGTERM", "SIGINT"], 130, "interrupted"),
    (["SIGINT", "SIGTERM"], 143, "terminated"),
])
def test_signals_exit_with_one_line(tmp_path, signals, code, line):
    cleanup_steps = 3000 if len(signals) == 2 else 0     # 30 s when a second signal comes
    proc = subprocess.Popen([sys.executable, "-c", SLEEPER, str(cleanup_steps)], cwd=REPO,
                            text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(proc, "working")
        proc.send_signal(getattr(signal, signals[0]))
        if len(signals) == 2:
            _wait_for(proc, "cleaning up")
            time.sleep(0.2)                 # inside the clean-up's progress bar
            proc.send_signal(getattr(signal, signals[1]))
        started = time.time()
        _, stderr = proc.communicate(timeout=60 if len(signals) == 1 else 10)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == line
    assert [w for w in stderr.split() if w in ("interrupted", "terminated")] == [line]
    if len(signals) == 2:
        assert time.time() - started < 10    # did not wait for the 30 s clean-up


POOL_SLEEPER = """
import time
from model.cli import main_guard
from model.pool import map_jobs

@main_guard
def main():
    for k, _ in enumerate(map_jobs(time.sleep, [0.05] * 4000, workers=2, progress=False)):
        if k == 3:
            print("working", flush=True)

main()
"""


def test_ctrl_c_with_pool_workers_prints_no_worker_traceback():
    proc = subprocess.Popen([sys.executable, "-c", POOL_SLEEPER], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _wait_for(proc, "working", timeout=60)
        os.killpg(proc.pid, signal.SIGINT)          # what Ctrl-C does: the whole group
        _, stderr = proc.communicate(timeout=60)
        workers = _session_workers(proc.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines() == ["interrupted"]
    assert workers == []                              # the workers went with their parent


def _session_workers(session):
    """Pool worker processes still running in `session` (given a second to exit)."""
    for _ in range(10):
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                cmdline = (stat.parent / "cmdline").read_bytes()
                if int(fields[3]) == session and b"spawn_main" in cmdline:
                    found.append(int(stat.parent.name))
        if not found:
            return []
        time.sleep(0.1)
    return found
