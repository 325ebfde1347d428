"""Keras input pipeline on in-memory samples (the HDF5 reader's Sample type) and on a tiny
HDF5 written by the project's writer."""
import collections
import concurrent.futures
import dataclasses
import json
import pickle
import shutil
import subprocess
import sys

import cv2
import keras
import numpy as np
import pytest

from model.augment import (AugmentParams, augment, crop_transform, random_transform,
                           transform_scale, warp_image, warp_mask)
from model.coco import BOX_SIZE, SampleMeta, image_samples, load_coco_annotations
from model.domains import EXPERT_EFFECTS, MIXED
from model.effects import BLUR_LENGTH, PIXEL_EFFECTS
from model.errors import UserError
from model.hdf5 import Hdf5Samples, Sample, _ImageJob, generate_hdf5, write_hdf5
from model.inference import InferenceSettings
from model.masks import generate_masks
from model.paths import REPO_ROOT, annotation_file
from model.pipeline import BatchStream, PoseBatches, grid_mask, measure_throughput
from model.recipes import RECIPES
from model.skeleton import NUM_PARTS
from model.targets import make_targets
from model.train_config import augment_params

TEMPLATE = np.array([
    (0, -.42), (0, -.3), (-.1, -.3), (-.13, -.15), (-.14, 0), (.1, -.3), (.13, -.15), (.14, 0),
    (-.06, .05), (-.07, .27), (-.07, .48), (.06, .05), (.07, .27), (.07, .48),
    (-.02, -.44), (.02, -.44), (-.04, -.43), (.04, -.43)])
SMALL = AugmentParams(crop_size=96)


