"""The Keras VGG-PAF network: structure, configurations, shared weights, weight files, VGG19."""
import logging

import h5py
import keras
import numpy as np
import pytest

from model import inference, network
from model.errors import UserError

BACKBONE = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
            "conv3_4", "conv4_1", "conv4_2", "conv4_3_CPM", "conv4_4_CPM"]
FULL_NAMES = (BACKBONE
              + [f"Mconv{i}_stage1_L{b}" for i in range(1, 6) for b in (1, 2)]
              + [f"Mconv{i}_stage{s}_L{b}" for s in range(2, 7) for i in range(1, 8)
                 for b in (1, 2)])


@pytest.fixture(scope="module")
def full_models():
    return network.build_pose_models("full", vgg19=None, seed=0)


@pytest.fixture(scope="module")
def small_models():
    return network.build_pose_models("small", vgg19=None, seed=1)


def weighted(model):
    return {layer.name: layer for layer in model.layers if layer.weights}


def image_batch(batch, height, width, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, height, width, 3)).astype("float32")


def all_weights(model):
    return {name: [np.asarray(w) for w in layer.get_weights()]
            for name, layer in weighted(model).items()}


def assert_same_weights(a, b):
    wa, wb = all_weights(a), all_weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        for x, y in zip(wa[name], wb[name]):
            np.testing.assert_array_equal(x, y, err_msg=name)


# ------------------------------------------------------------------------------ structure

def test_full_model_parameter_count(full_models):
    training, test = full_models
    assert test.count_params() == 52_311_446
    assert training.count_params() == 52_311_446
    assert network.count_parameters("full") == 52_311_446


def test_full_model_layer_names_and_shapes(full_models):
    _, test = full_models
    layers = weighted(test)
    assert sorted(layers) == sorted(FULL_NAMES)
    assert len(layers) == 92
    expected = {
        "conv1_1": (3, 3, 3, 64), "conv4_2": (3, 3, 512, 512), "conv4_3_CPM": (3, 3, 512, 256),
        "conv4_4_CPM": (3, 3, 256, 128), "Mconv4_stage1_L1": (1, 1, 128, 512),
        "Mconv5_stage1_L1": (1, 1, 512, 38), "Mconv5_stage1_L2": (1, 1, 512, 19),
        # stage input: 38 PAF + 19 heatmaps + 128 features
        "Mconv1_stage2_L1": (7, 7, 185, 128), "Mconv1_stage6_L2": (7, 7, 185, 128),
        "Mconv6_stage4_L1": (1, 1, 128, 128), "Mconv7_stage6_L1": (1, 1, 128, 38),
        "Mconv7_stage6_L2": (1, 1, 128, 19),
    }
    for name, shape in expected.items():
        assert tuple(layers[name].kernel.shape) == shape, name
    # Only the branch outputs are linear.
    linear = {n for n, layer in layers.items() if layer.activation is keras.activations.linear}
    assert linear == {f"Mconv5_stage1_L{b}" for b in (1, 2)} | {
        f"Mconv7_stage{s}_L{b}" for s in range(2, 7) for b in (1, 2)}


def test_stage_input_is_paf_heatmaps_features_in_that_order(full_models):
    _, test = full_models
    for s in range(2, 7):
        previous = ("Mconv5_stage1_L{}" if s == 2 else f"Mconv7_stage{s - 1}_L{{}}")
        node = test.get_layer(f"concat_stage{s}")._inbound_nodes[-1]
        sources = [t._keras_history.operation.name for t in node.input_tensors]
        assert sources == [previous.format(1), previous.format(2), "conv4_4_CPM"]


def test_initialisation_is_reference_normal_and_zero_bias(full_models):
    _, test = full_models
    layer = test.get_layer("Mconv1_stage2_L1")
    kernel = np.asarray(layer.kernel)
    assert abs(kernel.std() - 0.01) < 5e-4 and abs(kernel.mean()) < 5e-4
    assert not np.any(np.asarray(layer.bias))


def test_no_lambda_layers_and_rescaling_normalises(full_models, small_models):
    for model in (*full_models, *small_models):
        kinds = {type(layer).__name__ for layer in model.layers}
        assert "Lambda" not in kinds
        assert "Rescaling" in kinds
    norm = small_models[1].get_layer("normalise")
    out = np.asarray(norm(np.array([[[[0.0, 128.0, 255.0]]]], np.float32)))
    np.testing.assert_allclose(out.ravel(), [-0.5, 0.0, 255 / 256 - 0.5], atol=1e-7)


