"""The VGG-PAF network of CMU's COCO model (docs/recipe.md section 2), in Keras 3, by configuration.

One layer plan (`layer_plan(config)`) describes the network: the Keras builder, the Caffe
deploy-prototxt writer (model.caffe) and the caffemodel converter all walk it, so the three
cannot disagree on names, shapes or the order of the stage inputs.

Layer names are those of the public Keras reproductions (conv1_1 ... conv4_2, conv4_3_CPM,
conv4_4_CPM, Mconv1..5_stage1_L1/L2, Mconv1..7_stage{k}_L1/L2): their released weight files
load by name. L1 is the PAF branch (38 channels), L2 the heatmap branch (19 channels).

Input: BGR images, float32 in 0..255, normalised inside the model by a Rescaling layer (not a
Lambda), so saved models load in Keras' safe mode. Output stride 8.

Two conventions travel with every weight file (attributes written by save_weights, read by
file_conventions; a file without them has the defaults):
* input_norm, how conv1_1 is parametrised. "folded" (default): the input layer gives
  x/256 - 0.5 (CMU's normalisation) and ImageNet VGG19's scale and mean are folded into
  conv1_1, whose kernel is then 256x VGG's. "plain": the input layer gives x - 128
  (= 256 (x/256 - 0.5)) and conv1_1 keeps VGG's kernel unscaled, the scale CMU's conv1_1
  has. The two compute the same function for kernels related by folded = 256 plain (biases
  equal: grey 128, and with it the padding, is 0 in both); they train differently: with
  SGD a step moves conv1_1 256^2 times less, relative to its kernel, in the folded form.
  Loading converts between them (convert_input_norm), and every initialisation is made in
  the folded form and converted (plain_from_folded_init), so both start from one function.
* paf_origin: the input pixel of PAF cell j is 8j + paf_origin. The project's targets put
  PAF and heatmap cells at 8j + 3.5 (TARGETS_PAF_ORIGIN); CMU's released network learnt PAF
  cell j at 8j (CMU_PAF_ORIGIN; its heatmaps are at 8j + 3.5), which model.caffe records
  when it converts a caffemodel and model.inference honours when it resamples the maps.

Keras (and with it TensorFlow) is imported inside the functions that build, save or freeze
models: the layer plan, the configurations and the weight-file readers are used by tools and
modules (the prototxt writer, model.recipes, every script's flag parser) that must not pay
seconds and hundreds of MB for importing TensorFlow.
"""
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from model import paths, skeleton
from model.domains import EFFECT_NAMES, NORMAL
from model.errors import UserError
from model.files import atomic_path

log = logging.getLogger(__name__)

STRIDE = 8
NUM_PAF = skeleton.NUM_PAFS          # 38, branch L1
NUM_HEATMAP = skeleton.NUM_HEATMAPS  # 19, branch L2
BRANCH_OUTPUTS = {1: NUM_PAF, 2: NUM_HEATMAP}
INIT_STD = 0.01

INPUT_NORMS = ("folded", "plain")
DEFAULT_INPUT_NORM = "folded"
# Input layer: (scale, offset) of each parametrisation of conv1_1 (module docstring).
_INPUT_SCALING = {"folded": (1.0 / 256, -0.5), "plain": (1.0, -128.0)}
INPUT_NORM_FACTOR = 256.0        # folded conv1_1 kernel = INPUT_NORM_FACTOR x plain kernel
TARGETS_PAF_ORIGIN = (STRIDE - 1) / 2     # 3.5: PAF cell j at input pixel 8j + 3.5
CMU_PAF_ORIGIN = 0.0                      # CMU's released network: PAF cell j at 8j

