"""model/get_cmu_model.sh end to end against a local HTTP server on 127.0.0.1 serving a
random-weight caffemodel of the full configuration: licence first, an interrupted transfer
resumed, the MD5 checked (a corrupt file refused and removed), the conversion checked
against OpenCV DNN, the weights installed where evaluation looks, a rerun doing nothing."""
import hashlib
import json
import os
import socket
import subprocess

import h5py
import numpy as np
import pytest
from http_server import Server

from model import caffe, cmu_weights, network, paths
from model.errors import UserError

SCRIPT = paths.REPO_ROOT / "model" / "get_cmu_model.sh"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A folder served as CMU's model server: a full-configuration caffemodel with random
    weights and CMU-named layers, its deploy prototxt, and a corrupted copy."""
    root = tmp_path_factory.mktemp("cmu_server")
    model = caffe.write_caffemodel(root / cmu_weights.CAFFEMODEL,
                                   caffe.random_layers("full", seed=7))
    caffe.write_deploy_prototxt(root / cmu_weights.PROTOTXT, "full")
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (root / "corrupt").mkdir()
    (root / "corrupt" / cmu_weights.CAFFEMODEL).write_bytes(bytes(data))
    return root, hashlib.md5(model.read_bytes()).hexdigest()


def run_script(tmp_path, base_url, prototxt_url, md5, *args):
    env = dict(os.environ, CMU_MODEL_BASE_URL=base_url, CMU_PROTOTXT_URL=prototxt_url,
               CMU_MODEL_MD5=md5)
    return subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path / "w" / "weights.0100.h5"),
                           "--download_dir", str(tmp_path / "dl"), *args],
                          capture_output=True, text=True, env=env, timeout=900)


def one_line_error(result):
    """The error line: exit 2, no traceback, one line "error: ..." and it is the last one
    (log lines and the progress bar come before it)."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    return errors[0]