# ------------------------------------------------------------------------- configurations

def test_configs_and_lookup():
    assert {"full", "small"} <= set(network.CONFIGS)
    full = network.CONFIGS["full"]
    assert (full.num_stages, full.width, full.input_size, full.stage_kernel) == (6, 1.0, 368, 7)
    small = network.get_config("small")
    assert small.num_stages >= 2 and small.input_size % network.STRIDE == 0
    assert 300_000 <= network.count_parameters(small) <= 2_100_000
    assert network.get_config(small) is small
    with pytest.raises(UserError, match="unknown network configuration 'huge'"):
        network.get_config("huge")
    with pytest.raises(ValueError, match="multiple of 8"):
        network.PoseConfig("bad", input_size=100)
    with pytest.raises(ValueError, match="odd"):
        network.PoseConfig("bad", stage_kernel=4)


def test_small_test_model_output_shapes(small_models):
    _, test = small_models
    paf, heat = test(image_batch(2, 64, 96))
    assert tuple(paf.shape) == (2, 8, 12, 38)
    assert tuple(heat.shape) == (2, 8, 12, 19)
    # Sizes that are not multiples of 8 round up like Caffe's ceil-mode pooling.
    paf, heat = test(image_batch(1, 60, 76))
    assert tuple(paf.shape) == (1, 8, 10, 38) and tuple(heat.shape) == (1, 8, 10, 19)


def test_small_training_model_inputs_outputs(small_models):
    training, _ = small_models
    cfg = network.CONFIGS["small"]
    s, g = cfg.input_size, cfg.output_size
    assert g * 8 == s
    assert [tuple(t.shape) for t in training.inputs] in (
        [(None, s, s, 3), (None, g, g, 1)], [(None, g, g, 1), (None, s, s, 3)])
    names = [f"stage{k}_L{b}" for k in range(1, cfg.num_stages + 1) for b in (1, 2)]
    assert list(training.output_names) == names
    outs = training({"image": image_batch(2, s, s), "mask": np.ones((2, g, g, 1), "float32")})
    assert [tuple(o.shape) for o in outs] == [(2, g, g, 38 if n.endswith("L1") else 19)
                                            for n in names]


def test_full_training_model_has_twelve_masked_outputs(full_models):
    training, _ = full_models
    assert list(training.output_names) == [f"stage{k}_L{b}" for k in range(1, 7) for b in (1, 2)]
    assert {type(training.get_layer(n)).__name__ for n in training.output_names} == {"Multiply"}