def make_samples(n=7, seed=0, ignore_region=True):
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(n):
        h, w = int(rng.integers(120, 200)), int(rng.integers(140, 240))
        image = cv2.GaussianBlur(rng.integers(40, 255, (h, w, 3), dtype=np.uint8), (0, 0), 2)
        mask = np.full((h, w), 255, np.uint8)
        if ignore_region and i % 2 == 0:
            mask[:, : w // 2 - 13] = 0     # left of the main person: inside every crop
        people = []
        for p in range(1 + i % 3):
            height = rng.uniform(50, 110)
            centre = (w / 2, h / 2) if p == 0 else rng.uniform((20, 20), (w - 20, h - 20))
            j = np.zeros((NUM_PARTS, 3), np.float32)
            j[:, :2] = centre + TEMPLATE * height
            j[:, 2] = rng.integers(0, 3, NUM_PARTS)
            people.append(j)
            if p == 0:
                objpos, scale = np.array(centre, np.float32), height / 368
        samples.append(Sample(image, mask, np.stack(people), objpos, scale, 1000 + i))
    return samples


def batches(samples, **kw):
    kw.setdefault("params", SMALL)
    return PoseBatches(samples, kw.pop("batch_size", 3), **kw)


def assert_batches_equal(a, b):
    (ia, ta), (ib, tb) = a, b
    for key in ("image", "mask"):
        np.testing.assert_array_equal(ia[key], ib[key])
    assert ta.keys() == tb.keys()
    for key in ta:
        np.testing.assert_array_equal(ta[key], tb[key])


@pytest.mark.parametrize("num_stages", [2, 6])
def test_batch_shapes_dtypes_and_target_keys(num_stages):
    data = batches(make_samples(7), num_stages=num_stages)
    assert len(data) == 3
    inputs, targets = data[0]
    assert set(inputs) == {"image", "mask"}
    assert inputs["image"].shape == (3, 96, 96, 3) and inputs["image"].dtype == np.float32
    assert inputs["mask"].shape == (3, 12, 12, 1) and inputs["mask"].dtype == np.float32
    assert 0 <= inputs["mask"].min() and inputs["mask"].max() <= 1
    assert 0 <= inputs["image"].min() and inputs["image"].max() <= 255
    expected = {f"stage{k}_{b}" for k in range(1, num_stages + 1) for b in ("L1", "L2")}
    assert set(targets) == expected
    for k in range(1, num_stages + 1):
        assert targets[f"stage{k}_L1"].shape == (3, 12, 12, 38)
        assert targets[f"stage{k}_L2"].shape == (3, 12, 12, 19)
        assert targets[f"stage{k}_L1"].dtype == np.float32
    assert data[2][0]["image"].shape[0] == 1          # 7 = 3 + 3 + 1
    with pytest.raises(IndexError):
        data[3]


def test_full_size_crop_gives_46x46_maps():
    inputs, targets = PoseBatches(make_samples(2), 2, num_stages=1)[0]
    assert inputs["image"].shape == (2, 368, 368, 3) and inputs["mask"].shape == (2, 46, 46, 1)
    assert targets["stage1_L1"].shape == (2, 46, 46, 38)


def test_targets_are_the_encoder_output_times_the_mask():
    data = batches(make_samples(4), shuffle=False, batch_size=4)
    inputs, targets = data[0]
    for k in range(4):
        item = data.sample(k)
        expected = make_targets(item["joints"], (12, 12)) * item["mask"][..., None]
        np.testing.assert_allclose(targets["stage1_L1"][k], expected[..., :38], atol=1e-6)
        np.testing.assert_allclose(targets["stage3_L2"][k], expected[..., 38:], atol=1e-6)
        np.testing.assert_array_equal(inputs["mask"][k, ..., 0], item["mask"])


def test_pipeline_crops_are_the_augment_modules_crops():
    samples = make_samples(4)
    data = batches(samples, seed=9, shuffle=False)
    data.set_epoch(3)
    for i in range(4):
        item = data.sample(i)
        image, mask, joints = augment(samples[i], np.random.default_rng([9, 3, i]), SMALL)
        np.testing.assert_array_equal(item["image"], image)
        np.testing.assert_array_equal(item["joints"], joints)
        area = cv2.resize(mask, (12, 12), interpolation=cv2.INTER_AREA) / 255.0
        np.testing.assert_allclose(item["mask"], area, atol=1e-6)


def test_grid_mask_is_the_block_mean_and_the_all_compute_shortcut_agrees():
    M = crop_transform((60, 50), 0.9, 17.0, (3, -4), True, crop_size=96)
    full = np.full((100, 120), 255, np.uint8)
    assert (grid_mask(full, M, SMALL, 8) == 1).all()
    np.testing.assert_array_equal(warp_mask(full, M, SMALL), 255)   # what it skips
    half = full.copy()
    half[:, :61] = 0
    got = grid_mask(half, M, SMALL, 8)
    crop = warp_mask(half, M, SMALL).astype(np.float64) / 255
    # block means, rounded to the uint8 steps of the resized mask
    np.testing.assert_allclose(got, crop.reshape(12, 8, 12, 8).mean(axis=(1, 3)),
                               atol=0.5 / 255 + 1e-6)


def test_targets_are_zero_where_the_mask_is_zero():
    samples = [s._replace(mask_miss=np.zeros_like(s.mask_miss)) for s in make_samples(3)]
    # scale so the whole crop lies inside the image: the mask is 0 everywhere in the crop
    params = AugmentParams(crop_size=96, scale_min=1.0, scale_max=1.0, max_rotate=0,
                           center_perturb=0, target_dist=2.0)
    inputs, targets = PoseBatches(samples, 3, params=params, num_stages=2)[0]
    assert inputs["mask"].max() == 0
    assert all(np.count_nonzero(t) == 0 for t in targets.values())
    # a partly ignored image: zero exactly where the grid mask is zero, fractions at edges
    data = batches(make_samples(6), augment=False, shuffle=False, batch_size=6)
    inputs, targets = data[0]
    mask = inputs["mask"][..., 0]
    assert (mask == 0).any() and ((mask > 0) & (mask < 1)).any()
    background = targets["stage1_L2"][..., 18]
    np.testing.assert_array_equal(background == 0, mask == 0)   # background = 1 - max > 0
    assert np.count_nonzero(targets["stage2_L1"][mask == 0]) == 0


def test_same_seed_same_batches_in_any_order_threads_or_pickled():
    samples = make_samples(9)
    a = batches(samples, seed=3)
    b = batches(samples, seed=3)
    reference = [a[i] for i in range(len(a))]
    for i in (2, 0, 1):
        assert_batches_equal(b[i], reference[i])
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        got = list(pool.map(lambda i: b[i], [2, 1, 0, 2]))
    for i, batch in zip([2, 1, 0, 2], got):
        assert_batches_equal(batch, reference[i])
    # worker processes receive a pickled copy of the dataset
    clone = pickle.loads(pickle.dumps(b))
    assert_batches_equal(clone[1], reference[1])
    other = batches(samples, seed=4)
    assert not np.array_equal(other[0][0]["image"], reference[0][0]["image"])


def test_epochs_reshuffle_reaugment_and_can_be_replayed():
    data = batches(make_samples(9), seed=1)
    first_order, first = data.order.copy(), data[0]
    data.on_epoch_begin()          # Keras: before the first epoch's batches
    assert data.epoch == 0
    data.on_epoch_end()
    data.on_epoch_begin()          # the second epoch
    assert data.epoch == 1
    assert sorted(data.order) == list(range(9)) and not np.array_equal(data.order, first_order)
    assert not np.array_equal(data[0][0]["image"], first[0]["image"])
    data.set_epoch(0)
    assert_batches_equal(data[0], first)
    unshuffled = batches(make_samples(9), shuffle=False)
    unshuffled.set_epoch(5)
    assert unshuffled.order.tolist() == list(range(9))


def test_without_augmentation_the_crop_is_fixed_and_centred():
    data = batches(make_samples(3), augment=False, shuffle=False)
    a = data[0]
    data.set_epoch(1)
    assert_batches_equal(data[0], a)
    item = data.sample(0)
    assert not item["flip"]
    np.testing.assert_allclose(item["M"] @ np.r_[data.samples[0].objpos, 1], [47.5, 47.5])


def test_crop_stage_applies_effects_to_the_augmented_crop():
    samples = make_samples(6)
    normal = batches(samples, batch_size=6)[0][0]["image"]
    crop_stage = dataclasses.replace(SMALL, effect_stage="crop")
    dark = batches(samples, batch_size=6, effect="_dark", params=crop_stage)[0][0]["image"]
    assert dark.mean() / normal.mean() == pytest.approx(0.5, abs=0.01)
    np.testing.assert_allclose(dark, np.floor(normal * 0.5), atol=1)
    blur = batches(samples, batch_size=6, effect="_motion_blur",
                   params=crop_stage)[0][0]["image"]
    dx = lambda im: np.abs(np.diff(im, axis=2)).mean()
    dy = lambda im: np.abs(np.diff(im, axis=1)).mean()
    assert dx(blur) < 0.5 * dx(normal)          # horizontal detail gone...
    assert dy(blur) > 0.2 * dy(normal)          # ...much more than vertical detail


@pytest.mark.parametrize("effect", ["_dark", "_motion_blur"])
def test_source_stage_applies_the_evaluations_effect_to_the_source_before_the_warp(effect):
    samples = make_samples(4)
    data = batches(samples, effect=effect, seed=4)          # effect_stage "source": default
    for i in range(4):
        item = data.sample(i)
        source = PIXEL_EFFECTS[effect](samples[i].image)    # what the evaluation sets hold
        np.testing.assert_array_equal(item["image"], warp_image(source, item["M"], SMALL))
        assert item["effect"] == effect
    # the grey border is not an image pixel: it stays the test-time padding value
    far = crop_transform((-500, -500), 1.0, crop_size=96)
    assert (data.crop_image(samples[0], far, effect) == 128).all()


def step_edge_sample(edge_x=300.5, size=(480, 640), objpos=(300.0, 240.0), scale=1.0):
    """Black left of x = edge_x, white right of it; joints of one person around objpos."""
    image = np.zeros(size + (3,), np.uint8)
    image[:, int(np.ceil(edge_x)):] = 255
    joints = np.zeros((1, NUM_PARTS, 3), np.float32)
    joints[0, :, :2] = np.asarray(objpos) + TEMPLATE * 200
    joints[0, :, 2] = 2
    return Sample(image, np.full(size, 255, np.uint8), joints, np.array(objpos, np.float32),
                  scale, 1)


def ramp(row):
    """(position of the 50 % crossing, 25 %-75 % distance) of a rising edge in a row."""
    v = (row.astype(np.float64) - row.min()) / (row.max() - row.min())
    x = lambda level: np.interp(level, v, np.arange(len(v)))    # v is nondecreasing here
    return x(0.5), x(0.75) - x(0.25)


def write_images_hdf5(path, samples):
    """The project's writer on hand-made samples (JPEG quality 100, no ignored region)."""
    jobs = []
    for k, s in enumerate(samples):
        image_path = path.parent / f"image{k}.jpg"
        cv2.imwrite(str(image_path), s.image, [cv2.IMWRITE_JPEG_QUALITY, 100])
        h, w = s.image.shape[:2]
        meta = SampleMeta(s.objpos, s.scale_provided, s.joints)
        jobs.append(_ImageJob(k + 1, "train2014", image_path, path.parent / "none.png", h, w,
                              [], [meta]))
    write_hdf5(path, jobs, workers=1)
    return path


@pytest.mark.parametrize("stage", ["source", "crop"])
def test_blur_length_in_the_crop_is_the_images_30_px_scaled_at_the_source_stage(stage,
                                                                              tmp_path):
    """A 30 px box blur turns a step edge into a 30 px linear ramp (25 %-75 %: 15 px). At the
    source stage the crop shows it 30 x scale(M) long, whatever the decode's reduction; at
    the crop stage 30 px. The edge stays where M puts it (reduced decoding is aligned)."""
    params = AugmentParams(crop_size=96, max_rotate=0, center_perturb=0, flip_prob=0,
                           scale_min=1, scale_max=1, effect_stage=stage)
    # crop scale target_dist * 96 / 368 / scale_provided: 0.8, 0.4, 0.2 -> decoded at 1, 2, 4
    scales = (0.8, 0.4, 0.2)
    edges = [step_edge_sample(scale=0.6 * 96 / 368 / s) for s in scales]
    h5 = write_images_hdf5(tmp_path / "edges.h5", edges)
    for data in (batches(edges, effect="_motion_blur", params=params),
                 PoseBatches(h5, 1, effect="_motion_blur", params=params)):
        reductions = []
        for i, s in enumerate(scales):
            item = data.sample(i)
            centre, width = ramp(item["image"][48, :, 1])
            expected = BLUR_LENGTH / 2 * (s if stage == "source" else 1)
            assert width == pytest.approx(expected, rel=0.08), (i, s)
            # the ramp's middle: the edge at x = 300.5 moved by half a pixel of the blurred
            # image (the window of column x is centred on x - 0.5)
            edge = (item["M"] @ [300.5, 240.0, 1])[0] + 0.5 * (s if stage == "source" else 1)
            # at the crop stage the warp samples the hard edge unfiltered: within half a
            # crop pixel; the plain 15 px box of a 1/2 decode is centred 0.2 px off at s 0.4
            assert centre == pytest.approx(edge, abs=0.25 if stage == "source" else 0.5)
            reductions.append(data.read(i, 0)[0].reduction)
        assert reductions == ([1, 2, 4] if isinstance(data.samples, Hdf5Samples) else [1] * 3)


def test_training_blur_matches_the_evaluation_blur_at_each_configurations_scale(
        synthetic_coco):
    """The 30 px blur as the network sees it, in training over the augmentation of the
    synthetic train2014's main people (4 epochs: 30 x scale(M) at the source stage, 30 at the
    crop stage) and at test on the synthetic val2014's main people at the evaluation scale
    of the configuration's recipe (full: native 1.0; small: boxsize, 1.5 x 184 / image
    height): medians, in network-input pixels and per pixel of person height.

    small: the source stage matches within 20 % in pixels (crop stage: 1.8x too long).
    full: the native evaluation shows synthetic people about 1.4x larger than training
    does; the source-stage blur follows the person (per person height it matches within
    20 %, as for small), so in pixels it is 0.7x the test blur, as the person is; 30 px on
    the crop matches in pixels only, 1.4x too long for the person it blurs."""
    train = load_coco_annotations(annotation_file(synthetic_coco, "train2014"))
    val = load_coco_annotations(annotation_file(synthetic_coco, "val2014"))
    metas = [m for i in train.image_ids for m in image_samples(train.anns[i])]
    tests = np.array([(val.image(i)["height"], m.scale_provided * BOX_SIZE)
                      for i in val.image_ids for m in image_samples(val.anns[i])])
    assert len(metas) > 40 and len(tests) > 20
    height = np.tile([m.scale_provided * BOX_SIZE for m in metas], 4)
    got = {}
    for name, recipe in RECIPES.items():
        params = augment_params(name)
        scale = np.array([transform_scale(random_transform(
            np.random.default_rng([0, e, i]), m.objpos, m.scale_provided, params)[0])
            for e in range(4) for i, m in enumerate(metas)])
        settings = InferenceSettings(recipe.eval_scale_search, recipe.eval_scale_mode,
                                     recipe.network.input_size)
        test_scale = np.array([settings.scales(h)[0] for h in tests[:, 0]])
        test_px = np.median(BLUR_LENGTH * test_scale)
        test_rel = np.median(BLUR_LENGTH / tests[:, 1])        # scale-free at test
        got[name] = {
            "source_px": np.median(BLUR_LENGTH * scale) / test_px,
            "crop_px": BLUR_LENGTH / test_px,
            "source_rel": np.median(BLUR_LENGTH * scale / (scale * height)) / test_rel,
            "crop_rel": np.median(BLUR_LENGTH / (scale * height)) / test_rel,
            "person": np.median(scale * height) / np.median(test_scale * tests[:, 1])}
    small, full = got["small"], got["full"]
    assert abs(small["source_px"] - 1) < 0.2 and small["crop_px"] > 1.5, got
    assert abs(small["source_rel"] - 1) < 0.2 and small["crop_rel"] > 1.5, got
    assert abs(full["source_rel"] - 1) < 0.2 and full["crop_rel"] > 1.25, got
    assert full["crop_px"] == 1 and 0.6 < full["person"] < 0.8, got
    assert full["source_px"] == pytest.approx(full["person"], rel=0.1), got


def test_generalist_effect_is_seeded_balanced_and_the_same_on_a_rerun():
    samples = make_samples(6)
    data = batches(samples, effect=MIXED, seed=7)
    sequence = [data.sample_effect(i, e) for e in range(500) for i in range(6)]
    counts = collections.Counter(sequence)
    assert set(counts) == set(EXPERT_EFFECTS)
    assert all(abs(n / len(sequence) - 1 / 3) < 0.03 for n in counts.values()), counts
    rerun = batches(samples, effect=MIXED, seed=7)
    assert [rerun.sample_effect(i, e) for e in range(500) for i in range(6)] == sequence
    other = batches(samples, effect=MIXED, seed=8)
    assert [other.sample_effect(i, e) for e in range(500) for i in range(6)] != sequence
    # each sample gets exactly its effect and its expert's crop (the same augmentation)
    for i in range(6):
        item = data.sample(i, epoch=3)
        assert item["effect"] == data.sample_effect(i, 3)
        expert = batches(samples, effect=item["effect"], seed=7).sample(i, epoch=3)
        np.testing.assert_array_equal(item["image"], expert["image"])
    with pytest.raises(UserError, match="unknown training effect"):
        batches(samples, effect="_resolution")


def test_measure_throughput_reports_every_stage_and_restores_opencv_threads():
    threads = cv2.getNumThreads()
    r = measure_throughput(make_samples(5), effect="_dark", batch_size=2, params=SMALL)
    assert r["samples"] == 5 and r["effect"] == "_dark" and r["crop_size"] == 96
    assert set(r["stage_cpu_ms_per_sample"]) == {"read_decode", "warp_image", "effect", "mask",
                                                "targets"}
    assert r["samples_per_cpu_s"] > 0 and r["samples_per_s"] > 0
    assert r["effect_stage"] == "source" and r["decode_reductions"] == {"1": 1.0}
    assert cv2.getNumThreads() == threads


def test_bad_arguments_are_one_line_errors():
    samples = make_samples(2)
    with pytest.raises(UserError, match="unknown training effect"):
        batches(samples, effect="_resolution")
    with pytest.raises(UserError):
        batches(samples, batch_size=0)
    with pytest.raises(UserError):
        batches([], batch_size=2)
    with pytest.raises(UserError, match="multiple of stride"):
        batches(samples, params=AugmentParams(crop_size=100))


class RecordingBatches(PoseBatches):
    def __getitem__(self, batch_index):
        self.calls.append((self.epoch, batch_index))
        return super().__getitem__(batch_index)


def test_keras_fit_accepts_the_batches_and_counts_epochs_with_worker_threads():
    image = keras.Input((96, 96, 3), name="image")
    mask = keras.Input((12, 12, 1), name="mask")
    x = keras.layers.AveragePooling2D(8)(keras.layers.Rescaling(1 / 256, offset=-0.5)(image))
    outputs = []
    for k in (1, 2):
        for branch, channels in (("L1", 38), ("L2", 19)):
            y = keras.layers.Conv2D(channels, 1)(x)
            outputs.append(keras.layers.Multiply(name=f"stage{k}_{branch}")([y, mask]))
    model = keras.Model({"image": image, "mask": mask}, outputs)
    model.compile("sgd", loss={f"stage{k}_{b}": "mse" for k in (1, 2) for b in ("L1", "L2")})
    data = RecordingBatches(make_samples(6), 3, num_stages=2, params=SMALL, workers=2)
    data.calls = []
    history = model.fit(data, epochs=3, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 3 and np.isfinite(history.history["loss"]).all()
    # after Keras' probe of the first batches, every epoch's batches come from that epoch
    trained = data.calls[-6:]
    assert sorted(trained) == [(e, i) for e in range(3) for i in range(2)]
    assert data.epoch == 2


# ----------------------------------------------------------------------------- the run's stream

def test_stream_batch_i_is_batch_i_mod_p_of_pass_i_div_p_whatever_the_workers():
    samples = make_samples(7)                       # batch 3: two full batches per pass
    reference = batches(samples, seed=5)
    expected = {}
    for data_pass in range(3):
        reference.set_epoch(data_pass)
        for index in range(2):
            expected[2 * data_pass + index] = reference[index]
    for workers in (0, 2):
        stream = BatchStream(batches(samples, seed=5), workers)
        try:
            assert stream.per_pass == 2             # the partial third batch is never used
            got = dict(stream.iterate(0, 6))
            assert sorted(got) == list(range(6))
            for i, batch in got.items():
                assert_batches_equal(batch, expected[i])
            # A resumed run starts mid-pass and continues the same stream.
            for i, batch in stream.iterate(3, 6):
                assert_batches_equal(batch, expected[i])
        finally:
            stream.close()


def test_stream_refuses_a_batch_larger_than_the_data():
    with pytest.raises(UserError, match="batch size 8 is larger than the data"):
        BatchStream(batches(make_samples(7), batch_size=8))


# ----------------------------------------------------------------------------- on a real HDF5

@pytest.fixture(scope="module")
def tiny_hdf5(synthetic_coco, tmp_path_factory):
    """The session's synthetic mini-COCO through the project's mask and HDF5 writers."""
    root = tmp_path_factory.mktemp("pipeline_coco") / "coco"
    shutil.copytree(synthetic_coco, root)
    generate_masks(root, workers=1)
    generate_hdf5(root, root.parent, workers=1)
    return root.parent / "train_dataset_2014.h5"


def test_hdf5_batches_match_in_memory_samples_and_worker_processes(tiny_hdf5):
    with Hdf5Samples(tiny_hdf5) as ds:
        in_memory = [ds[i] for i in range(len(ds))]
    # decoded at full size as the in-memory samples are (reduced decoding: tested below)
    exact = PoseBatches(tiny_hdf5, 4, num_stages=1, params=SMALL, seed=2, reduced_decode=False)
    assert len(exact) == -(-len(in_memory) // 4) and len(in_memory) >= 8
    assert_batches_equal(batches(in_memory, batch_size=4, num_stages=1, seed=2)[1], exact[1])
    exact.close()
    from_path = PoseBatches(tiny_hdf5, 4, num_stages=1, params=SMALL, seed=2)
    assert any(m.min() < 255 for m in (s.mask_miss for s in in_memory))  # masks do ignore
    # Keras' worker processes (fork) get their own file handles and the same batches
    image = keras.Input((96, 96, 3), name="image")
    mask = keras.Input((12, 12, 1), name="mask")
    x = keras.layers.AveragePooling2D(8)(keras.layers.Rescaling(1 / 256, offset=-0.5)(image))
    outputs = [keras.layers.Multiply(name=f"stage1_{b}")([keras.layers.Conv2D(c, 1)(x), mask])
               for b, c in (("L1", 38), ("L2", 19))]
    model = keras.Model({"image": image, "mask": mask}, outputs)
    model.compile("sgd", loss={"stage1_L1": "mse", "stage1_L2": "mse"})
    parallel = PoseBatches(tiny_hdf5, 4, num_stages=1, params=SMALL, seed=2, workers=2,
                           use_multiprocessing=True)
    history = model.fit(parallel, epochs=1, shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    parallel.set_epoch(0)          # fit() ran epoch 0; predict() should see it again
    predicted = model.predict(parallel, verbose=0)
    expected = model.predict(from_path, verbose=0)
    np.testing.assert_allclose(predicted[0], expected[0], rtol=1e-5, atol=1e-6)
    from_path.close()


@pytest.mark.parametrize("effect", ["", "_motion_blur"])
def test_reduced_decoding_keeps_the_targets_and_the_crop_of_a_full_size_decode(tiny_hdf5,
                                                                             effect):
    """Targets, masks and joints are those of a full-size decode exactly (they never see the
    decoded pixels). The crops differ by the decoder's block averaging: under 8 levels of
    255 mean absolute difference per sample (measured up to 5.7 at 96 px, where most samples
    decode at 1/4 or 1/8), and the reduced crops are nearer than the full-size decode's
    unfiltered warp to an anti-aliased crop (Gaussian sigma 0.5 / scale before the warp): on
    average, and each within a quarter level of it (an image the blur already smoothed
    leaves little to alias)."""
    reduced = PoseBatches(tiny_hdf5, 4, effect=effect, num_stages=1, params=SMALL, seed=2)
    full = PoseBatches(tiny_hdf5, 4, effect=effect, num_stages=1, params=SMALL, seed=2,
                       reduced_decode=False)
    used = collections.Counter(reduced.read(i, 0)[0].reduction
                               for i in range(len(reduced.samples)))
    assert {2, 4, 8} <= set(used), used
    for b in range(len(reduced)):
        (a_in, a_out), (b_in, b_out) = reduced[b], full[b]
        np.testing.assert_array_equal(a_in["mask"], b_in["mask"])
        for key in a_out:
            np.testing.assert_array_equal(a_out[key], b_out[key])
    errors = []
    for i in range(len(reduced.samples)):
        a, b = reduced.sample(i), full.sample(i)
        source, M = full.read(i, 0)[0], b["M"]
        assert source.reduction == 1
        np.testing.assert_array_equal(a["joints"], b["joints"])
        smooth = cv2.GaussianBlur(PIXEL_EFFECTS[effect](source.image), (0, 0),
                                  0.5 / transform_scale(M))
        anti_aliased = warp_image(smooth, M, SMALL).astype(np.float64)
        error = lambda crop: np.abs(crop - anti_aliased).mean()
        assert np.abs(a["image"].astype(np.float64) - b["image"]).mean() < 8
        errors.append((error(a["image"]), error(b["image"])))
        assert errors[-1][0] < errors[-1][1] + 0.25, (i, errors[-1])
    mean_reduced, mean_full = np.mean(errors, axis=0)
    assert mean_reduced < mean_full, (mean_reduced, mean_full)
    reduced.close()
    full.close()


def test_inspect_dataset_cli(tiny_hdf5, tmp_path):
    script = REPO_ROOT / "training" / "inspect_dataset.py"
    out = tmp_path / "inspect"
    run = subprocess.run([sys.executable, str(script), "--hdf5", str(tiny_hdf5), "--num", "3",
                          "--effect", "_dark", "--out", str(out), "--seed", "5",
                          "--crop_size", "96"], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    info = json.loads((out / "inspect.json").read_text())
    assert info["seed"] == 5 and info["effect"] == "_dark" and len(info["samples"]) == 3
    for entry in info["samples"]:
        picture = cv2.imread(str(out / entry["file"]))
        assert picture.shape == (96, 4 * 96, 3)
    bad = subprocess.run([sys.executable, str(script), "--hdf5", str(tmp_path / "none.h5"),
                          "--out", str(out)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("error:")
    assert "Traceback" not in bad.stderr
    assert "none.h5" in bad.stderr
