"""ONNX export (Keras' exporter) and the ONNX Runtime backend: named outputs, dynamic height
and width, ONNX Runtime equal to Keras to 1e-4 relative on the small and the full
configuration, and clear errors for files that are not a matching pose model."""
import subprocess
import sys

import numpy as np
import onnx
import pytest

from model import backends, caffe, export, network
from model.errors import UserError


def converted_weights(tmp_path, config, seed):
    """Random weights (He-scaled, so the maps are far from zero) as a Keras weight file."""
    model = caffe.write_caffemodel(tmp_path / f"{config}.caffemodel",
                                   caffe.random_layers(config, seed=seed))
    weights = tmp_path / f"{config}.h5"
    caffe.convert_caffemodel(model, weights, config)
    return weights


def relative_difference(keras_model, onnx_model, image):
    ours = [np.asarray(o) for o in keras_model(image, training=False)]
    theirs = onnx_model(image)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert np.abs(a).max() > 0.1                # not a comparison of near-zero maps
    return max(float(np.abs(a - b).max() / np.abs(a).max()) for a, b in zip(ours, theirs))


@pytest.fixture(scope="module")
def small_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("export_small")
    weights = converted_weights(root, "small", seed=3)
    out = root / "small.onnx"
    export.export_onnx("small", weights, out)
    return weights, out


def test_small_export_names_dynamic_shapes_and_metadata(small_export):
    _, path = small_export
    proto = onnx.load(str(path))
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert [(i.name, dims(i)) for i in proto.graph.input] == [
        ("image", ["batch", "height", "width", 3])]
    assert [(o.name, dims(o)) for o in proto.graph.output] == [
        ("paf", ["batch", "height", "width", 38]), ("heatmaps", ["batch", "height", "width", 19])]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["config"] == "small" and meta["num_stages"] == "3"
    assert float(meta["max_relative_difference_vs_keras"]) < export.EXPORT_TOLERANCE


@pytest.mark.parametrize("shape", [(1, 64, 80, 3), (2, 96, 56, 3), (1, 60, 76, 3)])
def test_onnxruntime_matches_keras_small(small_export, shape):
    weights, path = small_export
    keras_model = network.build_pose_model("small", weights=str(weights), vgg19=None)
    image = np.random.default_rng(1).uniform(0, 255, shape).astype(np.float32)
    assert relative_difference(keras_model, export.OnnxPoseModel(path, "small"), image) < 1e-4


def test_openvino_matches_keras_small(small_export):
    weights, path = small_export
    keras_model = network.build_pose_model("small", weights=str(weights), vgg19=None)
    image = np.random.default_rng(4).uniform(0, 255, (1, 72, 56, 3)).astype(np.float32)
    assert relative_difference(keras_model, export.OpenVinoPoseModel(path, "small"), image) < 1e-4


def test_load_model_names_and_refusals(small_export):
    weights, path = small_export
    assert isinstance(backends.load_model("onnxruntime", "small", path), export.OnnxPoseModel)
    assert isinstance(backends.load_model("openvino", "small", path), export.OpenVinoPoseModel)
    with pytest.raises(UserError, match="not an ONNX model"):
        backends.load_model("onnxruntime", "small", weights)      # a Keras .h5 file
    with pytest.raises(UserError, match="unknown --backend"):
        backends.load_model("tensorrt", "small", path)


@pytest.mark.slow
def test_onnxruntime_matches_keras_full(tmp_path):
    weights = converted_weights(tmp_path, "full", seed=4)
    path = tmp_path / "full.onnx"
    export.export_onnx("full", weights, path)
    keras_model = network.build_pose_model("full", weights=str(weights), vgg19=None)
    image = np.random.default_rng(2).uniform(0, 255, (1, 72, 88, 3)).astype(np.float32)
    assert relative_difference(keras_model, export.OnnxPoseModel(path, "full"), image) < 1e-4


def test_wrong_configuration_and_non_onnx_files_are_refused(small_export, tmp_path):
    _, path = small_export
    for backend in (export.OnnxPoseModel, export.OpenVinoPoseModel):
        with pytest.raises(UserError, match="exported from configuration 'small', not 'full'"):
            backend(path, "full")
    text = tmp_path / "weights.onnx"
    text.write_text("not an onnx model")
    with pytest.raises(UserError, match="not an ONNX model"):
        export.OnnxPoseModel(text, "small")
    with pytest.raises(UserError, match="not found"):
        export.OnnxPoseModel(tmp_path / "missing.onnx", "small")


def test_cli_exports_and_reports_missing_weights_in_one_line(tmp_path, small_export):
    weights, _ = small_export
    out = tmp_path / "cli" / "small.onnx"
    ok = subprocess.run([sys.executable, "-m", "model.export", "--config", "small", "--weights",
                         str(weights), "--format", "onnx", "--out", str(out)],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert sorted(p.name for p in out.parent.iterdir()) == ["small.onnx"]
    bad = subprocess.run([sys.executable, "-m", "model.export", "--config", "small", "--weights",
                          str(tmp_path / "none.h5"), "--out", str(tmp_path / "x.onnx")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines()[-1].startswith("error: weight file not found")
    assert not (tmp_path / "x.onnx").exists()
