"""Pose training (model/trainer.py and the modules it uses, training/train_pose.py): the
optimizer's multipliers and Caffe decay, the loss, the schedules, the recipe's defaults, resume,
the NaN stop, bad input and the mirrored strategy. Runs use a tiny configuration on a tiny HDF5
of the session's synthetic COCO."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from model import network, optim, paths, state, train_config, train_step, trainer
from model.batchnorm import BN_SUFFIX, build_bn_training_model, fold_batch_norm
from model.errors import UserError
from model.hdf5 import generate_hdf5
from model.recipes import get_recipe
from model.schedules import SCHEDULES, Schedule

REPO = Path(__file__).resolve().parent.parent
# Two stages (so stage-2 multipliers are exercised), an eighth of the channels, 64 px crops.
TINY = network.PoseConfig("tiny", num_stages=2, width=0.125, input_size=64, stage_kernel=3)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


@pytest.fixture(scope="module")
def hdf5_dir(synthetic_coco, tmp_path_factory):
    out = tmp_path_factory.mktemp("train_hdf5")
    generate_hdf5(synthetic_coco, out, workers=1)
    return out


def tiny_cfg(hdf5_dir, out_dir, **kw):
    base = dict(config=TINY, epochs=2, batch_size=4, schedule="small", seed=3,
                steps_per_epoch=3, workers=1, train_hdf5=str(hdf5_dir / "train_dataset_2014.h5"),
                val_hdf5=str(hdf5_dir / "val_dataset_2014.h5"), out_dir=str(out_dir),
                save_every=0, tensorboard=False, progress=False)
    base.update(kw)
    return train_config.TrainConfig(**base)


# ------------------------------------------------------------------------------------------
# Optimizer: multipliers and decay inside the update

def group_model():
    """One 1x1 convolution per multiplier group, named like the network's layers."""
    x = inp = keras.Input((4, 4, 2))
    for name in ("conv1_1", "conv4_4_CPM", "Mconv5_stage1_L2", "Mconv1_stage2_L1",
                 "Mconv7_stage6_L2"):
        x = keras.layers.Conv2D(2, 1, name=name, bias_initializer="ones")(x)
    return keras.Model(inp, x)


EXPECTED = {"conv1_1": (1, 2), "conv4_4_CPM": (1, 2), "Mconv5_stage1_L2": (1, 2),
            "Mconv1_stage2_L1": (4, 8), "Mconv7_stage6_L2": (4, 8)}


def one_step(kind, gradient, lr=0.01, decay=0.0, steps=1):
    keras.utils.set_random_seed(0)
    model = group_model()
    schedule = Schedule("t", kind, lr, gamma=1.0, weight_decay=decay)
    opt = optim.make_optimizer(schedule)
    variables = model.trainable_variables
    before = {v.path: v.numpy().copy() for v in variables}
    for _ in range(steps):
        opt.apply([np.full(v.shape, gradient(v.path), np.float32) for v in variables],
                  variables)
    return {v.path: (before[v.path], v.numpy()) for v in variables}


@pytest.mark.parametrize("kind", ["sgd", "adam"])
def test_each_layer_group_moves_by_its_multiplier(kind):
    moved = one_step(kind, lambda path: 1.0, lr=0.01)
    for path, (before, after) in moved.items():
        layer, which = path.split("/")
        mult = EXPECTED[layer][0 if which == "kernel" else 1]
        # SGD from zero momentum: -lr * mult * g. Adam's first step: -lr * mult * g / |g|.
        np.testing.assert_allclose(after - before, -0.01 * mult, rtol=1e-4, err_msg=path)


def test_sgd_momentum_accumulates_like_caffe():
    moved = one_step("sgd", lambda path: 1.0, lr=0.01, steps=2)
    for path, (before, after) in moved.items():
        layer, which = path.split("/")
        mult = EXPECTED[layer][0 if which == "kernel" else 1]
        # v1 = lr m g, v2 = 0.9 v1 + lr m g: w moves by lr m g (1 + 1.9).
        np.testing.assert_allclose(after - before, -0.01 * mult * 2.9, rtol=1e-4)


