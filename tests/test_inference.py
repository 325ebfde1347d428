"""The pieces of model.inference's pipelined run over a set: the network inputs of an image,
the image reader's reasons, the size order of the batches, per-image model weights."""
import importlib.util
import json

import cv2
import numpy as np
import pytest

from test_decode import standing

from model import backends, inference, network, paths, predict_set, targets
from model.skeleton import FLIP_CMU, LIMBS, NUM_HEATMAPS, NUM_PAFS, PERSON_CATEGORY


class RecordingNetwork:
    """A stand-in for the Keras test model: all-zero maps of the right shape, and a record of
    every batch shape it was given."""

    def __init__(self):
        self.batches = []

    def __call__(self, batch, training=False):
        batch = np.asarray(batch)
        self.batches.append(batch.shape)
        b, h, w = batch.shape[:3]
        return (np.zeros((b, h // 8, w // 8, NUM_PAFS), np.float32),
                np.zeros((b, h // 8, w // 8, NUM_HEATMAPS), np.float32))


def write_images(folder, sizes):
    """COCO image dicts for JPEGs of the given (height, width), ids 1, 2, ..."""
    rng = np.random.default_rng(0)
    images = []
    for i, (h, w) in enumerate(sizes, 1):
        name = f"im{i}.jpg"
        cv2.imwrite(str(folder / name), rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        images.append({"id": i, "file_name": name, "height": h, "width": w})
    return images


def test_network_inputs_cover_every_scale_and_flip():
    image = np.random.default_rng(1).integers(0, 255, (30, 41, 3), dtype=np.uint8)
    settings = inference.InferenceSettings(scale_search=(1.0, 0.5), flip=True)
    inputs = inference.network_inputs(image, settings)
    assert [(s, f) for s, f, _ in inputs] == [(1.0, False), (1.0, True), (0.5, False),
                                              (0.5, True)]
    assert [x.shape for _, _, x in inputs] == [(32, 48, 3)] * 2 + [(16, 24, 3)] * 2
    assert all(x.dtype == np.float32 for _, _, x in inputs)
    np.testing.assert_array_equal(inputs[0][2][:30, :41], image)
    np.testing.assert_array_equal(inputs[1][2][:30, :41], image[:, ::-1])
    assert (inputs[0][2][30:] == inference.PAD_VALUE).all()
    np.testing.assert_array_equal(
        inputs[3][2], inference.prepare_input(np.ascontiguousarray(image[:, ::-1]), 0.5)[0])


def test_reading_names_the_file_and_the_problem(tmp_path):
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    cv2.imwrite(str(tmp_path / "good.png"), np.full((5, 7, 3), 9, np.uint8))
    assert predict_set.read_image_or_reason(tmp_path / "none.jpg") == \
        (None, f"missing file: {tmp_path / 'none.jpg'}")
    assert predict_set.read_image_or_reason(tmp_path / "bad.jpg") == \
        (None, f"corrupt or truncated image: {tmp_path / 'bad.jpg'}")
    image, reason = predict_set.read_image_or_reason(tmp_path / "good.png")
    assert reason is None and image.shape == (5, 7, 3) and (image == 9).all()


def test_batches_hold_one_input_size_largest_first(tmp_path):
    images = write_images(tmp_path, [(24, 40), (48, 32), (24, 40), (48, 32), (48, 32)])
    net = RecordingNetwork()
    records, info = predict_set.predict_dataset(net, images, tmp_path, batch_size=2,
                                              progress=False)
    assert records == [] and info["image_ids"] == [1, 2, 3, 4, 5] and info["skipped"] == []
    assert net.batches == [(2, 48, 32, 3), (1, 48, 32, 3), (2, 24, 40, 3)]


def test_a_model_without_weight_on_a_batch_does_not_run(tmp_path):
    images = write_images(tmp_path, [(16, 16), (16, 16), (16, 16)])
    images.append({"id": 9, "file_name": "missing.jpg"})
    normal, dark = RecordingNetwork(), RecordingNetwork()
    # Image 2 needs the dark model only; images 1 and 3 the normal one.
    records, info = predict_set.predict_dataset(
        [normal, dark], images, tmp_path, weights=lambda i: [0.0, 1.0] if i == 2 else [1.0, 0.0],
        batch_size=1, progress=False)
    assert info["image_ids"] == [1, 2, 3]
    assert [i for i, _ in info["skipped"]] == [9] and "missing file" in info["skipped"][0][1]
    assert len(normal.batches) == 2 and len(dark.batches) == 1
    with pytest.raises(ValueError, match="one non-negative weight per model"):
        predict_set.predict_dataset([normal, dark], images[:1], tmp_path, weights=[1.0],
                                  progress=False)


# ------------------------------------------------------------------------------ PAF grids

def smooth_pafs(people, grid_hw, origin, stride=8, sigma=6.0):
    """(h, w, 38) PAFs of `people` whose cell (i, j) describes input pixel (stride j + origin,
    stride i + origin): the unit vector of each labelled limb times a Gaussian (sigma input
    pixels) of the distance to its segment, so that any grid samples the same smooth field."""
    ys, xs = np.mgrid[0:grid_hw[0], 0:grid_hw[1]] * float(stride) + float(origin)
    out = np.zeros(tuple(grid_hw) + (NUM_PAFS,), np.float32)
    for person in people:
        for k, (a, b) in enumerate(LIMBS):
            if person[a, 2] <= 0 or person[b, 2] <= 0:
                continue
            pa, d = person[a, :2], person[b, :2] - person[a, :2]
            t = np.clip(((xs - pa[0]) * d[0] + (ys - pa[1]) * d[1]) / (d @ d), 0.0, 1.0)
            dist2 = (xs - pa[0] - t * d[0]) ** 2 + (ys - pa[1] - t * d[1]) ** 2
            g = np.exp(-dist2 / (2 * sigma ** 2))
            unit = d / np.linalg.norm(d)
            out[..., 2 * k] += g * unit[0]
            out[..., 2 * k + 1] += g * unit[1]
    return out


HW = (120, 160)                  # multiples of 8: the network grid is 15 x 20
GRID = (HW[0] // 8, HW[1] // 8)


def scene():
    """Two standing people and the field they make, sampled at every image pixel."""
    people = standing([(50, 25), (115, 30)], 80)
    return people, smooth_pafs(people, HW, origin=0.0, stride=1)


def mirrored(people):
    out = people.copy()[:, FLIP_CMU]
    out[..., 0] = HW[1] - 1 - out[..., 0]
    return out


@pytest.mark.parametrize("resolution", [1, 2])
def test_cmu_paf_grid_is_read_at_the_right_pixels(resolution):
    """PAFs sampled on the targets' grid (cell j at 8j + 3.5) and on CMU's (8j), each read
    with its origin, give the field at the right image pixels (up to the resampling's own
    error, the same for both), mirrored inputs included; CMU's read as if it were on the
    targets' grid is 3.5 px off."""
    people, _ = scene()
    (hw, ww), (py, px) = inference.working_grid(HW, resolution)
    assert py == px
    # The field at the working pixels' image coordinates, (u + 0.5) * px - 0.5.
    expected = smooth_pafs(people, (hw, ww), origin=0.5 * px - 0.5, stride=px)

    def error(maps, origin=None, flipped=False):
        grid = inference.GridPafs(HW, resolution)
        grid.add(maps, 1.0, flipped, 1.0, origin=origin)
        return np.abs(grid.dense() - expected)[2:-2, 2:-2].mean()

    ours = error(smooth_pafs(people, GRID, network.TARGETS_PAF_ORIGIN))
    cmu = error(smooth_pafs(people, GRID, network.CMU_PAF_ORIGIN), network.CMU_PAF_ORIGIN)
    cmu_flipped = error(smooth_pafs(mirrored(people), GRID, 0.0), 0.0, flipped=True)
    wrong = error(smooth_pafs(people, GRID, network.CMU_PAF_ORIGIN))
    assert ours < 0.005
    assert cmu < 1.1 * ours and cmu_flipped < 1.1 * ours
    assert wrong > 3 * ours


class FixedNetwork:
    """A network that returns fixed maps for any input of the image's padded size, with the
    PAF grid `paf_origin` (or none, i.e. the targets' grid)."""

    def __init__(self, heat, paf, paf_origin=None):
        self.heat, self.paf = heat, paf
        if paf_origin is not None:
            self.paf_origin = paf_origin

    def __call__(self, batch, training=False):
        assert np.asarray(batch).shape[1:3] == (8 * self.heat.shape[0], 8 * self.heat.shape[1])
        return self.paf[None], self.heat[None]


@pytest.mark.parametrize("resolution", [1, 2])
def test_cmu_grid_pafs_decode_to_the_same_people(resolution):
    """The same people decoded from maps on either grid, through run_network's tag and the
    accumulator: same keypoints (the heatmaps are the same) at the people's joints, limb
    scores within 6 % (each grid's own resampling error: 1-5 %); CMU's maps taken for the
    targets' grid lose 14-19 % of their limb scores."""
    people, _ = scene()
    heat = targets.make_heatmaps(people, GRID, stride=8)
    image = np.zeros(HW + (3,), np.uint8)
    settings = inference.InferenceSettings(resolution=resolution)
    cmu_maps = smooth_pafs(people, GRID, network.CMU_PAF_ORIGIN)
    runs = {name: inference.predict_people(net, image, settings) for name, net in (
        ("ours", FixedNetwork(heat, smooth_pafs(people, GRID, network.TARGETS_PAF_ORIGIN))),
        ("cmu", FixedNetwork(heat, cmu_maps, network.CMU_PAF_ORIGIN)),
        ("wrong", FixedNetwork(heat, cmu_maps)))}
    assert [len(p) for p in runs.values()] == [2, 2, 2]
    for run in runs.values():
        run.sort(key=lambda p: p["keypoints"][1, 0])   # by the neck's x
    for ours, cmu, wrong in zip(*runs.values()):
        np.testing.assert_array_equal(cmu["keypoints"], ours["keypoints"])
        gt = min(people, key=lambda p: np.abs(p[:, :2] - ours["keypoints"][:, :2]).sum())
        assert np.abs(ours["keypoints"][:, :2] - gt[:, :2]).max() < 1.0
        parts = ours["keypoints"][:, 2].sum()          # the score is parts + limbs
        limbs_ours, limbs_cmu = ours["score"] - parts, cmu["score"] - parts
        assert limbs_cmu == pytest.approx(limbs_ours, rel=0.06)
        assert wrong["score"] - parts < 0.88 * limbs_ours


def test_models_and_run_network_carry_the_paf_grid(tmp_path):
    """Weight files and ONNX metadata give the model its grid; run_network tags the PAFs."""
    model = network.build_pose_model("small", vgg19=None, seed=0)
    assert inference.paf_origin(model) == network.TARGETS_PAF_ORIGIN
    model.paf_origin = network.CMU_PAF_ORIGIN
    path = network.save_weights(model, tmp_path / "weights.0001.h5")
    loaded = backends.load_model(backends.TENSORFLOW, "small", path)
    assert loaded.paf_origin == network.CMU_PAF_ORIGIN
    paf, heat = inference.run_network(loaded, np.zeros((2, 16, 24, 3), np.float32))
    assert isinstance(paf, inference.NetworkPafs) and paf[1].origin == network.CMU_PAF_ORIGIN
    assert not isinstance(heat, inference.NetworkPafs)
    assert inference.run_network(RecordingNetwork(), np.zeros((1, 8, 8, 3)))[0].origin == 3.5
    from model import export
    onnx_path = tmp_path / "weights.0001.onnx"
    export.export_onnx("small", path, onnx_path)
    assert export.read_metadata(onnx_path)["paf_origin"] == "0.0"
    onnx_model = backends.load_model("onnxruntime", "small", onnx_path)
    assert inference.paf_origin(onnx_model) == network.CMU_PAF_ORIGIN


# ------------------------------------------------------------------ the resolution benchmark

def load_benchmark():
    spec = importlib.util.spec_from_file_location(
        "bench_resolution", paths.REPO_ROOT / "benchmarks" / "bench_resolution.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resolution_benchmark_reports_both_grids_on_an_output_root(tmp_path, capsys):
    """benchmarks/bench_resolution.py on run_experiment.py's --output_root layout (weights and
    COCO found under it) with a tiny random network: one row per set, AP at r = 1 and r = 2."""
    root, data_type = tmp_path / "out", "val2014_random1k"
    image_dir = paths.image_dir(root / "COCO", data_type)
    image_dir.mkdir(parents=True)
    images = write_images(image_dir, [(64, 80), (72, 56)])
    keypoints = [20.0, 20.0, 2] * 17
    anns = [{"id": k, "image_id": im["id"], "category_id": 1, "iscrowd": 0, "area": 900.0,
             "bbox": [5, 5, 30, 30], "num_keypoints": 17, "keypoints": keypoints}
            for k, im in enumerate(images, 1)]
    annotations = paths.annotation_file(root / "COCO", data_type)
    annotations.parent.mkdir(parents=True)
    annotations.write_text(json.dumps({"images": images, "annotations": anns,
                                       "categories": [PERSON_CATEGORY]}))
    network.save_weights(network.build_pose_model("small", vgg19=None, seed=0),
                         root / "weights" / "weights.0003.h5")
    bench = load_benchmark()
    bench.main(["--output_root", str(root), "--config", "small", "--coco_dataType", data_type,
                "--num_images", "2", "--out", str(tmp_path / "table.md")])
    out = capsys.readouterr().out
    assert "weights.0003.h5" in out and "PAF origin 3.5" in out
    head, rule, row = out.strip().splitlines()[-3:]
    assert head.split(" | ")[:4] == ["| set", "images", "AP r=1", "AP r=2"]
    cells = row.strip("| ").split(" | ")
    assert cells[:2] == [data_type, "2"] and len(cells) == 7
    assert all(0.0 <= float(c) <= 1.0 for c in cells[2:4])
    assert (tmp_path / "table.md").read_text().endswith(row + "\n")
    with pytest.raises(SystemExit):
        bench.main(["--output_root", str(root), "--config", "small", "--resolutions", "2", "2"])
