"""ONNX export of the pose network and an ONNX Runtime backend for inference.

    python -m model.export --config full --weights training/weights/weights.0100.h5 \\
        --format onnx --out pose_full.onnx

Export goes through Keras' own `Model.export(format="onnx")` (tf2onnx underneath, with the
pinned TensorFlow); Keras refuses a model that has never been called, so the model is called
once on a small input first. The graph keeps the Keras model's contract: input `image`,
BGR float32 pixel values 0..255 of shape (batch, height, width, 3), normalised inside the
graph; outputs `paf` (batch, height/8, width/8, 38) and `heatmaps` (.., 19) of the last
stage, with batch, height and width dynamic. The configuration's name and shape are written
into the model's metadata, so a model of the wrong configuration is refused when loaded.
Before the file is put in place, ONNX Runtime's maps are compared with Keras' on a test
image (relative difference at most EXPORT_TOLERANCE, recorded in the metadata).

The decoder is unchanged whatever the backend: NumPy on the maps (model/decode.py).
"""
import argparse
import json
import logging
import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov

from model import network
from model.cli import ensure_writable_dir, main_guard
from model.errors import UserError

log = logging.getLogger(__name__)

FORMATS = ("onnx",)
OUTPUT_NAMES = ("paf", "heatmaps")
DYNAMIC_DIMS = ("batch", "height", "width")
EXPORT_TOLERANCE = 1e-4
CHECK_SHAPE = (1, 64, 80, 3)        # a size that is not square and not the training crop


def _rename_graph(model_proto):
    """Name the outputs paf / heatmaps and the dynamic dimensions batch / height / width
    (tf2onnx leaves Identity:0 and unk__N; the input keeps the Keras name, image)."""
    graph = model_proto.graph
    for output, new in zip(graph.output, OUTPUT_NAMES):
        old = output.name
        for node in graph.node:
            node.output[:] = [new if o == old else o for o in node.output]
        output.name = new
    for value in [*graph.input, *graph.output]:
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip([dims[0], dims[1], dims[2]], DYNAMIC_DIMS):
            dim.dim_param = name


def _metadata(cfg, extra):
    info = {"config": cfg.name, "num_stages": cfg.num_stages, "width": cfg.width,
            "input_size": cfg.input_size, "stride": network.STRIDE,
            "input": "image: BGR float32 0..255, (batch, height, width, 3)",
            "outputs": "paf (batch, height/8, width/8, 38), heatmaps (.., 19)", **extra}
    return {k: json.dumps(v) if not isinstance(v, str) else v for k, v in info.items()}


def keras_vs_onnx(keras_model, onnx_path, shape=CHECK_SHAPE, seed=0):
    """Largest relative difference (per output, relative to its max |Keras|) on a seeded image."""
    image = np.random.default_rng(seed).uniform(0, 255, shape).astype(np.float32)
    ours = [np.asarray(o) for o in keras_model(image, training=False)]
    theirs = OnnxPoseModel(onnx_path)(image)
    return max(float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12))
               for a, b in zip(ours, theirs))


def export_onnx(config, weights, out):
    """Write the test model of `config` with `weights` as ONNX to `out` (atomically, after
    the Keras / ONNX Runtime comparison). Returns the relative difference measured."""
    import keras          # here, not at the top: TensorFlow only for exporting
    cfg = network.get_config(config)
    out = Path(out)
    ensure_writable_dir(out.parent)
    model = network.build_pose_model(cfg, weights=None if weights is None else str(weights),
                                     vgg19=None)
    model(np.zeros(CHECK_SHAPE, np.float32), training=False)   # Keras exports called models only
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)     # its per-pass optimiser lines
    staged = out.with_name(f".exporting-{os.getpid()}-{out.name}")
    try:
        model.export(str(staged), format="onnx", verbose=False)
        proto = onnx.load(str(staged))
        _rename_graph(proto)
        onnx.save(proto, str(staged))
        difference = keras_vs_onnx(model, staged)
        if difference > EXPORT_TOLERANCE:
            raise UserError(f"ONNX Runtime differs from Keras by {difference:.2e} (relative; "
                            f"tolerance {EXPORT_TOLERANCE}); nothing was written")
        meta = _metadata(cfg, {"weights": str(weights), "keras": keras.__version__,
                               "max_relative_difference_vs_keras": difference,
                               # the grid inference reads the PAFs on (model.backends)
                               "paf_origin": float(model.paf_origin),
                               "input_norm": network.model_input_norm(model)})
        for key, value in meta.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(staged))
        os.replace(staged, out)
    finally:
        staged.unlink(missing_ok=True)
    log.info("wrote %s (config %s; ONNX Runtime vs Keras: %.1e relative)", out, cfg.name,
             difference)
    return difference