# Keras' ImageNet VGG19 weights ("caffe" preprocessing: BGR, mean subtracted, 0..255 scale).
VGG19_MEAN_BGR = np.array([103.939, 116.779, 123.68], np.float32)
# Our backbone layer -> the layer of Keras' VGG19 whose weights it takes.
VGG19_LAYERS = {
    "conv1_1": "block1_conv1", "conv1_2": "block1_conv2",
    "conv2_1": "block2_conv1", "conv2_2": "block2_conv2",
    "conv3_1": "block3_conv1", "conv3_2": "block3_conv2",
    "conv3_3": "block3_conv3", "conv3_4": "block3_conv4",
    "conv4_1": "block4_conv1", "conv4_2": "block4_conv2",
}


@dataclass(frozen=True)
class PoseConfig:
    """A network configuration. `width` multiplies every hidden channel count (not the
    38/19 outputs); `input_size` is the square training crop; `stage_kernel` is the kernel of
    the five spatial convolutions of stages 2.."""
    name: str
    num_stages: int = 6
    width: float = 1.0
    input_size: int = 368
    stage_kernel: int = 7

    def __post_init__(self):
        if self.num_stages < 1:
            raise ValueError(f"num_stages must be >= 1, got {self.num_stages}")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if self.input_size <= 0 or self.input_size % STRIDE:
            raise ValueError(f"input_size must be a positive multiple of {STRIDE}, "
                             f"got {self.input_size}")
        if self.stage_kernel < 1 or self.stage_kernel % 2 == 0:
            raise ValueError(f"stage_kernel must be odd, got {self.stage_kernel}")

    @property
    def output_size(self):
        return self.input_size // STRIDE

    def channels(self, full):
        """Channel count of a layer that has `full` channels in the full model."""
        return max(1, int(round(full * self.width)))


CONFIGS = {
    # CMU's COCO model exactly: 52,311,446 parameters.
    "full": PoseConfig("full"),
    # Same code, a quarter of the channels, three stages, 184 px crops (23x23 maps) and 5x5
    # refinement convolutions (CMU: 7x7): the whole pipeline trains on a 2-core CPU in
    # minutes; keeps stride 8, both branches and the stage-input concatenation. Why 5x5:
    # model.recipes.
    "small": PoseConfig("small", num_stages=3, width=0.25, input_size=184, stage_kernel=5),
}


def get_config(config):
    """A PoseConfig from a name of CONFIGS or a PoseConfig (returned as is)."""
    if isinstance(config, PoseConfig):
        return config
    if isinstance(config, str) and config in CONFIGS:
        return CONFIGS[config]
    raise UserError(f"unknown network configuration {config!r}; known: {', '.join(CONFIGS)}")


@dataclass(frozen=True)
class LayerSpec:
    """One layer of the plan. `inputs` are Keras layer names ("image" = the normalised input);
    in Caffe the ReLU is in place, so a layer's output blob is named `caffe_name`."""
    kind: str               # "conv", "pool" or "concat"
    name: str               # Keras name
    caffe_name: str         # name in CMU's prototxt/caffemodel
    inputs: tuple
    filters: int = 0
    kernel: int = 0
    in_channels: int = 0
    relu: bool = False
    stage: int = 0          # 0 = backbone (VGG + CPM layers), k = stage k
    branch: int = 0         # 1 = L1 (PAF), 2 = L2 (heatmaps)

    @property
    def relu_caffe_name(self):
        """CMU's name of the ReLU that follows this convolution."""
        if self.caffe_name.startswith("Mconv"):
            return "Mrelu" + self.caffe_name[len("Mconv"):]
        return "relu" + self.caffe_name[len("conv"):]

    def keras_shapes(self):
        return [(self.kernel, self.kernel, self.in_channels, self.filters), (self.filters,)]

    def caffe_shapes(self):
        return [(self.filters, self.in_channels, self.kernel, self.kernel), (self.filters,)]