def test_training_outputs_are_masked_test_outputs(small_models):
    training, test = small_models
    cfg = network.CONFIGS["small"]
    s, g = cfg.input_size, cfg.output_size
    image = image_batch(2, s, s, seed=3)
    mask = (np.random.default_rng(4).random((2, g, g, 1)) > 0.5).astype("float32")
    outs = [np.asarray(o) for o in training({"image": image, "mask": mask})]
    paf, heat = (np.asarray(o) for o in test(image))
    assert np.abs(paf).max() > 0
    np.testing.assert_allclose(outs[-2], paf * mask, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(outs[-1], heat * mask, rtol=1e-5, atol=1e-7)
    for out in outs:
        assert not np.any(out[np.broadcast_to(mask == 0, out.shape)])


def test_training_and_test_models_share_weights():
    training, test = network.build_pose_models("small", vgg19=None, seed=5)
    for name, layer in weighted(test).items():
        assert training.get_layer(name).kernel is layer.kernel
    image = image_batch(1, 64, 64)
    before = np.asarray(test(image)[1])
    layer = training.get_layer("Mconv7_stage3_L2")
    layer.bias.assign(np.full(layer.bias.shape, 2.0, "float32"))
    after = np.asarray(test(image)[1])
    np.testing.assert_allclose(after - before, 2.0, atol=1e-5)


def test_seeded_builds_are_reproducible():
    a = network.build_pose_model("small", vgg19=None, seed=7)
    b = network.build_pose_model("small", vgg19=None, seed=7)
    c = network.build_pose_model("small", vgg19=None, seed=8)
    assert_same_weights(a, b)
    assert not np.array_equal(np.asarray(a.get_layer("conv2_1").kernel),
                              np.asarray(c.get_layer("conv2_1").kernel))
    # Each layer draws its own values, not a repeat of one seeded draw.
    assert not np.array_equal(np.asarray(a.get_layer("conv2_2").kernel)[..., :8, :8],
                              np.asarray(a.get_layer("conv3_1").kernel)[..., :8, :8])


def test_lr_multipliers_follow_caffe():
    assert network.lr_multipliers("conv1_1") == (1.0, 2.0)
    assert network.lr_multipliers("Mconv5_stage1_L2") == (1.0, 2.0)
    assert network.lr_multipliers("Mconv1_stage2_L1") == (4.0, 8.0)
    assert network.lr_multipliers("Mconv7_stage6_L2") == (4.0, 8.0)


# --------------------------------------------------------------------------- weight files

@pytest.mark.parametrize("suffix", [".h5", ".weights.h5"])
def test_weight_file_round_trip_by_name(tmp_path, small_models, suffix):
    _, source = small_models
    path = tmp_path / f"weights.0001{suffix}"
    network.save_weights(source, path)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind
    target = network.build_pose_model("small", vgg19=None, seed=2)
    assert not np.array_equal(np.asarray(target.get_layer("conv1_1").kernel),
                              np.asarray(source.get_layer("conv1_1").kernel))
    loaded = network.load_weights(target, path)
    assert len(loaded) == len(weighted(source))
    assert_same_weights(source, target)
    image = image_batch(1, 48, 48)
    np.testing.assert_array_equal(np.asarray(source(image)[0]), np.asarray(target(image)[0]))
    # The same file loads into the training model (same layer names).
    training, _ = network.build_pose_models("small", weights=path, vgg19=None, seed=3)
    assert_same_weights(source, training)


def write_keras2_file(path, arrays, in_model_weights=False, extra_layers=()):
    """The layout Keras 2's save_weights writes (what the public weights.0100.h5 use),
    written by hand: layer order shuffled, weightless layers and foreign layers included."""
    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if in_model_weights else f
        names = ["input_1", "lambda_1", *reversed(list(arrays)), *extra_layers]
        root.attrs["layer_names"] = np.array([n.encode() for n in names])
        f.attrs["keras_version"] = b"2.1.5"
        for name in names:
            group = root.create_group(name)
            weights = arrays.get(name) or ([np.ones((2, 2), "float32")] if name in extra_layers
                                           else [])
            weight_names = [f"{name}/{k}:0" for k in ("kernel", "bias")][:len(weights)]
            group.attrs["weight_names"] = np.array([n.encode() for n in weight_names])
            for weight_name, value in zip(weight_names, weights):
                group.create_dataset(weight_name, data=value)


@pytest.mark.parametrize("in_model_weights", [False, True])
def test_loads_keras2_layout_by_name(tmp_path, in_model_weights):
    model = network.build_pose_model("small", vgg19=None, seed=9)
    rng = np.random.default_rng(0)
    arrays = {name: [rng.standard_normal(w.shape).astype("float32") for w in layer.weights]
              for name, layer in weighted(model).items()}
    path = tmp_path / "weights.0100.h5"
    write_keras2_file(path, arrays, in_model_weights, extra_layers=("Mconv1_stage9_L1",))
    loaded = network.load_weights(model, path)
    assert sorted(loaded) == sorted(arrays)
    for name, values in arrays.items():
        for var, value in zip(model.get_layer(name).weights, values):
            np.testing.assert_array_equal(np.asarray(var), value)


def test_partial_file_loads_what_it_has(tmp_path, caplog):
    model = network.build_pose_model("small", vgg19=None, seed=10)
    before = np.asarray(model.get_layer("conv2_1").kernel).copy()
    kernel = np.full(model.get_layer("conv1_1").kernel.shape, 0.5, "float32")
    bias = np.arange(model.get_layer("conv1_1").bias.shape[0], dtype="float32")
    path = tmp_path / "partial.h5"
    write_keras2_file(path, {"conv1_1": [kernel, bias]})
    with caplog.at_level(logging.WARNING, logger="model.network"):
        assert network.load_weights(model, path) == ["conv1_1"]
    assert "keep their values" in caplog.text
    np.testing.assert_array_equal(np.asarray(model.get_layer("conv1_1").bias), bias)
    np.testing.assert_array_equal(np.asarray(model.get_layer("conv2_1").kernel), before)


def test_weight_file_errors(tmp_path):
    model = network.build_pose_model("small", vgg19=None, seed=11)
    with pytest.raises(UserError, match="weight file not found: .*nothing.h5"):
        network.load_weights(model, tmp_path / "nothing.h5")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"this is not an HDF5 file" * 10)
    with pytest.raises(UserError, match="cannot read weight file .*garbage.h5"):
        network.load_weights(model, garbage)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(UserError, match="not a Keras weight file"):
        network.load_weights(model, empty)
    foreign = tmp_path / "foreign.h5"
    write_keras2_file(foreign, {"dense_1": [np.ones((4, 2), "float32"), np.ones(2, "float32")]})
    with pytest.raises(UserError, match="no layer of weight file .* matches the model"):
        network.load_weights(model, foreign)