def test_caffe_weight_decay_on_kernels_only_not_doubled():
    # lr 1 and decay 0.01: the step is 1-4 % of w, far above float32 rounding.
    moved = one_step("sgd", lambda path: 0.0, lr=1.0, decay=0.01)
    for path, (before, after) in moved.items():
        layer, which = path.split("/")
        if which == "bias":
            np.testing.assert_array_equal(after, before)
        else:
            mult = EXPECTED[layer][0]
            # Caffe: diff += decay * w, then lr * lr_mult (Keras' l2 would give 2 * decay).
            np.testing.assert_allclose(after - before, -1.0 * mult * 0.01 * before,
                                       rtol=1e-4, atol=1e-8)


def test_network_variables_fall_in_the_published_groups():
    model = network.build_pose_model("small", training=True, seed=0)
    rules = {v.path: optim.variable_rule(v.path) for v in model.trainable_variables}
    assert len(rules) == 2 * len(network.conv_layers("small"))
    for path, (lr_mult, decay_mult) in rules.items():
        layer, which = path.split("/")
        late = layer.startswith("Mconv") and "_stage1_" not in layer
        assert lr_mult == {"kernel": 4 if late else 1, "bias": 8 if late else 2}[which], path
        assert decay_mult == (1.0 if which == "kernel" else 0.0)


# ------------------------------------------------------------------------------------------
# Loss and schedules

def test_loss_is_caffe_euclidean_over_every_output():
    rng = np.random.default_rng(0)
    names = train_step.output_names(2)
    assert names == ["stage1_L1", "stage1_L2", "stage2_L1", "stage2_L2"]
    shapes = {"L1": (3, 5, 5, 38), "L2": (3, 5, 5, 19)}
    targets = {n: rng.normal(size=shapes[n[-2:]]).astype(np.float32) for n in names}
    outputs = [rng.normal(size=shapes[n[-2:]]).astype(np.float32) for n in names]
    per = np.asarray(train_step.pose_losses(targets, outputs, names, 3))
    expected = [((o - targets[n]) ** 2).sum() / 3 / 2 for n, o in zip(names, outputs)]
    np.testing.assert_allclose(per, expected, rtol=1e-5)
    np.testing.assert_allclose(float(train_step.pose_loss(targets, outputs, names, 3)),
                               sum(expected), rtol=1e-5)


def test_published_step_schedules():
    caffe = optim.learning_rate(SCHEDULES["caffe"], 4e-5, 10, 10 ** 6)
    assert float(caffe(136105)) == pytest.approx(4e-5)
    assert float(caffe(136106)) == pytest.approx(4e-5 * 0.333)
    assert float(caffe(2 * 136106)) == pytest.approx(4e-5 * 0.333 ** 2)
    keras_s = SCHEDULES["keras"]
    # 17 epochs of 121,746 samples: 206,968 iterations at batch 10, 129,355 at batch 16.
    assert keras_s.stepsize(10, 1) == 206968 and keras_s.stepsize(16, 1) == 129355
    lr = optim.learning_rate(keras_s, 2e-5, 10, 1)
    assert float(lr(206967)) == pytest.approx(2e-5)
    assert float(lr(206968)) == pytest.approx(2e-5 * 0.333)
    small = SCHEDULES["small"]
    assert small.stepsize(10, 1000) == 700
    assert train_config.resolve_schedule("auto", "full").name == "keras"
    assert train_config.resolve_schedule("auto", "small").name == "small"
    with pytest.raises(UserError, match="unknown schedule"):
        train_config.resolve_schedule("cosine", "full")


