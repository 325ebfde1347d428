"""The shared plumbing: atomic files, real booleans, one-line errors, paths, torchvision."""
import argparse
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from model import cli, files, paths, skeleton
from model.errors import UserError


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    target = tmp_path / "out.json"
    files.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with files.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"a": 1}
    assert sorted(os.listdir(tmp_path)) == ["out.json"]  # no temporary file left behind


def test_write_csv_and_read_json_errors(tmp_path):
    files.write_csv(tmp_path / "t.csv", [[1, 2]], header=["a", "b"])
    assert (tmp_path / "t.csv").read_text().splitlines() == ["a,b", "1,2"]
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="not valid JSON"):
        files.read_json(tmp_path / "bad.json")
    with pytest.raises(UserError, match="not found"):
        files.read_json(tmp_path / "missing.json")


@pytest.mark.parametrize("text,value", [("False", False), ("false", False), ("0", False),
                                        ("no", False), ("True", True), ("1", True)])
def test_str2bool(text, value):
    assert cli.str2bool(text) is value


def test_str2bool_rejects_garbage():
    with pytest.raises(argparse.ArgumentTypeError):
        cli.str2bool("maybe")


def test_main_guard_prints_one_line(tmp_path):
    code = ("from model.cli import main_guard\nfrom model.errors import UserError\n"
            "@main_guard\ndef main():\n    raise UserError('weights file not found: x.h5')\n"
            "main()\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip() == "error: weights file not found: x.h5"


def test_ensure_writable_dir_rejects_impossible_dir(tmp_path):
    # A regular file in the way fails for every user, root included (CI runs as root).
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot create output directory"):
        cli.ensure_writable_dir(tmp_path / "file" / "sub")


def test_paths_do_not_depend_on_cwd(tmp_path):
    code = "from model import paths; print(paths.DEFAULT_COCO_ROOT)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, check=True).stdout.strip()
    assert out == str(paths.REPO_ROOT / "dataset" / "COCO")
    assert paths.image_file_name("val2014_random1k_dark", 42) == "COCO_val2014_000000000042.jpg"
    assert paths.image_file_name("train2014", 7) == "COCO_train2014_000000000007.jpg"


def test_skeleton_orders():
    assert skeleton.NUM_PARTS == 18 and skeleton.NUM_LIMBS == 19
    assert skeleton.NUM_TARGET_CHANNELS == 57
    # Flipping twice is the identity, and a flip never maps a part onto itself unless central.
    assert np.array_equal(skeleton.FLIP_CMU[skeleton.FLIP_CMU], np.arange(18))
    central = {i for i, n in enumerate(skeleton.CMU_PARTS) if not n.startswith(("left", "right"))}
    assert {i for i in range(18) if skeleton.FLIP_CMU[i] == i} == central == {0, 1}
    assert skeleton.LIMB_NAMES[0] == "neck-right_hip"
    assert skeleton.LIMB_NAMES[9] == "right_shoulder-right_ear"


def test_torchvision_imports_with_cpu_torch():
    code = ("from model.torch_compat import torchvision\nimport torch\n"
            "m = torchvision.models.resnet18(weights=None)\n"
            "print(tuple(m(torch.zeros(1, 3, 64, 64)).shape))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "(1, 1000)"


def test_atomic_files_get_the_usual_mode(tmp_path):
    files.write_text(tmp_path / "a.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask


def test_main_guard_gives_back_the_signal_handlers():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    seen = {}

    @cli.main_guard
    def main():
        seen.update({s: signal.getsignal(s) for s in before})
        return "done"

    assert main() == "done"
    assert all(seen[s] is not before[s] for s in before)        # handled while main runs
    assert {s: signal.getsignal(s) for s in before} == before    # and given back after
    assert cli.ensure_writable_dir is files.ensure_writable_dir  # one helper, re-exported