def test_shape_mismatch_names_layer_and_both_shapes_and_changes_nothing(tmp_path):
    model = network.build_pose_model("small", vgg19=None, seed=12)
    before = all_weights(model)
    n = model.get_layer("conv1_2").kernel.shape[-1]
    arrays = {"conv1_1": [np.ones((3, 3, 3, 16), "float32"), np.ones(16, "float32")],
              "conv1_2": [np.ones((3, 3, 16, n + 1), "float32"), np.ones(n + 1, "float32")]}
    path = tmp_path / "wrong.h5"
    write_keras2_file(path, arrays)
    with pytest.raises(UserError) as err:
        network.load_weights(model, path)
    message = str(err.value)
    assert "conv1_2" in message
    assert f"(3, 3, 16, {n + 1})" in message and f"(3, 3, 16, {n})" in message
    after = all_weights(model)
    for name in before:
        for x, y in zip(before[name], after[name]):
            np.testing.assert_array_equal(x, y)


def test_saved_keras_model_loads_in_safe_mode(tmp_path, small_models):
    training, test = small_models
    cfg = network.CONFIGS["small"]
    image = image_batch(1, cfg.input_size, cfg.input_size, seed=6)
    mask = np.ones((1, cfg.output_size, cfg.output_size, 1), "float32")
    for model, inputs in ((test, image), (training, {"image": image, "mask": mask})):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        for a, b in zip(model(inputs), loaded(inputs)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------- VGG19

@pytest.fixture(scope="module")
def fake_vgg19(tmp_path_factory):
    """Keras' VGG19 notop file layout (legacy layer_names/weight_names, block names,
    Theano-era weight names), with random values; the real file cannot be downloaded here."""
    path = tmp_path_factory.mktemp("keras_home") / "models" / network.VGG19_FILE
    path.parent.mkdir()
    rng = np.random.default_rng(1)
    channels = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
                (256, 256), (256, 512), (512, 512), (512, 512)]
    names = list(network.VGG19_LAYERS.values()) + ["block4_conv3"]
    arrays = {}
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"input_1"] + [n.encode() for n in names])
        f.create_group("input_1").attrs["weight_names"] = np.array([], dtype="S1")
        for name, (cin, cout) in zip(names, channels):
            kernel = rng.normal(0, 0.05, (3, 3, cin, cout)).astype("float32")
            bias = rng.normal(0, 0.1, cout).astype("float32")
            arrays[name] = (kernel, bias)
            group = f.create_group(name)
            wn = [f"{name}_W_1:0", f"{name}_b_1:0"]
            group.attrs["weight_names"] = np.array([n.encode() for n in wn])
            group.create_dataset(wn[0], data=kernel)
            group.create_dataset(wn[1], data=bias)
    return path, arrays


def test_vgg19_copied_as_is(full_models, fake_vgg19):
    _, test = full_models
    path, arrays = fake_vgg19
    assert network.init_vgg19(test, path, fold_normalisation=False)
    for ours, theirs in network.VGG19_LAYERS.items():
        np.testing.assert_array_equal(np.asarray(test.get_layer(ours).kernel), arrays[theirs][0])
        np.testing.assert_array_equal(np.asarray(test.get_layer(ours).bias), arrays[theirs][1])