def test_defaults_come_from_the_recipe_and_code_made_configurations_take_full_s():
    for name in ("full", "small"):
        recipe = get_recipe(name)
        assert train_config.resolve_schedule("auto", name).name == recipe.schedule
        assert train_config.resolve_batch_norm("auto", name) is recipe.batch_norm
        params = train_config.augment_params(name)
        assert params.target_dist == recipe.target_dist
        assert params.crop_size == network.get_config(name).input_size
    assert train_config.augment_params("small", 0.5).target_dist == 0.5
    assert train_config.resolve_batch_norm(True, "full") is True
    # The tests' tiny network has no recipe of its own.
    assert train_config.resolve_schedule(None, TINY).name == "keras"
    assert train_config.resolve_batch_norm("auto", TINY) is False
    assert train_config.augment_params(TINY).target_dist == 0.6
    # No ImageNet VGG19 fits a quarter of the channels: "auto" is He, "caffe" with weights.
    assert train_config.resolve_init("auto", "small", None) == "he"
    assert train_config.resolve_init("auto", "small", "w.h5") == "caffe"
    assert train_config.resolve_init("he", "full", "w.h5") == "he"
    with pytest.raises(UserError, match="unknown --init 'xavier'"):
        train_config.resolve_init("xavier", "full", None)


def test_a_state_of_another_run_is_refused_naming_each_difference():
    cfg = train_config.TrainConfig(config="small", batch_size=4, seed=1)
    schedule = SCHEDULES["small"]
    signature = state.run_signature(cfg, network.get_config("small"), schedule, True, 0.9)
    assert signature["lr"] == schedule.base_lr and signature["weight_decay"] == 5e-4
    assert signature["data"] == state.data_fingerprint(None, None)
    same = state.TrainState(signature=dict(signature))
    state.check_resume(same, signature, "s.h5")
    # A key the state does not record is not compared (states written before it existed).
    older = state.TrainState(signature={k: v for k, v in signature.items() if k != "data"})
    state.check_resume(older, signature, "s.h5")
    other = state.TrainState(signature={**signature, "batch_size": 2, "seed": 0})
    with pytest.raises(UserError, match=r"s.h5 belongs to another run: batch_size 2 \(now 4\), "
                                        r"seed 0 \(now 1\)"):
        state.check_resume(other, signature, "s.h5")


def test_the_effect_stage_is_part_of_the_signature_and_old_states_were_crop_stage():
    cfg = train_config.TrainConfig(config="small", batch_size=4, seed=1)
    schedule = SCHEDULES["small"]
    source = state.run_signature(cfg, network.get_config("small"), schedule, True, 0.9)
    crop = state.run_signature(train_config.TrainConfig(config="small", batch_size=4, seed=1,
                                                        effect_stage="crop"),
                               network.get_config("small"), schedule, True, 0.9)
    assert source["effect_stage"] == "source" and crop["effect_stage"] == "crop"
    with pytest.raises(UserError, match=r"effect_stage 'crop' \(now 'source'\)"):
        state.check_resume(state.TrainState(signature=crop), source, "s.h5")
    # A state recorded before the stage existed applied the effect to the crop.
    old = state.TrainState(signature={k: v for k, v in crop.items() if k != "effect_stage"})
    state.check_resume(old, crop, "s.h5")
    with pytest.raises(UserError, match=r"effect_stage 'crop' \(now 'source'\)"):
        state.check_resume(old, source, "s.h5")


def test_the_generalist_and_the_effect_stage_from_flags_to_the_plan(hdf5_dir, tmp_path):
    from model.domains import MIXED, TRAINED_MODELS
    from model.train_cli import build_parser, config_from_args
    parser = build_parser()
    assert parser.parse_args([]).effect_stage == "source"
    cfg = config_from_args(parser.parse_args(["--effect", MIXED, "--effect_stage", "crop"]))
    assert (cfg.effect, cfg.effect_stage) == (MIXED, "crop")
    effect_choices = next(a.choices for a in parser._actions if a.dest == "effect")
    assert list(effect_choices) == list(TRAINED_MODELS) == ["", "_dark", "_motion_blur", MIXED]
    assert paths.expert_weights_dir(MIXED) == paths.REPO_ROOT / "training" / "weights_mixed"
    plan = train_config.check_inputs(tiny_cfg(hdf5_dir, tmp_path / "o", effect=MIXED,
                                              effect_stage="crop"))
    assert plan.signature["effect"] == MIXED and plan.signature["effect_stage"] == "crop"
    assert plan.augment.effect_stage == "crop"
    assert train_config.check_inputs(tiny_cfg(hdf5_dir, tmp_path / "o")).augment.effect_stage \
        == "source"
    with pytest.raises(UserError, match="unknown --effect_stage 'after'"):
        train_config.check_inputs(tiny_cfg(hdf5_dir, tmp_path / "o", effect_stage="after"))