def layer_plan(config="full"):
    """Every layer of the network in CMU's prototxt order (a list of LayerSpec)."""
    cfg = get_config(config)
    ch = cfg.channels
    plan = []
    channels = {"image": 3}

    def conv(name, inp, full_filters, kernel, relu=True, stage=0, branch=0, caffe_name=None,
             scale=True):
        filters = ch(full_filters) if scale else full_filters
        in_ch = sum(channels[i] for i in inp)
        plan.append(LayerSpec("conv", name, caffe_name or name, tuple(inp), filters, kernel,
                              in_ch, relu, stage, branch))
        channels[name] = filters
        return name

    def pool(name, inp):
        plan.append(LayerSpec("pool", name, name, (inp,)))
        channels[name] = channels[inp]
        return name

    x = "image"
    for block, (n_convs, filters) in enumerate(((2, 64), (2, 128), (4, 256), (2, 512)), 1):
        for i in range(1, n_convs + 1):
            x = conv(f"conv{block}_{i}", [x], filters, 3)
        if block < 4:
            x = pool(f"pool{block}_stage1", x)
    x = conv("conv4_3_CPM", [x], 256, 3)
    features = conv("conv4_4_CPM", [x], 128, 3)

    # Stage 1: three 3x3 of 128, a 1x1 of 512, a 1x1 to the outputs; L1 and L2 interleaved
    # as in CMU's prototxt.
    heads = {1: features, 2: features}
    stage1 = [(128, 3, True), (128, 3, True), (128, 3, True), (512, 1, True), (None, 1, False)]
    for i, (filters, kernel, relu) in enumerate(stage1, 1):
        for b in (1, 2):
            heads[b] = conv(f"Mconv{i}_stage1_L{b}", [heads[b]],
                            BRANCH_OUTPUTS[b] if filters is None else filters, kernel, relu,
                            stage=1, branch=b, caffe_name=f"conv5_{i}_CPM_L{b}",
                            scale=filters is not None)

    k = cfg.stage_kernel
    refine = [(128, k, True)] * 5 + [(128, 1, True), (None, 1, False)]
    for s in range(2, cfg.num_stages + 1):
        cat = f"concat_stage{s}"
        # Order fixed by CMU's prototxt: PAF, heatmaps, features.
        plan.append(LayerSpec("concat", cat, cat, (heads[1], heads[2], features), stage=s))
        channels[cat] = channels[heads[1]] + channels[heads[2]] + channels[features]
        heads = {1: cat, 2: cat}
        for i, (filters, kernel, relu) in enumerate(refine, 1):
            for b in (1, 2):
                heads[b] = conv(f"Mconv{i}_stage{s}_L{b}", [heads[b]],
                                BRANCH_OUTPUTS[b] if filters is None else filters, kernel,
                                relu, stage=s, branch=b, scale=filters is not None)
    return plan


def conv_layers(config="full"):
    return [spec for spec in layer_plan(config) if spec.kind == "conv"]


def output_layer_names(config="full", stage=None):
    """Keras names of the last convolutions (PAF, heatmaps) of `stage` (default: the last)."""
    cfg = get_config(config)
    s = cfg.num_stages if stage is None else stage
    last = 5 if s == 1 else 7
    return f"Mconv{last}_stage{s}_L1", f"Mconv{last}_stage{s}_L2"


def lr_multipliers(layer_name):
    """(kernel, bias) learning-rate multipliers of a layer (docs/recipe.md section 3): backbone and
    stage 1 x1/x2, stages 2.. x4/x8."""
    if layer_name.startswith("Mconv") and "_stage1_" not in layer_name:
        return 4.0, 8.0
    return 1.0, 2.0


def count_parameters(config="full"):
    """Parameter count from the plan, without building the model."""
    return sum(int(np.prod(s)) for spec in conv_layers(config) for s in spec.keras_shapes())


# ------------------------------------------------------------------------------------------
# Keras models

def check_input_norm(input_norm):
    if input_norm not in INPUT_NORMS:
        raise UserError(f"unknown input_norm {input_norm!r}; choose from "
                        f"{', '.join(INPUT_NORMS)}")
    return input_norm


def input_layer(input_norm=DEFAULT_INPUT_NORM):
    """The Keras layer that normalises the 0..255 input for conv1_1 (module docstring)."""
    import keras

    scale, offset = _INPUT_SCALING[check_input_norm(input_norm)]
    return keras.layers.Rescaling(scale, offset=offset, name="normalise")


