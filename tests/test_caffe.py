"""CMU Caffe model import: protobuf, deploy prototxt, conversion checked against OpenCV DNN."""
import dataclasses
import os
import re
import struct
import subprocess
import sys

import cv2
import numpy as np
import pytest

from model import caffe, cmu_weights, network, paths
from model.errors import UserError

TINY = network.PoseConfig("tiny", num_stages=2, width=1 / 32, input_size=32, stage_kernel=3)


def run_cli(module_or_script, *args):
    command = ([sys.executable, module_or_script] if module_or_script.endswith(".py")
               else [sys.executable, "-m", module_or_script])
    return subprocess.run(command + [str(a) for a in args], capture_output=True, text=True,
                          env=dict(os.environ), timeout=300)


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def assert_maps_close(keras_maps, cv_maps):
    for ours, theirs in zip(keras_maps, cv_maps):
        assert ours.shape == theirs.shape
        assert np.abs(theirs).max() > 0.1  # the comparison is not between near-zero maps
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * np.abs(theirs).max())


# ------------------------------------------------------------------------------- protobuf

def test_caffemodel_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    layers = [caffe.CaffeLayer("conv_a", "Convolution", [rng.standard_normal((4, 3, 3, 3)),
                                                          rng.standard_normal(4)]),
              caffe.CaffeLayer("relu_a", "ReLU", []),
              caffe.CaffeLayer("big", "InnerProduct", [rng.standard_normal((300, 200))])]
    path = caffe.write_caffemodel(tmp_path / "net.caffemodel", layers, name="test")
    parsed = caffe.read_caffemodel(path)
    assert [(l.name, l.type, len(l.blobs)) for l in parsed] == [
        ("conv_a", "Convolution", 2), ("relu_a", "ReLU", 0), ("big", "InnerProduct", 1)]
    for a, b in zip(layers, parsed):
        for x, y in zip(a.blobs, b.blobs):
            assert y.dtype == np.float32 and y.shape == x.shape
            np.testing.assert_array_equal(y, x.astype(np.float32))


# A hand-made encoder, independent of model.caffe's writer, for the older encodings.
def _v(n):
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _f(number, payload):
    return _v(number << 3 | 2) + _v(len(payload)) + payload


def _varint_field(number, value):
    return _v(number << 3) + _v(value)


def legacy_blob(array):
    """BlobProto with the legacy num/channels/height/width and unpacked floats."""
    dims = (1,) * (4 - array.ndim) + array.shape
    head = b"".join(_varint_field(i, d) for i, d in zip((1, 2, 3, 4), dims))
    data = b"".join(_v(5 << 3 | 5) + struct.pack("<f", x) for x in array.ravel())
    return head + data