def test_log_csv_is_rewritten_from_the_history(tmp_path):
    row = dict.fromkeys(state.CSV_HEADER, 0)
    history = [{**row, "epoch": 1}, {**row, "epoch": 2}]
    state.write_log(tmp_path / "log.csv", history)
    # A resumed run that redid epoch 2 writes the state's history again: no duplicate row.
    state.write_log(tmp_path / "log.csv", history + [{**row, "epoch": 3}])
    lines = (tmp_path / "log.csv").read_text().splitlines()
    assert lines[0] == ",".join(state.CSV_HEADER)
    assert [line.split(",")[0] for line in lines[1:]] == ["1", "2", "3"]


def test_keras_backup_and_restore_restarts_an_interrupted_epoch_from_its_first_batch(tmp_path):
    """Why the trainer keeps its own state file: Keras' BackupAndRestore saves within an epoch
    (save_freq in batches) but resumes at the start of the interrupted epoch, so the batches
    already trained on are trained on again and the run differs from an uninterrupted one."""
    class Recorded(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.requested = []

        def __len__(self):
            return 4

        def __getitem__(self, i):
            self.requested.append(i)
            return np.full((2, 1), i, np.float32), np.zeros((2, 1), np.float32)

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                raise RuntimeError("interrupted")

    def fit(data, callbacks):
        model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse")
        model.fit(data, epochs=1, shuffle=False, verbose=0, callbacks=callbacks)

    backup = str(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(Recorded(), [keras.callbacks.BackupAndRestore(backup, save_freq=1), Interrupt()])
    # It recorded where it stopped ...
    assert json.loads((tmp_path / "backup" / "training_metadata.json").read_text()) == {
        "epoch": 0, "batch": 2}
    resumed = Recorded()
    fit(resumed, [keras.callbacks.BackupAndRestore(backup, save_freq=1)])
    # ... and trains the epoch from its first batch all the same.
    assert resumed.requested[-4:] == [0, 1, 2, 3]


# ------------------------------------------------------------------------------------------
# Runs: resume, NaN stop, bad input

def read_weights(path):
    return network.read_weight_file(path)


@pytest.mark.slow
def test_run_writes_checkpoints_and_resume_matches_uninterrupted(hdf5_dir, synthetic_coco,
                                                                 tmp_path):
    full = trainer.train(tiny_cfg(hdf5_dir, tmp_path / "a"))
    out = tmp_path / "a"
    assert [h["epoch"] for h in full["history"]] == [1, 2]
    assert [h["iteration"] for h in full["history"]] == [3, 6]
    for name in ("weights.0001.h5", "weights.0002.h5", "train_state.h5", "log.csv",
                 "run.json"):
        assert (out / name).is_file(), name
    assert (out / "log.csv").read_text().splitlines()[0].startswith("epoch,iteration,lr")
    assert json.loads((out / "run.json").read_text())["seed"] == 3
    assert not list(out.glob(".*.tmp"))

    # Stop inside epoch 1, then inside epoch 2, then finish: the same three commands.
    b = tmp_path / "b"
    part = trainer.train(tiny_cfg(hdf5_dir, b), stop_after=2)
    assert not part["complete"] and part["state"].iteration == 2
    part = trainer.train(tiny_cfg(hdf5_dir, b), stop_after=2)
    assert part["state"].epoch == 1 and part["state"].batch == 1
    done = trainer.train(tiny_cfg(hdf5_dir, b))
    assert done["complete"] and done["state"].iteration == 6
    record = state.read_state_record(b / "train_state.h5")
    assert (record.epoch, record.batch, record.iteration) == (2, 0, 6)

    wa, wb = read_weights(out / "weights.0002.h5"), read_weights(b / "weights.0002.h5")
    assert wa.keys() == wb.keys()
    for layer in wa:
        for x, y in zip(wa[layer], wb[layer]):
            np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6, err_msg=layer)
    assert [h["iteration"] for h in done["history"]] == [3, 6]
    np.testing.assert_allclose([h["val_loss"] for h in done["history"]],
                               [h["val_loss"] for h in full["history"]], rtol=1e-4)

    # A finished run is left alone; more epochs continue it; other flags are refused.
    again = trainer.train(tiny_cfg(hdf5_dir, b))
    assert again["complete"] and again["state"].iteration == 6
    more = trainer.train(tiny_cfg(hdf5_dir, b, epochs=3))
    assert [h["epoch"] for h in more["history"]] == [1, 2, 3]
    with pytest.raises(UserError, match="batch_size 4"):
        trainer.train(tiny_cfg(hdf5_dir, b, epochs=4, batch_size=2))
    # So is data rebuilt from other inputs (here: without val2014), even for a finished run,
    # which would otherwise be reported complete on data it never saw.
    other = tmp_path / "other_hdf5"
    generate_hdf5(synthetic_coco, other, workers=1, train_only=True)
    assert state.data_fingerprint(other / "train_dataset_2014.h5") != \
        state.data_fingerprint(hdf5_dir / "train_dataset_2014.h5")
    with pytest.raises(UserError, match="data '"):
        trainer.train(tiny_cfg(other, b, epochs=3))


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_state(hdf5_dir, tmp_path):
    # SGD at lr 1e9: the first step is finite, its update blows the activations up.
    cfg = tiny_cfg(hdf5_dir, tmp_path, schedule="caffe", lr=1e9, save_every=1, epochs=1,
                   steps_per_epoch=5)
    with pytest.raises(trainer.TrainingDiverged) as err:
        trainer.train(cfg)
    message = str(err.value)
    record = state.read_state_record(tmp_path / "train_state.h5")
    failed = record.iteration + 1
    assert f"at iteration {failed} " in message and "last good checkpoint" in message
    assert failed >= 2
    with h5py.File(tmp_path / "train_state.h5", "r") as f:
        assert all(np.isfinite(f["model"][k][()]).all() for k in f["model"])
    assert not (tmp_path / "weights.0001.h5").exists()


def test_bad_input_is_refused_before_training(hdf5_dir, tmp_path):
    with pytest.raises(UserError, match="training HDF5 not found"):
        train_config.check_inputs(tiny_cfg(tmp_path, tmp_path / "o"))
    with pytest.raises(UserError, match="larger than the training data"):
        train_config.check_inputs(tiny_cfg(hdf5_dir, tmp_path / "o", batch_size=10 ** 6))
    with pytest.raises(UserError, match="unknown effect"):
        train_config.check_inputs(tiny_cfg(hdf5_dir, tmp_path / "o", effect="_resolution"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="exists and is not a folder"):
        train_config.check_inputs(tiny_cfg(hdf5_dir, blocker / "sub"))
    # Weights of another configuration: the layer and both shapes are named.
    other = network.build_pose_model(network.PoseConfig("w", num_stages=2, width=0.25,
                                                         input_size=64, stage_kernel=3),
                                      vgg19=None, seed=0)
    network.save_weights(other, tmp_path / "other.h5")
    with pytest.raises(UserError, match=r"conv1_1.*\(3, 3, 3, 16\).*\(3, 3, 3, 8\)"):
        trainer.train(tiny_cfg(hdf5_dir, tmp_path / "o", weights=str(tmp_path / "other.h5")))
    assert not (tmp_path / "o" / "train_state.h5").exists()


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, str(REPO / "training" / "train_pose.py"), *args],
                          capture_output=True, text=True, env=ENV, cwd=cwd or REPO, timeout=120)