def model_input_norm(model):
    """"folded" or "plain": which input layer `model` has (its layer "normalise")."""
    scale = float(model.get_layer("normalise").scale)
    return next(n for n, (s, _) in _INPUT_SCALING.items() if abs(s - scale) < 1e-9 * max(s, 1))


def plain_from_folded_init(model):
    """conv1_1's kernel / 256 when `model` is plain (nothing when folded): a random
    initialisation drawn for the folded form becomes the same function in the plain one."""
    if model_input_norm(model) == "plain":
        conv = model.get_layer("conv1_1")
        conv.kernel.assign(conv.kernel * np.float32(1.0 / INPUT_NORM_FACTOR))


def _make_layers(cfg, seed, input_norm=DEFAULT_INPUT_NORM):
    import keras

    layers = {"image": input_layer(input_norm)}
    for i, spec in enumerate(layer_plan(cfg)):
        if spec.kind == "conv":
            # A seeded Keras initializer repeats its values on every call: one seed per layer.
            init_seed = None if seed is None else seed * 1000 + i
            layers[spec.name] = keras.layers.Conv2D(
                spec.filters, spec.kernel, padding="same", name=spec.name,
                activation="relu" if spec.relu else None,
                kernel_initializer=keras.initializers.RandomNormal(0.0, INIT_STD, seed=init_seed),
                bias_initializer="zeros")
        elif spec.kind == "pool":
            # "same" = Caffe's ceil-mode pooling on odd sizes; identical on even sizes.
            layers[spec.name] = keras.layers.MaxPooling2D(2, 2, padding="same", name=spec.name)
        else:
            layers[spec.name] = keras.layers.Concatenate(axis=-1, name=spec.name)
    return layers


def _apply(cfg, layers, image):
    """Run the plan on `image`; returns the output tensors of every layer by Keras name."""
    tensors = {"image": layers["image"](image)}
    for spec in layer_plan(cfg):
        ins = [tensors[i] for i in spec.inputs]
        tensors[spec.name] = layers[spec.name](ins if spec.kind == "concat" else ins[0])
    return tensors


def build_pose_models(config="full", weights=None, vgg19="auto", seed=None, input_norm=None):
    """(training_model, test_model) sharing every layer, hence every weight.

    training_model: inputs {"image": (B, S, S, 3), "mask": (B, S/8, S/8, 1)} with
    S = config.input_size; outputs stage{k}_L1, stage{k}_L2 for k = 1..num_stages in that
    order, each multiplied by the mask (broadcast over channels).
    test_model: input "image" (B, H, W, 3) of any size (multiples of 8 map exactly onto the
    H/8 x W/8 output grid); outputs [PAF (B, H/8, W/8, 38), heatmaps (B, H/8, W/8, 19)] of
    the last stage.

    Initialisation: normal(0, 0.01) kernels (seeded per layer when `seed` is given), zero
    biases; then `vgg19`: "auto" copies ImageNet VGG19 into conv1_1..conv4_2 when the Keras
    weight file is found (see find_vgg19_weights; a warning if not) for full-width configs and
    when no `weights` are given; a path uses that file; None skips it. Finally `weights`
    (a Keras .h5/.weights.h5 file) is loaded by layer name.

    input_norm: "folded" or "plain" (module docstring); None = the one `weights` records
    (folded without weights). The test model's `paf_origin` is the one `weights` records.
    """
    import keras

    cfg = get_config(config)
    if input_norm is None:
        input_norm = (DEFAULT_INPUT_NORM if weights is None
                      else file_conventions(weights)["input_norm"])
    layers = _make_layers(cfg, seed, input_norm)
    size, grid = cfg.input_size, cfg.output_size

    image = keras.Input((size, size, 3), name="image")
    mask = keras.Input((grid, grid, 1), name="mask")
    tensors = _apply(cfg, layers, image)
    outputs = []
    for s in range(1, cfg.num_stages + 1):
        for b, name in enumerate(output_layer_names(cfg, s), 1):
            outputs.append(keras.layers.Multiply(name=f"stage{s}_L{b}")([tensors[name], mask]))
    training_model = keras.Model({"image": image, "mask": mask}, outputs,
                                 name=f"pose_{cfg.name}_training")

    test_image = keras.Input((None, None, 3), name="image")
    test_tensors = _apply(cfg, layers, test_image)
    test_model = keras.Model(test_image, [test_tensors[n] for n in output_layer_names(cfg)],
                             name=f"pose_{cfg.name}")
    test_model.paf_origin = TARGETS_PAF_ORIGIN
    plain_from_folded_init(test_model)

    if vgg19 == "auto":
        if weights is None:
            if cfg.width == 1.0:
                init_vgg19(test_model)
            else:
                log.info("config %r has width %s: conv1_1..conv4_2 keep the random init "
                         "(ImageNet VGG19 weights only fit width 1)", cfg.name, cfg.width)
    elif vgg19 is not None:
        init_vgg19(test_model, vgg19)
    if weights is not None:
        load_weights(test_model, weights)
    return training_model, test_model