def test_parses_legacy_v1_layers_and_blob_dims(tmp_path):
    """Old caffemodels: V1 layers (NetParameter field 2, enum types), 4-D legacy blob dims
    (bias as 1x1x1xN), unpacked floats, and unknown fields to skip."""
    layers = caffe.random_layers(TINY, seed=1)
    body = _f(1, b"legacy") + _varint_field(4, 1) + _varint_field(4, 3)  # name, input_dim
    for layer in layers:
        v1 = _f(4, layer.name.encode()) + _varint_field(5, 4) + _f(2, b"bottom")
        v1 += b"".join(_f(6, legacy_blob(b)) for b in layer.blobs)
        body += _f(2, v1)
    path = tmp_path / "v1.caffemodel"
    path.write_bytes(body)
    parsed = caffe.read_caffemodel(path)
    assert [l.name for l in parsed] == [l.name for l in layers]
    assert {l.type for l in parsed} == {"Convolution"}
    assert parsed[0].blobs[1].shape == (1, 1, 1, layers[0].blobs[1].size)
    weights = caffe.caffe_to_keras(parsed, TINY)
    spec = network.conv_layers(TINY)[3]
    np.testing.assert_array_equal(weights[spec.name][0], layers[3].blobs[0].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(weights[spec.name][1], layers[3].blobs[1])


@pytest.mark.parametrize("content", [b"", b"\x0a\xff\xff\xff\x0f\x01", b"\x0f" * 50,
                                     b'input: "image"\ninput_dim: 1\n'])
def test_unreadable_caffemodel(tmp_path, content):
    path = tmp_path / "broken.caffemodel"
    path.write_bytes(content)
    with pytest.raises(UserError, match="caffemodel"):
        caffe.read_caffemodel(path)


def test_truncated_caffemodel(tmp_path):
    data = caffe.serialise_net(caffe.random_layers(TINY))
    path = tmp_path / "cut.caffemodel"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a valid caffemodel.*past the end"):
        caffe.read_caffemodel(path)


# ------------------------------------------------------------------------------- prototxt

def prototxt_layers(text):
    """(name, type, bottoms, top, num_output, kernel_size) of every layer block."""
    out = []
    for block in re.findall(r"^layer \{\n(.*?)^\}", text, flags=re.M | re.S):
        get = lambda key: re.findall(rf'^\s*{key}: "?([^"\n]+)"?', block, flags=re.M)
        num = get("num_output")
        kernel = get("kernel_size")
        out.append((get("name")[0], get("type")[0], get("bottom"), get("top")[0],
                    int(num[0]) if num else None, int(kernel[0]) if kernel else None))
    return out


def test_full_deploy_prototxt_uses_cmu_names_and_order(tmp_path):
    text = caffe.deploy_prototxt("full")
    assert re.search(r'input: "image"\ninput_dim: 1\ninput_dim: 3\ninput_dim: 368\n'
                     r'input_dim: 368\n', text)
    layers = prototxt_layers(text)
    by_name = {l[0]: l for l in layers}
    assert len(layers) == 180  # 92 convolutions, 80 ReLUs, 3 pools, 5 concats
    assert layers[0][:4] == ("conv1_1", "Convolution", ["image"], "conv1_1")
    assert layers[1][:4] == ("relu1_1", "ReLU", ["conv1_1"], "conv1_1")
    for i, after in ((1, "conv1_2"), (2, "conv2_2"), (3, "conv3_4")):
        assert by_name[f"pool{i}_stage1"][1:3] == ("Pooling", [after])
    assert by_name["conv4_3_CPM"][2:] == (["conv4_2"], "conv4_3_CPM", 256, 3)
    assert by_name["relu4_4_CPM"][2] == ["conv4_4_CPM"]
    assert by_name["conv5_1_CPM_L1"][2] == ["conv4_4_CPM"]
    assert by_name["relu5_4_CPM_L2"][2] == ["conv5_4_CPM_L2"]
    assert by_name["conv5_5_CPM_L1"][4:] == (38, 1) and by_name["conv5_5_CPM_L2"][4:] == (19, 1)
    assert "relu5_5_CPM_L1" not in by_name and "Mrelu7_stage2_L1" not in by_name
    assert by_name["concat_stage2"][2] == ["conv5_5_CPM_L1", "conv5_5_CPM_L2", "conv4_4_CPM"]
    for s in range(3, 7):
        assert by_name[f"concat_stage{s}"][2] == [f"Mconv7_stage{s - 1}_L1",
                                                   f"Mconv7_stage{s - 1}_L2", "conv4_4_CPM"]
        assert by_name[f"Mconv1_stage{s}_L2"][2:] == ([f"concat_stage{s}"],
                                                       f"Mconv1_stage{s}_L2", 128, 7)
        assert by_name[f"Mrelu6_stage{s}_L1"][2] == [f"Mconv6_stage{s}_L1"]
    convs = [l for l in layers if l[1] == "Convolution"]
    assert len(convs) == 92
    assert [c[0] for c in convs[-2:]] == ["Mconv7_stage6_L1", "Mconv7_stage6_L2"]
    assert "pad: 3" in text and "lr_mult: 4.0" in text
    path = caffe.write_deploy_prototxt(tmp_path / "pose_deploy.prototxt", "full", 64, 64)
    net = cv2.dnn.readNetFromCaffe(str(path))
    assert set(net.getUnconnectedOutLayersNames()) == {"Mconv7_stage6_L1", "Mconv7_stage6_L2"}


def test_prototxt_and_conversion_cover_every_full_model_layer():
    """Every Keras layer of the full model has its Caffe counterpart in the prototxt, under
    CMU's name (stage 1 renamed conv5_*_CPM_L*), with the converter's expected shapes."""
    convs = {l[0]: l for l in prototxt_layers(caffe.deploy_prototxt("full"))
             if l[1] == "Convolution"}
    keras_to_caffe = {}
    for spec in network.conv_layers("full"):
        keras_to_caffe[spec.name] = spec.caffe_name
        name, _, _, _, num_output, kernel = convs[spec.caffe_name]
        assert spec.caffe_shapes()[0][0] == num_output and spec.caffe_shapes()[0][2] == kernel
    assert set(keras_to_caffe.values()) == set(convs)
    assert keras_to_caffe["Mconv3_stage1_L2"] == "conv5_3_CPM_L2"
    assert keras_to_caffe["Mconv3_stage4_L2"] == "Mconv3_stage4_L2"
    assert keras_to_caffe["conv4_4_CPM"] == "conv4_4_CPM"
    assert len(keras_to_caffe) == 92
    assert sum(int(np.prod(s)) for spec in network.conv_layers("full")
               for s in spec.caffe_shapes()) == 52_311_446


# ----------------------------------------------------------------- conversion vs OpenCV DNN

@pytest.fixture(scope="module")
def small_converted(tmp_path_factory):
    """A random caffemodel for the small config, converted by the CLI run as a script file."""
    root = tmp_path_factory.mktemp("small_caffe")
    caffemodel = caffe.write_caffemodel(root / "small.caffemodel",
                                        caffe.random_layers("small", seed=2))
    out = root / "keras" / "small.h5"
    result = run_cli(str(paths.REPO_ROOT / "model" / "convert_caffemodel.py"),
                     "--caffemodel", caffemodel, "--out", out, "--config", "small")
    assert result.returncode == 0, result.stderr
    assert out.is_file() and os.listdir(out.parent) == ["small.h5"]
    return caffemodel, out


@pytest.mark.parametrize("height,width", [(64, 80), (60, 76)])
def test_converted_small_model_matches_opencv(tmp_path, small_converted, height, width):
    caffemodel, weights = small_converted
    cfg = network.get_config("small")
    prototxt = tmp_path / "small.prototxt"
    caffe.write_deploy_prototxt(prototxt, cfg, height, width)
    image = np.random.default_rng(3).uniform(0, 255, (height, width, 3)).astype("float32")
    model = network.build_pose_model(cfg, weights=weights, vgg19=None)
    ours = [np.asarray(o)[0] for o in model(image[None])]
    assert ours[0].shape == (-(-height // 8), -(-width // 8), 38)
    assert_maps_close(ours, cmu_weights.opencv_maps(prototxt, caffemodel, image, cfg))


def test_full_model_conversion_matches_opencv(tmp_path):
    """The full 52M-parameter model: random caffemodel with CMU's layer names, converted,
    run by Keras and OpenCV on a small image."""
    cfg = network.get_config("full")
    caffemodel = caffe.write_caffemodel(tmp_path / "pose_random.caffemodel",
                                        caffe.random_layers(cfg, seed=4))
    prototxt = caffe.write_deploy_prototxt(tmp_path / "pose_deploy.prototxt", cfg, 40, 48)
    out = tmp_path / "converted.weights.h5"
    assert caffe.convert_caffemodel(caffemodel, out, cfg) == 92
    image = np.random.default_rng(5).uniform(0, 255, (40, 48, 3)).astype("float32")
    model = network.build_pose_model(cfg, weights=out, vgg19=None)
    ours = [np.asarray(o)[0] for o in model(image[None])]
    assert_maps_close(ours, cmu_weights.opencv_maps(prototxt, caffemodel, image, cfg))


def test_mismatching_caffemodel_names_first_layer_and_both_shapes():
    layers = caffe.random_layers("small", seed=6)
    specs = network.conv_layers("small")
    i = [s.name for s in specs].index("conv3_2")
    cout, cin = specs[i].caffe_shapes()[0][:2]
    layers[i].blobs[0] = np.zeros((cout, cin, 5, 5), "float32")
    j = [s.name for s in specs].index("Mconv2_stage2_L1")
    layers[j].blobs[0] = np.zeros((1, 1, 1, 1), "float32")
    with pytest.raises(UserError) as err:
        caffe.caffe_to_keras(layers, "small")
    message = str(err.value)
    assert "conv3_2" in message and "Mconv2_stage2" not in message
    assert f"({cout}, {cin}, 5, 5)" in message and f"({cout}, {cin}, 3, 3)" in message

    # A stage-1 layer is reported under CMU's name; a missing one, and extra stages too.
    k = [s.name for s in specs].index("Mconv2_stage1_L2")
    renamed = [caffe.CaffeLayer("other", l.type, l.blobs) if n == k else l
               for n, l in enumerate(caffe.random_layers("small"))]
    with pytest.raises(UserError, match=r"conv5_2_CPM_L2 \(Keras Mconv2_stage1_L2\).*no such"):
        caffe.caffe_to_keras(renamed, "small")
    deeper = dataclasses.replace(network.get_config("small"), name="deeper", num_stages=4)
    with pytest.raises(UserError, match=r"Mconv1_stage4_L1: caffemodel has blobs \(32, 89, 5, 5\)"):
        caffe.caffe_to_keras(caffe.random_layers(deeper), "small")


# -------------------------------------------------------------------------- CLI bad inputs

@pytest.fixture(scope="module")
def bad_small_caffemodel(tmp_path_factory):
    layers = caffe.random_layers("small", seed=7)
    specs = network.conv_layers("small")
    i = [s.name for s in specs].index("conv2_2")
    layers[i].blobs[1] = np.zeros(7, "float32")
    return caffe.write_caffemodel(tmp_path_factory.mktemp("bad") / "bad.caffemodel", layers)


def test_cli_missing_caffemodel(tmp_path):
    out = tmp_path / "out" / "w.h5"
    result = run_cli("model.convert_caffemodel", "--caffemodel", tmp_path / "none.caffemodel",
                     "--out", out)
    assert_one_line_error(result, "caffemodel not found", "none.caffemodel")
    assert not out.exists() and not os.listdir(out.parent)


def test_cli_caffemodel_not_matching_config(tmp_path, bad_small_caffemodel):
    out = tmp_path / "w.h5"
    result = run_cli("model.convert_caffemodel", "--caffemodel", bad_small_caffemodel,
                     "--out", out, "--config", "small")
    expected_bias = network.get_config("small").channels(128)
    assert_one_line_error(result, "conv2_2", "(7,)", f"({expected_bias},)")
    # The small caffemodel is not the full model: the very first layer differs.
    result = run_cli("model.convert_caffemodel", "--caffemodel", bad_small_caffemodel,
                     "--out", out)
    assert_one_line_error(result, "configuration 'full'", "conv1_1", "(16, 3, 3, 3)",
                          "(64, 3, 3, 3)")
    assert os.listdir(tmp_path) == []


def test_cli_unreadable_caffemodel_and_unwritable_output(tmp_path, bad_small_caffemodel):
    garbage = tmp_path / "garbage.caffemodel"
    garbage.write_bytes(b"\x0a\xff\xff\xff\x0f" + b"x" * 20)
    result = run_cli("model.convert_caffemodel", "--caffemodel", garbage,
                     "--out", tmp_path / "w.h5")
    assert_one_line_error(result, "not a valid caffemodel", "garbage.caffemodel")
    # An output directory that cannot be created (its parent is a file; the tests may run
    # as root, for whom permission bits do not stop writing).
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a directory")
    result = run_cli("model.convert_caffemodel", "--caffemodel", bad_small_caffemodel,
                     "--out", blocker / "weights" / "w.h5", "--config", "small")
    assert_one_line_error(result, "cannot create output directory", "blocker")
    assert sorted(os.listdir(tmp_path)) == ["blocker", "garbage.caffemodel"]


def test_write_deploy_prototxt_cli(tmp_path):
    out = tmp_path / "proto" / "small.prototxt"
    result = run_cli("model.write_deploy_prototxt", "--config", "small", "--out", out,
                     "--height", 48, "--width", 64)
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    assert "input_dim: 48\ninput_dim: 64" in text
    assert text == caffe.deploy_prototxt("small", 48, 64)
    net = cv2.dnn.readNetFromCaffe(str(out))
    assert set(net.getUnconnectedOutLayersNames()) == {"Mconv7_stage3_L1", "Mconv7_stage3_L2"}
    result = run_cli("model.write_deploy_prototxt", "--out", tmp_path / "x.prototxt",
                     "--height", 0)
    assert_one_line_error(result, "--height")
    assert not (tmp_path / "x.prototxt").exists()
