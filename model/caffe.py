"""CMU's Caffe model without Caffe: the caffemodel protobuf, the deploy prototxt, conversion.

A .caffemodel is a serialised caffe.NetParameter. Only the fields needed for weights are
decoded; everything else is skipped by wire type:
  NetParameter:     1 name, 100 layer (LayerParameter), 2 layers (legacy V1LayerParameter)
  LayerParameter:   1 name, 2 type (string), 7 blobs (BlobProto)
  V1LayerParameter: 4 name, 5 type (enum), 6 blobs
  BlobProto:        7 shape (BlobShape: 1 dim, int64), 5 data (float), 8 double_data,
                    legacy 4-D shape 1 num, 2 channels, 3 height, 4 width
Caffe convolution weights are (out, in, kh, kw); Keras kernels are (kh, kw, in, out). Both
compute a cross-correlation, so the kernel is transposed, never flipped.
"""
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from model import network
from model.cli import ensure_writable_dir
from model.errors import UserError
from model.files import atomic_path, write_text

log = logging.getLogger(__name__)

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
# The V1 layer types that can carry blobs (caffe.proto V1LayerParameter.LayerType).
_V1_TYPES = {4: "Convolution", 14: "InnerProduct", 39: "Deconvolution"}


class ProtobufError(ValueError):
    pass


@dataclass
class CaffeLayer:
    name: str
    type: str
    blobs: list = field(default_factory=list)   # float32 arrays in their Caffe shape


# ------------------------------------------------------------------------------------------
# Protobuf wire format