def build_pose_model(config="full", training=False, weights=None, vgg19="auto", seed=None,
                     input_norm=None):
    """The test model (image -> [PAF, heatmaps] of the last stage), or with training=True the
    training model (image + mask -> 2 x num_stages masked outputs). See build_pose_models."""
    training_model, test_model = build_pose_models(config, weights, vgg19, seed, input_norm)
    return training_model if training else test_model


# ------------------------------------------------------------------------------------------
# Weight files, by layer name

def _decode(value):
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_legacy_group(group):
    """Keras 2 save_weights layout: attrs layer_names, per layer attrs weight_names."""
    out = {}
    for layer_name in (_decode(n) for n in group.attrs["layer_names"]):
        layer_group = group[layer_name]
        names = [_decode(n) for n in layer_group.attrs.get("weight_names", [])]
        if names:
            out[layer_name] = [np.asarray(layer_group[n]) for n in names]
    return out


def _read_keras3(group):
    """Keras 3 .weights.h5 layout: layers/<path>/vars/<i>, the layer name in vars' attrs."""
    out = {}
    for key, layer_group in group["layers"].items():
        vars_group = layer_group.get("vars")
        if vars_group is None or not len(vars_group):
            continue
        name = _decode(vars_group.attrs.get("name", key))
        out[name] = [np.asarray(vars_group[str(i)]) for i in range(len(vars_group))]
    return out