@pytest.mark.slow
def test_download_resume_convert_check_install(tmp_path, served):
    root, md5 = served
    size = (root / cmu_weights.CAFFEMODEL).stat().st_size
    server = Server(root, tmp_path, {"cut": {f"/{cmu_weights.CAFFEMODEL}": size // 3}})
    try:
        urls = (server.url, f"{server.url}/{cmu_weights.PROTOTXT}", md5)
        first = run_script(tmp_path, *urls)
        assert "non-commercial research" in first.stdout      # the licence comes first
        assert "rerun to resume" in one_line_error(first)
        part = tmp_path / "dl" / (cmu_weights.CAFFEMODEL + ".part")
        assert part.stat().st_size == size // 3
        assert not (tmp_path / "w" / "weights.0100.h5").exists()

        second = run_script(tmp_path, *urls)
        assert second.returncode == 0, second.stderr
        ranges = [r[2] for r in server.requests() if r[1] == f"/{cmu_weights.CAFFEMODEL}"]
        assert ranges == [None, f"bytes={size // 3}-"]
        out = tmp_path / "w" / "weights.0100.h5"
        assert sorted(os.listdir(out.parent)) == ["weights.0100.h5", "weights.0100.h5.json"]
        record = json.loads((out.parent / "weights.0100.h5.json").read_text())
        assert record["md5"] == md5 and record["config"] == "full"
        assert max(record["opencv_check"]["max_relative_difference"].values()) < 1e-3
        assert len(network.read_weight_file(out)) == len(network.conv_layers("full"))

        third = run_script(tmp_path, *urls)
        assert third.returncode == 0 and "nothing to do" in third.stderr
        assert len(server.requests()) == 3                      # none on the rerun
    finally:
        server.stop()


def test_corrupt_download_is_refused_and_removed(tmp_path, served):
    root, md5 = served
    server = Server(root / "corrupt", tmp_path)
    try:
        result = run_script(tmp_path, server.url, f"{server.url}/none", md5)
    finally:
        server.stop()
    line = one_line_error(result)
    assert f"expected {md5}" in line and "removed" in line
    assert not any((tmp_path / "dl").iterdir())
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


def test_no_network_is_one_line_and_keeps_nothing_half_written(tmp_path, served):
    with socket.socket() as s:                      # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_script(tmp_path, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port}/p",
                        served[1])
    line = one_line_error(result)
    assert "cannot reach" in line and "CMU_MODEL_BASE_URL" in line
    assert not (tmp_path / "w" / "weights.0100.h5").exists()


def test_opencv_check_tells_a_matching_conversion_from_a_wrong_one(tmp_path):
    """The check itself, on the small configuration: the converted weights match OpenCV's
    run of their own caffemodel, and not of another one."""
    good = caffe.write_caffemodel(tmp_path / "good.caffemodel", caffe.random_layers("small", 1))
    other = caffe.write_caffemodel(tmp_path / "other.caffemodel",
                                   caffe.random_layers("small", 2))
    prototxt = caffe.write_deploy_prototxt(tmp_path / "small.prototxt", "small")
    weights = tmp_path / "good.h5"
    caffe.convert_caffemodel(good, weights, "small")
    same = cmu_weights.compare_with_opencv(weights, prototxt, good, "small")
    assert max(same.values()) < 1e-4
    different = cmu_weights.compare_with_opencv(weights, prototxt, other, "small")
    assert min(different.values()) > 0.1
    (tmp_path / "bad.prototxt").write_text("not a prototxt {")
    with pytest.raises(UserError, match="OpenCV cannot read"):
        cmu_weights.compare_with_opencv(weights, tmp_path / "bad.prototxt", good, "small")


def test_check_image_is_fixed_and_structured():
    a, b = cmu_weights.check_image(40, 48), cmu_weights.check_image(40, 48)
    assert a.dtype == np.uint8 and a.shape == (40, 48, 3) and np.array_equal(a, b)
    assert a.std() > 30


def test_converted_caffemodel_records_cmus_grids(tmp_path):
    """A converted caffemodel says PAF cell j is at input pixel 8j (CMU's putVecMaps) and its
    conv1_1 takes CMU's x/256 - 0.5 (the folded input layer); the loaded model carries both."""
    caffemodel = caffe.write_caffemodel(tmp_path / "net.caffemodel",
                                        caffe.random_layers("small", 3))
    weights = tmp_path / "weights.0100.h5"
    caffe.convert_caffemodel(caffemodel, weights, "small")
    assert network.file_conventions(weights, defaults=False) == {
        "input_norm": "folded", "paf_origin": network.CMU_PAF_ORIGIN}
    model = network.load_pose_model("small", weights)
    assert model.paf_origin == 0.0 and network.model_input_norm(model) == "folded"


def test_an_install_from_before_the_grid_was_recorded_gets_it(tmp_path, monkeypatch):
    """A rerun over weights installed without the PAF grid adds it to the file and the record
    (nothing downloaded: the sources point nowhere), and the next rerun does nothing."""
    out = tmp_path / "w" / "weights.0100.h5"
    model = network.build_pose_model("small", vgg19=None, seed=4)
    network.save_weights(model, out)
    with h5py.File(out, "a") as f:
        del f.attrs["paf_origin"]                 # as the converter wrote it before
    (out.parent / "weights.0100.h5.json").write_text(json.dumps({"md5": "0" * 32}))
    monkeypatch.setenv("CMU_MODEL_MD5", "0" * 32)
    monkeypatch.setenv("CMU_MODEL_BASE_URL", "http://127.0.0.1:9")
    before = network.read_weight_file(out)
    record = cmu_weights.install(out, tmp_path / "dl")
    assert record["paf_origin"] == 0.0
    assert json.loads((out.parent / "weights.0100.h5.json").read_text())["paf_origin"] == 0.0
    assert network.file_conventions(out, defaults=False)["paf_origin"] == 0.0
    after = network.read_weight_file(out)
    assert all(np.array_equal(a, b) for k in before for a, b in zip(before[k], after[k]))
    assert sorted(os.listdir(out.parent)) == ["weights.0100.h5", "weights.0100.h5.json"]
    assert not (tmp_path / "dl").exists()
    assert cmu_weights.install(out, tmp_path / "dl")["paf_origin"] == 0.0