def _read_varint(buf, pos, end):
    result = shift = 0
    while True:
        if pos >= end:
            raise ProtobufError(f"truncated varint at byte {pos}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError(f"varint longer than 10 bytes at byte {pos}")


def _fields(buf, start, end):
    """Yield (field number, wire type, value, offset) of one message in buf[start:end];
    value is an int for varints, a (start, end) span for everything else."""
    pos = start
    while pos < end:
        offset = pos
        key, pos = _read_varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError(f"field number 0 at byte {offset}")
        if wire == _VARINT:
            value, pos = _read_varint(buf, pos, end)
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            value, pos = (pos, pos + size), pos + size
        elif wire == _BYTES:
            size, pos = _read_varint(buf, pos, end)
            value, pos = (pos, pos + size), pos + size
        else:
            raise ProtobufError(f"unsupported wire type {wire} at byte {offset}")
        if pos > end:
            raise ProtobufError(f"field {number} at byte {offset} runs past the end of its "
                                f"message (byte {end})")
        yield number, wire, value, offset


def _packed_varints(buf, span):
    values, pos = [], span[0]
    while pos < span[1]:
        v, pos = _read_varint(buf, pos, span[1])
        values.append(v)
    return values


def _parse_blob(buf, start, end):
    legacy = {}
    dims, pieces = None, []
    for number, wire, value, _ in _fields(buf, start, end):
        if number in (1, 2, 3, 4) and wire == _VARINT:
            legacy[number] = value
        elif number == 7 and wire == _BYTES:
            dims = []
            for n, w, v, _ in _fields(buf, *value):
                if n == 1:
                    dims.extend(_packed_varints(buf, v) if w == _BYTES else [v])
        elif number in (5, 8):
            dtype = "<f4" if number == 5 else "<f8"
            pieces.append(np.frombuffer(buf[value[0]:value[1]], dtype).astype(np.float32))
    data = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if dims is None:
        dims = [legacy.get(i, 0) for i in (1, 2, 3, 4)] if legacy else [data.size]
    shape = tuple(int(d) for d in dims)
    if int(np.prod(shape)) != data.size:
        raise ProtobufError(f"blob of shape {shape} holds {data.size} values")
    return data.reshape(shape)


def _parse_layer(buf, start, end, v1):
    name_field, type_field, blob_field = (4, 5, 6) if v1 else (1, 2, 7)
    layer = CaffeLayer("", "")
    for number, wire, value, _ in _fields(buf, start, end):
        if number == name_field and wire == _BYTES:
            layer.name = bytes(buf[value[0]:value[1]]).decode("utf-8", "replace")
        elif number == type_field:
            if v1 and wire == _VARINT:
                layer.type = _V1_TYPES.get(value, f"V1:{value}")
            elif wire == _BYTES:
                layer.type = bytes(buf[value[0]:value[1]]).decode("utf-8", "replace")
        elif number == blob_field and wire == _BYTES:
            layer.blobs.append(_parse_blob(buf, *value))
    return layer


def parse_net(data):
    """CaffeLayers of a serialised NetParameter (new-style and legacy V1 layers)."""
    buf = memoryview(data)
    layers = []
    for number, wire, value, _ in _fields(buf, 0, len(buf)):
        if wire == _BYTES and number in (100, 2):
            layers.append(_parse_layer(buf, *value, v1=number == 2))
    return layers


def read_caffemodel(path):
    """The layers of a .caffemodel (list of CaffeLayer, file order). UserError if the file is
    missing, unreadable or not a caffemodel."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"caffemodel not found: {path}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read caffemodel {path}: {e.strerror}") from None
    try:
        layers = parse_net(data)
    except ProtobufError as e:
        raise UserError(f"not a valid caffemodel (binary protobuf): {path}: {e}") from None
    if not any(layer.blobs for layer in layers):
        raise UserError(f"no layer with weights in {path}: not a caffemodel "
                        "(a .prototxt is text; pass the binary .caffemodel)")
    return layers


def _varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _len_field(number, payload):
    return _varint(number << 3 | _BYTES) + _varint(len(payload)) + payload


def _blob_bytes(array):
    array = np.asarray(array, np.float32)
    dims = b"".join(_varint(int(d)) for d in array.shape)
    return (_len_field(7, _len_field(1, dims))
            + _len_field(5, array.astype("<f4").tobytes()))


def serialise_net(layers, name=""):
    """A NetParameter with `layers` (CaffeLayer or (name, type, blobs)) as new-style layers."""
    parts = [_len_field(1, name.encode())] if name else []
    for layer in layers:
        layer = layer if isinstance(layer, CaffeLayer) else CaffeLayer(*layer)
        body = _len_field(1, layer.name.encode()) + _len_field(2, layer.type.encode())
        body += b"".join(_len_field(7, _blob_bytes(b)) for b in layer.blobs)
        parts.append(_len_field(100, body))
    return b"".join(parts)


def write_caffemodel(path, layers, name=""):
    """Write a binary caffemodel (atomically) that Caffe and OpenCV's importer read."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(serialise_net(layers, name))
    return Path(path)


# ------------------------------------------------------------------------------------------
# Deploy prototxt

def _layer_text(spec, bottoms):
    """The prototxt of one planned layer (plus the in-place ReLU of a convolution)."""
    head = ["layer {", f'  name: "{spec.caffe_name}"']
    tail = [f'  top: "{spec.caffe_name}"']
    bottom_lines = [f'  bottom: "{b}"' for b in bottoms]
    if spec.kind == "pool":
        body = ['  type: "Pooling"', *bottom_lines, *tail,
                "  pooling_param {\n    pool: MAX\n    kernel_size: 2\n    stride: 2\n  }"]
        return "\n".join(head + body + ["}"])
    if spec.kind == "concat":
        body = ['  type: "Concat"', *bottom_lines, *tail, "  concat_param {\n    axis: 1\n  }"]
        return "\n".join(head + body + ["}"])
    kernel_lr, bias_lr = network.lr_multipliers(spec.name)
    body = ['  type: "Convolution"', *bottom_lines, *tail,
            f"  param {{\n    lr_mult: {kernel_lr}\n    decay_mult: 1\n  }}",
            f"  param {{\n    lr_mult: {bias_lr}\n    decay_mult: 0\n  }}",
            "  convolution_param {", f"    num_output: {spec.filters}",
            f"    pad: {spec.kernel // 2}", f"    kernel_size: {spec.kernel}",
            f'    weight_filler {{\n      type: "gaussian"\n      std: {network.INIT_STD}\n    }}',
            '    bias_filler {\n      type: "constant"\n    }', "  }"]
    lines = head + body + ["}"]
    if spec.relu:
        lines += ["layer {", f'  name: "{spec.relu_caffe_name}"', '  type: "ReLU"',
                  f'  bottom: "{spec.caffe_name}"', f'  top: "{spec.caffe_name}"', "}"]
    return "\n".join(lines)


def deploy_prototxt(config="full", height=None, width=None):
    """CMU's deploy prototxt for a configuration: input blob "image" 1x3xHxW (BGR, already
    normalised as x/256 - 0.5: the Caffe net has no normalisation layer), CMU's layer names,
    outputs Mconv7_stage{N}_L1 (PAF) and Mconv7_stage{N}_L2 (heatmaps). H, W default to the
    configuration's input size."""
    cfg = network.get_config(config)
    height = cfg.input_size if height is None else int(height)
    width = cfg.input_size if width is None else int(width)
    plan = network.layer_plan(cfg)
    caffe_name = {spec.name: spec.caffe_name for spec in plan}
    out = [f"# OpenPose VGG-PAF network, configuration {cfg.name!r}: {cfg.num_stages} stages, "
           f"width x{cfg.width}, {network.count_parameters(cfg):,} parameters",
           'input: "image"', "input_dim: 1", "input_dim: 3",
           f"input_dim: {height}", f"input_dim: {width}"]
    for spec in plan:
        out.append(_layer_text(spec, [caffe_name.get(i, i) for i in spec.inputs]))
    return "\n".join(out) + "\n"


def write_deploy_prototxt(path, config="full", height=None, width=None):
    path = Path(path)
    ensure_writable_dir(path.parent)
    write_text(path, deploy_prototxt(config, height, width))
    return path


# ------------------------------------------------------------------------------------------
# Conversion to Keras

def _strip_ones(shape):
    shape = tuple(shape)
    while len(shape) > 1 and shape[0] == 1:
        shape = shape[1:]
    return shape


def _fit(array, expected):
    """`array` in shape `expected`, accepting legacy 4-D blobs such as (1, 1, 1, N) for (N,);
    None if they do not match."""
    if array.shape == tuple(expected):
        return array
    if array.size == int(np.prod(expected)) and _strip_ones(array.shape) == _strip_ones(expected):
        return array.reshape(expected)
    return None


def caffe_to_keras(layers, config="full"):
    """{Keras layer name: [kernel (kh, kw, in, out), bias (out,)]} for every convolution of
    the configuration. UserError naming the first mismatching layer and both shapes if the
    caffemodel's layers do not match the configuration exactly."""
    cfg = network.get_config(config)
    specs = network.conv_layers(cfg)
    by_name = {layer.name: layer for layer in layers if layer.blobs}
    weights = {}
    for spec in specs:
        w_shape, b_shape = spec.caffe_shapes()
        where = f"layer {spec.caffe_name} (Keras {spec.name})"
        layer = by_name.get(spec.caffe_name)
        if layer is None:
            raise UserError(f"caffemodel does not match configuration {cfg.name!r}: first "
                            f"mismatching {where}: caffemodel has no such layer with weights, "
                            f"the configuration expects weights {w_shape} and bias {b_shape}")
        blobs = layer.blobs
        kernel = _fit(blobs[0], w_shape) if blobs else None
        bias = _fit(blobs[1], b_shape) if len(blobs) > 1 else None
        if kernel is None or bias is None or len(blobs) != 2:
            got = " and ".join(str(tuple(b.shape)) for b in blobs)
            raise UserError(f"caffemodel does not match configuration {cfg.name!r}: first "
                            f"mismatching {where}: caffemodel blobs {got}, the configuration "
                            f"expects weights {w_shape} and bias {b_shape}")
        weights[spec.name] = [np.ascontiguousarray(kernel.transpose(2, 3, 1, 0)), bias.copy()]
    known = {spec.caffe_name for spec in specs}
    extra = [layer for layer in layers if layer.blobs and layer.name not in known]
    if extra:
        first = extra[0]
        raise UserError(f"caffemodel does not match configuration {cfg.name!r}: first "
                        f"mismatching layer {first.name}: caffemodel has blobs "
                        f"{' and '.join(str(tuple(b.shape)) for b in first.blobs)}, the "
                        f"configuration ({cfg.num_stages} stages) has no such layer")
    return weights


def convert_caffemodel(caffemodel, out, config="full"):
    """Read CMU's caffemodel, convert every layer to the Keras model of `config`, save Keras
    weights to `out` (atomically; format by suffix, see network.save_weights). Every check
    runs before anything is written. Returns the number of layers converted.

    The file records CMU's conventions: the folded input layer (CMU's x/256 - 0.5 in front of
    its conv1_1) and PAF cell j at input pixel 8j (network.CMU_PAF_ORIGIN: Caffe's
    putVecMaps put no half-cell offset on the PAF grid), which inference honours."""
    cfg = network.get_config(config)
    out = Path(out)
    ensure_writable_dir(out.parent)
    t0 = time.time()
    layers = read_caffemodel(caffemodel)
    weights = caffe_to_keras(layers, cfg)
    log.info("read %s: %d layers with weights in %.1f s; all %d convolutions of config %r "
             "match", caffemodel, sum(1 for layer in layers if layer.blobs), time.time() - t0,
             len(weights), cfg.name)
    t0 = time.time()
    model = network.build_pose_model(cfg, vgg19=None, input_norm="folded")
    model.paf_origin = network.CMU_PAF_ORIGIN
    set_names = network.assign_weights(model, weights, f"caffemodel {caffemodel}")
    missing = sorted({layer.name for layer in model.layers if layer.weights} - set(set_names))
    if missing:
        raise UserError(f"internal mismatch: layers {missing} were not converted")
    network.save_weights(model, out)
    log.info("wrote %s (%d layers, %d parameters) in %.1f s", out, len(set_names),
             model.count_params(), time.time() - t0)
    return len(set_names)


def random_layers(config, seed=0):
    """Random Caffe-layout blobs for every convolution of `config`, He-scaled (std
    sqrt(2 / fan_in), biases 0.1 x normal) so the maps keep their magnitude through the
    depth of the network: weights for tests and benchmarks whose maps must be far from zero."""
    rng = np.random.default_rng(seed)
    layers = []
    for spec in network.conv_layers(config):
        w_shape, b_shape = spec.caffe_shapes()
        std = np.sqrt(2.0 / (w_shape[1] * w_shape[2] * w_shape[3]))
        layers.append(CaffeLayer(spec.caffe_name, "Convolution", [
            (rng.standard_normal(w_shape) * std).astype("float32"),
            (rng.standard_normal(b_shape) * 0.1).astype("float32")]))
    return layers