def test_cli_bad_input_one_line(tmp_path):
    r = run_cli("--effect", "_sepia")
    assert r.returncode == 2 and "invalid choice: '_sepia'" in r.stderr
    assert "'_dark'" in r.stderr and "'_motion_blur'" in r.stderr
    r = run_cli("--config", "small", "--hdf5_dir", str(tmp_path), "--out_dir",
                str(tmp_path / "w"), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"error: training HDF5 not found: {tmp_path / 'train_dataset_2014.h5'} (write it with "
        "training/generate_hdf5_coco2014.py, or pass --hdf5_dir)"]
    r = run_cli("--mixed_precision", "maybe")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "train_pose.py: error: argument --mixed_precision: expected one of false, float16, "
        "bfloat16 (true = float16), got 'maybe'")


# ------------------------------------------------------------------------------------------
# MirroredStrategy on two logical CPUs (TensorFlow must be configured before it starts)

MIRRORED = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from model import network, optim, train_step
    from model.schedules import Schedule
    cfg = network.PoseConfig("tiny", num_stages=2, width=0.125, input_size=32, stage_kernel=3)
    names = train_step.output_names(2)
    rng = np.random.default_rng(0)
    inputs = {"image": rng.uniform(0, 255, (4, 32, 32, 3)).astype(np.float32),
              "mask": (rng.random((4, 4, 4, 1)) > 0.2).astype(np.float32)}
    targets = {n: rng.random((4, 4, 4, 38 if n.endswith("L1") else 19)).astype(np.float32)
               * inputs["mask"] for n in names}
    results = {}
    mirrored = train_step.make_strategy("mirrored", ["/cpu:0", "/cpu:1"])
    for label, strategy in (("single", tf.distribute.get_strategy()), ("mirrored", mirrored)):
        with strategy.scope():
            model = network.build_pose_model(cfg, training=True, vgg19=None, seed=1)
            opt = optim.make_optimizer(Schedule("t", "sgd", 1e-3, gamma=1.0), None, 4)
            opt.build(model.trainable_variables)
        stepper = train_step.Stepper(model, opt, strategy, 4, names)
        losses = [stepper.train(inputs, targets).tolist() for _ in range(2)]
        results[label] = {"replicas": strategy.num_replicas_in_sync, "losses": losses,
                          "weights": [v.numpy().tolist() for v in model.trainable_variables],
                          "iterations": int(opt.iterations.numpy())}
    json.dump(results, sys.stdout)