def test_vgg19_folded_conv1_1_matches_imagenet_preprocessing(full_models, fake_vgg19):
    _, test = full_models
    path, arrays = fake_vgg19
    assert network.init_vgg19(test, path)  # fold_normalisation=True is the default
    np.testing.assert_array_equal(np.asarray(test.get_layer("conv1_2").kernel),
                                  arrays["block1_conv2"][0])
    image = image_batch(1, 12, 14, seed=8)
    ours = np.asarray(test.get_layer("conv1_1")(test.get_layer("normalise")(image)))
    kernel, bias = arrays["block1_conv1"]
    vgg_input = image - network.VGG19_MEAN_BGR  # Keras' "caffe" preprocessing of a BGR image
    theirs = np.asarray(keras.ops.relu(keras.ops.conv(vgg_input, kernel, padding="same") + bias))
    np.testing.assert_allclose(ours[:, 1:-1, 1:-1], theirs[:, 1:-1, 1:-1], rtol=1e-4, atol=1e-3)


def test_vgg19_lookup_and_missing_file_warning(tmp_path, monkeypatch, fake_vgg19, caplog):
    path, _ = fake_vgg19
    monkeypatch.setenv("KERAS_HOME", str(path.parent.parent))
    assert network.find_vgg19_weights() == path
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert network.find_vgg19_weights() is None
    model = network.build_pose_model("small", vgg19=None, seed=13)
    before = np.asarray(model.get_layer("conv1_1").kernel).copy()
    with caplog.at_level(logging.WARNING, logger="model.network"):
        assert network.init_vgg19(model) is False
    assert "VGG19 weights not found" in caplog.text and "random init" in caplog.text
    np.testing.assert_array_equal(np.asarray(model.get_layer("conv1_1").kernel), before)
    # A narrower configuration cannot take VGG19's shapes: the builder says so and goes on.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="model.network"):
        network.build_pose_model("small", seed=14)
    assert "keep the random init" in caplog.text
    with pytest.raises(UserError, match="conv1_1"):
        network.init_vgg19(model, path)


# ------------------------------------------------------------ conv1_1's parametrisation