def read_metadata(path):
    """The metadata of an exported model; UserError when `path` is not a readable ONNX file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX model not found: {path}")
    try:
        proto = onnx.load(str(path))
    except Exception as e:  # protobuf raises DecodeError, onnx its own: all mean "not ONNX"
        raise UserError(f"{path} is not an ONNX model ({type(e).__name__})") from None
    outputs = [o.name for o in proto.graph.output]
    if outputs != list(OUTPUT_NAMES):
        raise UserError(f"{path} has outputs {outputs}, not {list(OUTPUT_NAMES)}: export the "
                        "pose network with python -m model.export")
    return {p.key: p.value for p in proto.metadata_props}


def check_config(path, metadata, config):
    """UserError unless the exported model is of configuration `config`."""
    cfg = network.get_config(config)
    exported = metadata.get("config")
    shape = (metadata.get("num_stages"), metadata.get("width"))
    if exported != cfg.name or shape != (json.dumps(cfg.num_stages), json.dumps(cfg.width)):
        raise UserError(f"{path} was exported from configuration {exported!r}, not "
                        f"{cfg.name!r}: pass --config {exported} or export it again")


class OnnxPoseModel:
    """An exported pose network run by ONNX Runtime, called like the Keras test model:
    model(batch) -> [paf, heatmaps] for a float32 (B, H, W, 3) batch."""

    def __init__(self, path, config=None, threads=0):
        self.metadata = read_metadata(path)
        if config is not None:
            check_config(path, self.metadata, config)
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=ort.get_available_providers())
        except Exception as e:  # ORT raises its own types for every kind of bad graph
            raise UserError(f"ONNX Runtime cannot load {path} ({type(e).__name__})") from None
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, batch, training=False):
        return self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})


class OpenVinoPoseModel:
    """The same ONNX file compiled by OpenVINO for the CPU, called like the Keras model.

    Precision "f32" by default: on CPUs with bfloat16 units (AVX512_BF16, AMX) OpenVINO's own
    default is bf16, whose maps differ from Keras' by about 1 % (measured 1.3e-2 relative on
    the small configuration); "bf16" asks for that speed knowingly."""

    def __init__(self, path, config=None, precision="f32"):
        self.metadata = read_metadata(path)
        if config is not None:
            check_config(path, self.metadata, config)
        try:
            self.compiled = ov.Core().compile_model(
                str(path), "CPU", {"INFERENCE_PRECISION_HINT": precision})
        except RuntimeError as e:
            raise UserError(f"OpenVINO cannot compile {path} ({str(e).splitlines()[0]})") from None

    def __call__(self, batch, training=False):
        result = self.compiled(np.ascontiguousarray(batch, np.float32))
        return [result[i] for i in range(len(OUTPUT_NAMES))]


# The backends that run an exported file (model/backends.py picks among these and Keras).
ONNX_MODELS = {"onnxruntime": OnnxPoseModel, "openvino": OpenVinoPoseModel}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="full", choices=sorted(network.CONFIGS))
    p.add_argument("--weights", type=Path, required=True, help="Keras weight file (.h5)")
    p.add_argument("--format", default="onnx", choices=FORMATS)
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write")
    return p.parse_args(argv)


@main_guard
def main(argv=None):
    args = parse_args(argv)
    if not args.weights.is_file():
        raise UserError(f"weight file not found: {args.weights}")
    export_onnx(args.config, args.weights, args.out)


if __name__ == "__main__":
    main()