""")


@pytest.mark.slow
def test_mirrored_step_matches_single_device():
    r = subprocess.run([sys.executable, "-c", MIRRORED], capture_output=True, text=True,
                       env=ENV, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res["single"]["replicas"] == 1 and res["mirrored"]["replicas"] == 2
    assert res["single"]["iterations"] == res["mirrored"]["iterations"] == 2
    # The global batch's loss, not twice it and not half of it.
    np.testing.assert_allclose(res["mirrored"]["losses"], res["single"]["losses"], rtol=1e-5)
    for a, b in zip(res["single"]["weights"], res["mirrored"]["weights"]):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-7)
    before = res["single"]["losses"]
    assert sum(before[1]) != sum(before[0])     # the step changed the weights


# ------------------------------------------------------------------------------------------
# Training-time batch normalisation folds into the plain network

def test_batch_norm_folds_into_the_plain_network():
    bn_model = build_bn_training_model(TINY, seed=0)
    rng = np.random.default_rng(1)
    for layer in bn_model.layers:
        if layer.name.endswith(BN_SUFFIX):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 0.3, n),
                               rng.normal(0, 0.2, n), rng.uniform(0.2, 3, n)])
    plain = network.build_pose_model(TINY, vgg19=None, seed=5)
    fold_batch_norm(bn_model, plain, TINY)
    assert not any(l.name.endswith(BN_SUFFIX) for l in plain.layers)
    image = rng.uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    mask = np.ones((2, 8, 8, 1), np.float32)
    want = bn_model({"image": image, "mask": mask}, training=False)[-2:]
    got = plain(image)
    for w, g in zip(want, got):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-3, atol=1e-4)
    # The BN parameters train like their convolution's kernel (gamma) and bias (beta).
    assert optim.variable_rule("Mconv3_stage2_L1_bn/gamma") == (4.0, 0.0)
    assert optim.variable_rule("Mconv3_stage2_L1_bn/beta") == (8.0, 0.0)
    assert optim.variable_rule("conv2_1_bn/gamma") == (1.0, 0.0)
    assert train_config.resolve_batch_norm("auto", "small") and not \
        train_config.resolve_batch_norm("auto", "full")


@pytest.mark.slow
def test_validation_runs_the_folded_network_and_equals_the_batch_norm_one(hdf5_dir, tmp_path):
    """validate() scores the network the weight file will hold (the batch norm folded in),
    its batches rendered ahead by the input workers: the same loss as the batch-norm network
    in inference mode on batches read one by one."""
    cfg = tiny_cfg(hdf5_dir, tmp_path, batch_norm=True, epochs=1, steps_per_epoch=2,
                   workers=2)
    t = trainer.Trainer(cfg)
    t.plan = train_config.check_inputs(cfg)
    t.set_up_devices()
    t.open_data()
    try:
        t.build()
        t.restore()
        for i, (inputs, targets) in t.stream.iterate(0, 2):    # moving statistics move
            t.train_step(i, inputs, targets)
        got = t.validate()
    finally:
        t.close()
    want, n = 0.0, 0
    for b in range(len(t.val_batches)):
        inputs, targets = t.val_batches[b]
        want = want + t.stepper.sse(inputs, targets)
        n += len(inputs["image"])
    assert n == len(t.plan.val_samples) and np.all(want > 0)
    np.testing.assert_allclose(got, want / n, rtol=1e-4)
    # What was validated is what export() writes.
    folded = t.export_model.get_layer("conv2_1").get_weights()[0]
    bn_kernel = t.training_model.get_layer("conv2_1").get_weights()[0]
    assert not np.allclose(folded, bn_kernel)


@pytest.mark.slow
def test_mixed_precision_with_batch_norm_trains_and_resumes(hdf5_dir, tmp_path):
    cfg = tiny_cfg(hdf5_dir, tmp_path, mixed_precision=True, batch_norm=True, epochs=1,
                   steps_per_epoch=2, batch_size=2)
    part = trainer.train(cfg, stop_after=1)
    with h5py.File(tmp_path / "train_state.h5", "r") as f:
        saved = {f["optimizer"][k].attrs["path"] for k in f["optimizer"]}
        assert any(p.endswith("/dynamic_scale") for p in saved)   # the loss scale is state
        assert any("_bn/" in f["model"][k].attrs["path"] for k in f["model"])
    assert part["state"].iteration == 1
    done = trainer.train(cfg)
    assert done["state"].iteration == 2 and np.isfinite(done["history"][-1]["val_loss"])
    # The saved network is the plain float32 one, BN folded away.
    weights = network.read_weight_file(tmp_path / "weights.0001.h5")
    assert not any(name.endswith(BN_SUFFIX) for name in weights)
    assert all(a.dtype == np.float32 for arrays in weights.values() for a in arrays)


# oneDNN held below the CPU's own instruction set (ONEDNN_MAX_CPU_ISA=AVX2, how BENCHMARKS.md
# measures AVX2 on an AVX-512 machine) refuses the half-precision convolutions TensorFlow picks
# from the CPU's flags ("could not create a primitive descriptor"); a CPU that lacks those
# flags is never offered them.
ONEDNN_HELD_BACK = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper() != "ALL"


@pytest.mark.skipif(ONEDNN_HELD_BACK, reason="ONEDNN_MAX_CPU_ISA refuses half-precision "
                    "convolutions that TensorFlow chose from the CPU's flags")
@pytest.mark.parametrize("precision, policy, scaled", [("float16", "mixed_float16", True),
                                                       ("bfloat16", "mixed_bfloat16", False)])
def test_one_mixed_precision_step(hdf5_dir, tmp_path, precision, policy, scaled):
    """One optimizer step of Trainer's own model and optimizer: the layers compute in the
    policy's dtype, the variables, outputs and loss are float32, only float16 scales the loss."""
    cfg = tiny_cfg(hdf5_dir, tmp_path, mixed_precision=precision, epochs=1, steps_per_epoch=1,
                   batch_size=2)
    t = trainer.Trainer(cfg)
    t.plan = train_config.check_inputs(cfg)
    assert t.plan.signature["mixed_precision"] == precision
    t.set_up_devices()
    t.open_data()
    try:
        t.build()
        t.restore()
        assert keras.mixed_precision.global_policy().name == "float32"   # restored after
        conv = t.training_model.get_layer("conv1_1")
        assert conv.dtype_policy.name == policy and conv.kernel.dtype == "float32"
        assert isinstance(t.optimizer, keras.optimizers.LossScaleOptimizer) == scaled
        before = [v.numpy().copy() for v in t.training_model.trainable_variables]
        (i, (inputs, targets)), = t.stream.iterate(0, 1)
        # float16: a step whose scaled gradients overflow is skipped and halves the loss scale
        # (2**15 at first); the same batch again until one is applied.
        for attempt in range(1, 17):
            loss = t.train_step(i, inputs, targets)
            if int(np.asarray(t.optimizer.iterations)) == 1:
                break
        outputs = t.training_model(inputs, training=False)
    finally:
        t.close()
    assert attempt == 1 or scaled
    if scaled:
        assert float(np.asarray(t.optimizer.dynamic_scale)) == 2.0 ** (16 - attempt)
    assert np.isfinite(loss) and loss > 0
    assert all(np.asarray(o).dtype == np.float32 for o in outputs)
    changed = [not np.array_equal(b, v.numpy())
               for b, v in zip(before, t.training_model.trainable_variables)]
    assert all(changed), sum(changed)