def read_weight_file(path):
    """{layer name: [arrays in the layer's weight order]} from a Keras 2 (legacy .h5, also a
    full-model save with a model_weights group) or Keras 3 (.weights.h5) weight file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weight file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            if "layer_names" in f.attrs:
                return _read_legacy_group(f)
            if "model_weights" in f and "layer_names" in f["model_weights"].attrs:
                return _read_legacy_group(f["model_weights"])
            if "layers" in f:
                return _read_keras3(f)
    except (OSError, KeyError, ValueError) as e:
        raise UserError(f"cannot read weight file {path}: {e}") from None
    raise UserError(f"not a Keras weight file (no layer_names and no layers group): {path}")


def file_conventions(path, defaults=True):
    """{"input_norm", "paf_origin"} a weight file records (module docstring); absent ones are
    the defaults (folded, TARGETS_PAF_ORIGIN), or None with defaults=False."""
    try:
        with h5py.File(path, "r") as f:
            norm, origin = f.attrs.get("input_norm"), f.attrs.get("paf_origin")
    except OSError as e:
        raise UserError(f"cannot read weight file {path}: {e}") from None
    norm = None if norm is None else _decode(norm)
    if norm is not None and norm not in INPUT_NORMS:
        raise UserError(f"weight file {path} records an unknown input_norm {norm!r}")
    origin = None if origin is None else float(origin)
    if defaults:
        norm = DEFAULT_INPUT_NORM if norm is None else norm
        origin = TARGETS_PAF_ORIGIN if origin is None else origin
    return {"input_norm": norm, "paf_origin": origin}


def convert_input_norm(weights_by_name, source, target):
    """{layer: arrays} with conv1_1's kernel converted from the `source` to the `target`
    parametrisation (the same function: folded kernel = 256 x plain kernel, equal bias)."""
    if check_input_norm(source) == check_input_norm(target) or "conv1_1" not in weights_by_name:
        return weights_by_name
    kernel, *rest = weights_by_name["conv1_1"]
    factor = INPUT_NORM_FACTOR if target == "folded" else 1.0 / INPUT_NORM_FACTOR
    return dict(weights_by_name, conv1_1=[np.asarray(kernel, np.float32) * np.float32(factor),
                                          *rest])


def assign_weights(model, weights_by_name, source):
    """Set the weights of the model's layers found in `weights_by_name`; UserError on a shape
    mismatch (names the layer and both shapes). Returns the names of the layers set."""
    pending = []
    for layer in model.layers:
        if layer.name not in weights_by_name or not layer.weights:
            continue
        arrays = weights_by_name[layer.name]
        if len(arrays) != len(layer.weights):
            raise UserError(f"layer {layer.name}: {source} has {len(arrays)} weight arrays, "
                            f"the model has {len(layer.weights)}")
        for var, arr in zip(layer.weights, arrays):
            if tuple(var.shape) != tuple(arr.shape):
                raise UserError(f"layer {layer.name}: {source} has {var.name} of shape "
                                f"{tuple(arr.shape)}, the model expects {tuple(var.shape)}")
        pending.append((layer, arrays))
    # All checks pass before anything is set: a failed load leaves the model untouched.
    for layer, arrays in pending:
        layer.set_weights([np.asarray(a, np.float32) for a in arrays])
    return [layer.name for layer, _ in pending]


def load_weights(model, path):
    """Load a Keras weight file into `model` by layer name (Keras 2 legacy .h5 such as the
    public reproductions' weights.0100.h5, or Keras 3 .weights.h5). Layers of the model that
    the file lacks keep their values (logged); layers of the file the model lacks are
    ignored (logged). UserError if the file is missing/unreadable, a shape differs, or no
    layer matches. A file of the other input_norm is converted to the model's; the model's
    `paf_origin` becomes the file's. Returns the names of the layers loaded."""
    weights = read_weight_file(path)
    recorded = file_conventions(path)
    weights = convert_input_norm(weights, recorded["input_norm"], model_input_norm(model))
    loaded = assign_weights(model, weights, f"weight file {path}")
    model.paf_origin = recorded["paf_origin"]
    if not loaded:
        raise UserError(f"no layer of weight file {path} matches the model "
                        f"(file layers: {', '.join(list(weights)[:5])}...)")
    weighted = [layer.name for layer in model.layers if layer.weights]
    missing = [n for n in weighted if n not in weights]
    unused = [n for n in weights if n not in set(weighted)]
    if missing:
        log.warning("%d layers of the model are not in %s and keep their values (first: %s)",
                    len(missing), path, missing[0])
    if unused:
        log.info("%d layers of %s are not in the model (first: %s)", len(unused), path,
                 unused[0])
    log.info("loaded %d layers from %s", len(loaded), path)
    return loaded


def save_weights(model, path):
    """Write the model's weights atomically. A name ending in .weights.h5 gets Keras 3's
    format; any other name the Keras 2 layout (layer_names / weight_names attributes, what
    the public reproductions' weights.NNNN.h5 use). load_weights reads both by name. Both
    record the model's input_norm and paf_origin (default TARGETS_PAF_ORIGIN) as attributes."""
    import keras

    path = Path(path)
    conventions = {"input_norm": model_input_norm(model),
                   "paf_origin": float(getattr(model, "paf_origin", TARGETS_PAF_ORIGIN))}
    with atomic_path(path) as tmp:
        if path.name.endswith(".weights.h5"):
            # Keras insists on the suffix, so write beside the temporary name and move.
            keras_tmp = tmp.with_name(tmp.name + ".weights.h5")
            try:
                model.save_weights(str(keras_tmp))
                with h5py.File(keras_tmp, "a") as f:
                    f.attrs.update(conventions)
                os.replace(keras_tmp, tmp)
            finally:
                if keras_tmp.exists():
                    keras_tmp.unlink()
        else:
            with h5py.File(tmp, "w") as f:
                f.attrs.update(conventions)
                f.attrs["layer_names"] = np.array([l.name.encode() for l in model.layers])
                f.attrs["backend"] = b"tensorflow"
                f.attrs["keras_version"] = keras.__version__.encode()
                for layer in model.layers:
                    group = f.create_group(layer.name)
                    names = [f"{layer.name}/{v.name}:0" for v in layer.weights]
                    group.attrs["weight_names"] = np.array([n.encode() for n in names])
                    for name, var in zip(names, layer.weights):
                        group.create_dataset(name, data=np.asarray(var.numpy()))
    return path


# ------------------------------------------------------------------------------------------
# The experts' weight files

DEFAULT_EPOCH = 100          # the epoch the fork evaluates
WEIGHT_FILE = re.compile(r"weights\.(\d{4,})\.h5$")


def find_weights(effect=NORMAL, weights=None, epoch=DEFAULT_EPOCH, folder=None):
    """(path, note) of the pose weights to use: `weights` when given, else the expert's
    weights.0100.h5 in `folder` (default training/weights<effect>), else its newest
    weights.NNNN.h5 there."""
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise UserError(f"weight file not found: {path}")
        return path, "given with --weights"
    folder = paths.expert_weights_dir(effect) if folder is None else Path(folder)
    wanted = folder / f"weights.{epoch:04d}.h5"
    if wanted.is_file():
        return wanted, f"epoch {epoch} of the {EFFECT_NAMES[effect]} expert"
    found = sorted((int(m.group(1)), p) for p in folder.glob("weights.*.h5")
                   if (m := WEIGHT_FILE.search(p.name)))
    if found:
        epoch_found, path = found[-1]
        return path, (f"newest checkpoint (epoch {epoch_found}) of the "
                      f"{EFFECT_NAMES[effect]} expert; {wanted.name} does not exist")
    raise UserError(
        f"no weights for the {EFFECT_NAMES[effect]} expert: tried {wanted} and "
        f"{folder}/weights.NNNN.h5; train them with training/train_pose.py --effect "
        f"'{effect}' or convert CMU's model with python -m model.convert_caffemodel "
        f"--caffemodel pose_iter_440000.caffemodel --out {wanted}, or pass --weights FILE")


def missing_layers(config, weights_path):
    """The convolutions of `config` (in network order) that the weight file has no weights
    for; reads the file (UserError if it cannot)."""
    found = read_weight_file(weights_path)
    return [spec.name for spec in conv_layers(config) if spec.name not in found]


def check_weight_coverage(config, weights_path, hint=""):
    """UserError naming the first layer of `config` that the weight file lacks: for
    inference, where a layer left at its initial values gives maps that look like maps."""
    missing = missing_layers(config, weights_path)
    if missing:
        name = config if isinstance(config, str) else config.name
        raise UserError(f"weight file {weights_path} lacks layer {missing[0]} of the {name!r} "
                        f"configuration ({len(missing)} of {len(conv_layers(config))} layers "
                        f"missing){hint}")


def load_pose_model(config, weights_path, allow_partial=False):
    """The Keras test model of `config` with the weights of `weights_path` (by layer name),
    frozen for inference where the configuration's recipe says so (freeze_inference).

    A file that lacks a layer of the configuration is refused (UserError naming the first)
    unless allow_partial, which keeps such layers at their initial values."""
    if not allow_partial:
        check_weight_coverage(config, weights_path)
    from model.recipes import get_recipe       # model.recipes imports this module
    model = build_pose_model(config, training=False, weights=str(weights_path), vgg19=None)
    if get_recipe(get_config(config)).frozen_inference:
        model.frozen_inference = freeze_inference(model)
    return model


def freeze_inference(model):
    """batch -> [paf, heatmaps] of the test model `model` with its present weights as graph
    constants (load_pose_model attaches it as `frozen_inference`, which model.inference
    runs; weights set later do not reach it). With variables, oneDNN's convolutions reorder
    their filters for every new input size, and with AVX2 kernels at batch 1 fall back to a
    slower GEMM kernel; with constants they reorder once (BENCHMARKS.md, "Inference
    backends": the demo's evaluation 1.5-2.0x faster in its network time with AVX2, 1.2x
    with AVX-512, the same people). Freezing and the first call cost about 1 s for the small
    configuration and, measured once, 52 s for the full one, which its recipe therefore
    leaves unfrozen (model.recipes)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)
    function = tf.function(lambda batch: model(batch, training=False))
    frozen = convert_variables_to_constants_v2(function.get_concrete_function(
        tf.TensorSpec([None, None, None, 3], tf.float32)))
    return lambda batch: frozen(tf.convert_to_tensor(batch, tf.float32))


# ------------------------------------------------------------------------------------------
# ImageNet VGG19 initialisation

VGG19_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"


def vgg19_candidates():
    """Keras' VGG19 notop file in Keras' weight caches (paths.keras_weight_dirs)."""
    return [d / VGG19_FILE for d in paths.keras_weight_dirs()]


def find_vgg19_weights():
    """The first existing VGG19 notop weight file of vgg19_candidates(), or None."""
    return next((p for p in vgg19_candidates() if p.is_file()), None)


def init_vgg19(model, path=None, fold_normalisation=True):
    """Copy ImageNet VGG19 (Keras' notop file) into conv1_1..conv4_2 of `model`.

    Keras' VGG19 expects BGR 0..255 minus the ImageNet mean ("caffe" preprocessing); our
    input is BGR too, so channels need no reordering. With fold_normalisation (default)
    conv1_1 computes exactly VGG's response (except in the 1-pixel zero-padding border, where
    we pad with grey 128 instead of the mean) on the model's input x: VGG's input is
    I - mean = k x + (128 - mean) with k = 256 for the folded input layer (x = I/256 - 0.5)
    and k = 1 for the plain one (x = I - 128), so conv1_1 takes kernel k W and bias
    b + sum(W (128 - mean)). fold_normalisation=False copies the weights as they are, as CMU
    and the Keras reproductions did (with the folded input layer their conv1_1 then sees
    inputs 256x smaller than in ImageNet).

    path None: look it up (find_vgg19_weights); not found -> a warning and the random init
    stays. Returns True if the weights were copied.
    """
    if path is None:
        path = find_vgg19_weights()
        if path is None:
            log.warning("ImageNet VGG19 weights not found (%s): conv1_1..conv4_2 keep the "
                        "random init (normal, std %s). Put Keras' %s there to use them.",
                        " or ".join(str(p) for p in vgg19_candidates()), INIT_STD, VGG19_FILE)
            return False
    source = read_weight_file(path)
    weights = {}
    for ours, theirs in VGG19_LAYERS.items():
        if theirs not in source:
            raise UserError(f"VGG19 weight file {path} has no layer {theirs} (for {ours})")
        weights[ours] = [np.asarray(a, np.float32) for a in source[theirs]]
    if fold_normalisation:
        kernel, bias = weights["conv1_1"]
        shift = 128.0 - VGG19_MEAN_BGR
        bias = bias + np.einsum("hwco,c->o", kernel.astype(np.float64), shift)
        k = INPUT_NORM_FACTOR if model_input_norm(model) == "folded" else 1.0
        weights["conv1_1"] = [kernel * np.float32(k), bias.astype(np.float32)]
    assign_weights(model, weights, f"VGG19 weight file {path}")
    log.info("conv1_1..conv4_2 initialised from ImageNet VGG19 (%s%s)", path,
             ", normalisation folded into conv1_1" if fold_normalisation else "")
    return True