def test_plain_and_folded_compute_the_same_for_converted_weights(tmp_path, small_models):
    """plain (input x - 128, kernel k) and folded (input x/256 - 0.5, kernel 256 k) are one
    function: a folded file loads into a plain model converted, and back."""
    _, folded = small_models
    plain = network.build_pose_model("small", vgg19=None, seed=5, input_norm="plain")
    assert (network.model_input_norm(folded), network.model_input_norm(plain)) == \
        ("folded", "plain")
    grey = np.asarray(plain.get_layer("normalise")(np.array([[[[0.0, 128.0, 255.0]]]],
                                                            np.float32)))
    np.testing.assert_allclose(grey.ravel(), [-128.0, 0.0, 127.0])
    path = network.save_weights(folded, tmp_path / "folded.h5")
    network.load_weights(plain, path)
    kernel, bias = folded.get_layer("conv1_1").get_weights()
    np.testing.assert_array_equal(plain.get_layer("conv1_1").get_weights()[0] * 256, kernel)
    np.testing.assert_array_equal(plain.get_layer("conv1_1").get_weights()[1], bias)
    np.testing.assert_array_equal(plain.get_layer("conv2_1").get_weights()[0],
                                  folded.get_layer("conv2_1").get_weights()[0])
    image = image_batch(2, 40, 56, seed=3)
    for a, b in zip(plain(image), folded(image)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
    back = network.build_pose_model("small", vgg19=None, seed=6)
    network.load_weights(back, network.save_weights(plain, tmp_path / "plain.weights.h5"))
    np.testing.assert_array_equal(back.get_layer("conv1_1").get_weights()[0], kernel)
    # A random initialisation is the folded one converted: the same seed, the same maps.
    fresh = network.build_pose_model("small", vgg19=None, seed=1, input_norm="plain")
    np.testing.assert_array_equal(fresh.get_layer("conv1_1").get_weights()[0] * 256, kernel)


def test_an_sgd_step_moves_plain_conv1_1_256_squared_times_more():
    """Same function, conv1_1's kernel 256x smaller in plain: its gradient is 256x larger, so
    the same SGD step changes it 256^2 times more relative to its size."""
    import tensorflow as tf

    from model.batchnorm import he_init
    folded = network.build_pose_model("small", vgg19=None, seed=2)
    he_init(folded, "small", 0)          # maps far from zero, so are the gradients
    plain = network.build_pose_model("small", vgg19=None, input_norm="plain")
    plain.set_weights(folded.get_weights())
    conv = plain.get_layer("conv1_1")
    conv.set_weights([conv.get_weights()[0] / 256, conv.get_weights()[1]])
    image = image_batch(1, 32, 32, seed=4)
    grads = []
    for model in (folded, plain):
        with tf.GradientTape() as tape:
            loss = sum(tf.reduce_sum(o ** 2) for o in model(image))
        grads.append(tape.gradient(loss, model.get_layer("conv1_1").kernel).numpy())
    assert np.abs(grads[0]).max() > 0
    np.testing.assert_allclose(grads[1], 256 * grads[0], rtol=1e-3,
                               atol=1e-4 * np.abs(grads[1]).max())
    kernels = [m.get_layer("conv1_1").get_weights()[0] for m in (folded, plain)]
    ratio = (np.linalg.norm(grads[1]) / np.linalg.norm(kernels[1])) / \
        (np.linalg.norm(grads[0]) / np.linalg.norm(kernels[0]))
    assert ratio == pytest.approx(256 ** 2, rel=1e-3)


@pytest.mark.parametrize("suffix", [".h5", ".weights.h5"])
def test_plain_model_saves_and_loads_with_its_flag(tmp_path, suffix):
    plain = network.build_pose_model("small", vgg19=None, seed=7, input_norm="plain")
    path = network.save_weights(plain, tmp_path / f"weights.0001{suffix}")
    assert network.file_conventions(path) == {"input_norm": "plain", "paf_origin": 3.5}
    loaded = network.load_pose_model("small", path)
    assert network.model_input_norm(loaded) == "plain"
    assert_same_weights(plain, loaded)
    image = image_batch(1, 24, 32, seed=5)
    np.testing.assert_array_equal(np.asarray(plain(image)[1]), np.asarray(loaded(image)[1]))


def test_loaded_models_run_frozen_with_the_keras_maps(tmp_path):
    """A model loaded from a weight file runs through its frozen inference function: the
    maps of Keras' predict function, on new input sizes and batches, from the weights it was
    loaded with."""
    model = network.build_pose_model("small", vgg19=None, seed=3)
    path = network.save_weights(model, tmp_path / "weights.0001.h5")
    loaded = network.load_pose_model("small", path)
    batches = [image_batch(1, 48, 64, seed=4), image_batch(2, 40, 72, seed=5)]
    for batch in batches:
        maps = inference.run_network(loaded, batch)
        for got, want in zip(maps, model.predict_on_batch(batch)):
            assert got.shape == want.shape and np.abs(want).max() > 0
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    for layer in loaded.layers:          # what the frozen function holds are constants
        layer.set_weights([np.zeros_like(w) for w in layer.get_weights()])
    np.testing.assert_array_equal(inference.run_network(loaded, batches[0])[1],
                                  loaded.frozen_inference(batches[0])[1])
    assert np.abs(inference.run_network(loaded, batches[0])[1]).max() > 0
    assert np.abs(loaded.predict_on_batch(batches[0])[1]).max() == 0


def test_weight_files_record_the_paf_grid_and_default_to_the_targets(tmp_path):
    model = network.build_pose_model("small", vgg19=None, seed=8)
    model.paf_origin = network.CMU_PAF_ORIGIN
    path = network.save_weights(model, tmp_path / "cmu.h5")
    assert network.file_conventions(path)["paf_origin"] == 0.0
    assert network.load_pose_model("small", path).paf_origin == 0.0
    bare = tmp_path / "bare.h5"                       # a reproduction's file: no attributes
    write_keras2_file(bare, all_weights(model))
    assert network.file_conventions(bare, defaults=False) == {"input_norm": None,
                                                              "paf_origin": None}
    assert network.file_conventions(bare) == {"input_norm": "folded", "paf_origin": 3.5}
    assert network.load_pose_model("small", bare).paf_origin == 3.5
    with h5py.File(bare, "a") as f:
        f.attrs["input_norm"] = "sideways"
    with pytest.raises(UserError, match="unknown input_norm"):
        network.file_conventions(bare)


def test_vgg19_plain_conv1_1_keeps_vggs_kernel(fake_vgg19):
    """plain: conv1_1 takes VGG's kernel unscaled (CMU's scale) and still computes VGG's
    response on the image; folded holds 256x that kernel with the same bias."""
    path, arrays = fake_vgg19
    backbone = network.PoseConfig("backbone_only", num_stages=1)    # width 1: VGG's shapes
    models = {norm: network.build_pose_model(backbone, vgg19=path, input_norm=norm)
              for norm in network.INPUT_NORMS}
    kernel, bias = arrays["block1_conv1"]
    plain_w = models["plain"].get_layer("conv1_1").get_weights()
    np.testing.assert_array_equal(plain_w[0], kernel)
    folded_w = models["folded"].get_layer("conv1_1").get_weights()
    np.testing.assert_array_equal(folded_w[0], kernel * 256)
    np.testing.assert_array_equal(folded_w[1], plain_w[1])
    image = image_batch(1, 12, 14, seed=8)
    vgg = np.asarray(keras.ops.relu(keras.ops.conv(image - network.VGG19_MEAN_BGR, kernel,
                                                   padding="same") + bias))
    for model in models.values():
        ours = np.asarray(model.get_layer("conv1_1")(model.get_layer("normalise")(image)))
        np.testing.assert_allclose(ours[:, 1:-1, 1:-1], vgg[:, 1:-1, 1:-1], rtol=1e-4, atol=1e-3)


def test_training_takes_the_input_norm_into_every_file(tmp_path):
    """--input_norm: the flag, the run's check, the batch-norm training model, its folded
    weight file, and a warm start from a state file of the other parametrisation."""
    from types import SimpleNamespace

    from model import batchnorm, state, trainer
    from model.train_cli import build_parser, config_from_args
    from model.train_config import TrainConfig, check_inputs
    assert config_from_args(build_parser().parse_args(["--input_norm", "plain"])).input_norm \
        == "plain"
    assert config_from_args(build_parser().parse_args([])).input_norm == "folded"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--input_norm", "sideways"])
    with pytest.raises(UserError, match="unknown input_norm"):       # before any file is read
        check_inputs(TrainConfig(input_norm="sideways"))
    plan = SimpleNamespace(network=network.get_config("small"), batch_norm=True, init="he")
    training, export = trainer.build_models(plan, 0, None, False, "plain")
    assert export is None and network.model_input_norm(training) == "plain"
    image = image_batch(2, 184, 184, seed=9)
    ones = np.ones((2, 23, 23, 1), np.float32)
    # He's draw, made for the folded form, starts both forms from the same function.
    for batch_norm in (True, False):
        plan = SimpleNamespace(network=network.get_config("small"), batch_norm=batch_norm,
                               init="he")
        pair = [trainer.build_models(plan, 0, None, False, norm)[0] for norm in ("folded",
                                                                                  "plain")]
        a, b = (np.asarray(m({"image": image, "mask": ones}, training=True)[-1]) for m in pair)
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4 * np.abs(a).max())
        if batch_norm:
            training = pair[1]
    plain = network.build_pose_model("small", vgg19=None, input_norm="plain")
    batchnorm.fold_batch_norm(training, plain, "small")
    path = network.save_weights(plain, tmp_path / "weights.0001.h5")
    assert network.file_conventions(path)["input_norm"] == "plain"
    expected = np.asarray(training({"image": image, "mask": ones}, training=False)[-1])
    np.testing.assert_allclose(np.asarray(network.load_pose_model("small", path)(image)[1]),
                               expected, rtol=1e-3, atol=1e-4)
    # A folded run's state file warm-starts the plain model with conv1_1 converted.
    folded_bn = batchnorm.build_bn_training_model("small", seed=1)
    optimizer = keras.optimizers.SGD()
    optimizer.build(folded_bn.trainable_variables)
    state_path = state.save_state(tmp_path / "train_state.h5", folded_bn, optimizer,
                                  state.TrainState(signature={"input_norm": "folded"}))
    trainer.initial_weights(training, state_path)
    np.testing.assert_array_equal(training.get_layer("conv1_1").get_weights()[0] * 256,
                                  folded_bn.get_layer("conv1_1").get_weights()[0])