def test_mixed_precision_flag_values_and_old_states():
    resolve = train_config.resolve_mixed_precision
    assert [resolve(v) for v in (False, "false", "0", True, "true", "float16", "bfloat16")] == [
        False, False, False, "float16", "float16", "float16", "bfloat16"]
    with pytest.raises(UserError, match="unknown --mixed_precision 'float8'"):
        resolve("float8")
    # A state written when --mixed_precision true meant float16 resumes as float16 only.
    old = state.TrainState(signature={"mixed_precision": True, "seed": 0})
    state.check_resume(old, {"mixed_precision": "float16", "seed": 0}, "s.h5")
    with pytest.raises(UserError, match="mixed_precision 'float16' \\(now 'bfloat16'\\)"):
        state.check_resume(old, {"mixed_precision": "bfloat16", "seed": 0}, "s.h5")



def test_a_diverged_network_is_not_written(tmp_path):
    """Non-finite weights stop the run with one line instead of a weight file that an
    evaluation would score as a network that finds nobody."""
    from types import SimpleNamespace
    model = network.build_pose_model(network.PoseConfig("w", num_stages=1, width=0.125,
                                                        input_size=32), vgg19=None, seed=0)
    fake = SimpleNamespace(plan=SimpleNamespace(batch_norm=False), export_model=model,
                           state=SimpleNamespace(epoch=5))
    trainer.Trainer.export(fake, tmp_path / "weights.0005.h5")      # finite: written
    assert (tmp_path / "weights.0005.h5").is_file()
    kernel, bias = model.get_layer("conv1_2").get_weights()
    model.get_layer("conv1_2").set_weights([kernel, np.full_like(bias, np.nan)])
    with pytest.raises(UserError, match="training diverged: layer conv1_2 has non-finite "
                                        "weights after epoch 5"):
        trainer.Trainer.export(fake, tmp_path / "weights.0006.h5")
    assert not (tmp_path / "weights.0006.h5").exists()
