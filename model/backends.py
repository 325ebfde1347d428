"""Which network runs the maps: Keras on TensorFlow (the default), or an exported .onnx file
run by ONNX Runtime or OpenVINO (model.export). The decoder is the same NumPy code whatever
the backend (model.decode).

The evaluation and the fused ensemble use this module to find a backend's model file, to
check it before anything is written, and to load it:

- tensorflow: Keras weights (`weights.NNNN.h5`), found by model.network.find_weights;
- onnxruntime, openvino: an ONNX model exported with `python -m model.export`; without a
  file named, the expert's `weights.0100.onnx` beside its default Keras weights, else the
  newest `weights.NNNN.onnx` there.

model.export (and with it onnx, ONNX Runtime and OpenVINO) is imported only when one of its
backends is asked for, so the default TensorFlow path loads exactly what it always loaded.
"""
import re
from pathlib import Path

from model import network, paths
from model.domains import EFFECT_NAMES, NORMAL
from model.errors import UserError

TENSORFLOW = "tensorflow"
ONNX_BACKENDS = ("onnxruntime", "openvino")
BACKENDS = (TENSORFLOW, *ONNX_BACKENDS)
ONNX_SUFFIX = ".onnx"
KERAS_SUFFIX = ".h5"
ONNX_FILE = re.compile(r"weights\.(\d{4,})\.onnx$")
BACKEND_HELP = (f"network runtime: {', '.join(BACKENDS)} (the last two run an .onnx file "
                f"exported with python -m model.export; default: {TENSORFLOW})")


def check_backend(backend):
    """UserError unless `backend` is one of BACKENDS."""
    if backend not in BACKENDS:
        raise UserError(f"unknown --backend {backend!r}; choose from {', '.join(BACKENDS)}")
    return backend


def export_command(config, keras_weights, out):
    """The command line that writes the ONNX model `out` from Keras weights."""
    return (f"python -m model.export --config {config} --weights {keras_weights} "
            f"--out {out}")


def _keras_for(onnx_path):
    return Path(onnx_path).with_suffix(KERAS_SUFFIX)


def _onnx_for(keras_path):
    return Path(keras_path).with_suffix(ONNX_SUFFIX)


def _find_default_onnx(effect, config, epoch=network.DEFAULT_EPOCH):
    """(path, note) of the expert's exported model beside its default Keras weights."""
    folder = paths.expert_weights_dir(effect)
    wanted = folder / f"weights.{epoch:04d}{ONNX_SUFFIX}"
    if wanted.is_file():
        return wanted, f"epoch {epoch} of the {EFFECT_NAMES[effect]} expert, exported"
    found = sorted((int(m.group(1)), p) for p in folder.glob(f"weights.*{ONNX_SUFFIX}")
                   if (m := ONNX_FILE.search(p.name)))
    if found:
        epoch_found, path = found[-1]
        return path, (f"newest exported checkpoint (epoch {epoch_found}) of the "
                      f"{EFFECT_NAMES[effect]} expert; {wanted.name} does not exist")
    try:
        keras_weights = network.find_weights(effect)[0]
    except UserError:
        keras_weights = folder / f"weights.{epoch:04d}{KERAS_SUFFIX}"
    raise UserError(
        f"no ONNX model of the {EFFECT_NAMES[effect]} expert: tried {wanted} and "
        f"{folder}/weights.NNNN{ONNX_SUFFIX}; export one with "
        f"{export_command(config, keras_weights, _onnx_for(keras_weights))}, or pass --weights "
        f"FILE.onnx")


def find_model_file(backend, effect, weights, config):
    """(path, note) of what `backend` runs for the expert `effect`: the file given (checked
    to exist and to be of the backend's kind), else the expert's default file."""
    check_backend(backend)
    if weights is not None and Path(weights).suffix == ONNX_SUFFIX and backend == TENSORFLOW:
        raise UserError(f"{weights} is an ONNX model; run it with --backend "
                        f"{' or '.join(ONNX_BACKENDS)}, or pass Keras weights (.h5)")
    if backend == TENSORFLOW:
        return network.find_weights(effect, weights)
    if weights is None:
        return _find_default_onnx(effect, config)
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"ONNX model not found: {path}")
    if path.suffix == KERAS_SUFFIX:
        raise UserError(f"{path} is a Keras weight file, not an ONNX model; export it with "
                        f"{export_command(config, path, _onnx_for(path))}, or use --backend "
                        f"{TENSORFLOW}")
    return path, "given with --weights"


def check_given_files(backend, weights, config=None):
    """find_model_file's and check_model_file's checks of files named on the command line
    (None: none named), so that a wrong one is refused before anything runs or is written."""
    for given in weights or ():
        path, _ = find_model_file(backend, NORMAL, given, config or "<config>")
        check_model_file(backend, path, config)


def recorded_file(backend, recorded, config):
    """The file `backend` runs in place of the one an expert's run recorded (its run.json
    `weights`, None for none): the recorded file when it is of the backend's kind, else the
    file of the other kind beside it (weights.0100.onnx for weights.0100.h5 and back, as a
    string like the recorded one)."""
    if recorded is None or (backend == TENSORFLOW) != (Path(recorded).suffix == ONNX_SUFFIX):
        return recorded
    recorded = Path(recorded)
    if backend == TENSORFLOW:
        beside = _keras_for(recorded)
        if beside.is_file():
            return str(beside)
        raise UserError(f"the experts' runs recorded the ONNX model {recorded} and no Keras "
                        f"weights {beside.name} lie beside it; pass --weights or --backend "
                        f"{ONNX_BACKENDS[0]}")
    beside = _onnx_for(recorded)
    if beside.is_file():
        return str(beside)
    raise UserError(f"the experts' runs recorded the Keras weights {recorded} and no ONNX "
                    f"model {beside.name} lies beside it; export it with "
                    f"{export_command(config, recorded, beside)}, or pass --weights")


def check_model_file(backend, path, config=None):
    """UserError unless `path` is an exported pose model (of `config`, when given) for an
    ONNX backend; reads only the file's metadata, so it is cheap to do before anything is
    written. Nothing to check for tensorflow (Keras weights are checked when loaded)."""
    if backend == TENSORFLOW:
        return
    from model import export      # onnx, ONNX Runtime and OpenVINO only for their backends
    metadata = export.read_metadata(path)
    if config is not None:
        export.check_config(path, metadata, config)


def load_model(backend, config, path):
    """The network of `config` to call as model(batch) -> [paf, heatmaps]: the Keras test
    model with the weights `path`, or the ONNX model `path` run by ONNX Runtime / OpenVINO.
    Either has `paf_origin`, the input pixel of its PAF cell 0 (model.network), from the
    weight file or the ONNX metadata (the targets' grid when a file does not say)."""
    if backend == TENSORFLOW:
        return network.load_pose_model(config, path)
    from model import export
    model = export.ONNX_MODELS[check_backend(backend)](path, config)
    model.paf_origin = float(model.metadata.get("paf_origin", network.TARGETS_PAF_ORIGIN))
    return model
