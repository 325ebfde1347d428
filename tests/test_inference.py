"""The pieces of model.inference's pipelined run over a set: the network inputs of an image,
the image reader's reasons, the size order of the batches, per-image model weights."""
import cv2
import numpy as np
import pytest

from model import inference
from model.skeleton import NUM_HEATMAPS, NUM_PAFS


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
    assert inference.read_image_or_reason(tmp_path / "none.jpg") == \
        (None, f"missing file {tmp_path / 'none.jpg'}")
    assert inference.read_image_or_reason(tmp_path / "bad.jpg") == \
        (None, f"unreadable image {tmp_path / 'bad.jpg'}")
    image, reason = inference.read_image_or_reason(tmp_path / "good.png")
    assert reason is None and image.shape == (5, 7, 3) and (image == 9).all()


def test_batches_hold_one_input_size_largest_first(tmp_path):
    images = write_images(tmp_path, [(24, 40), (48, 32), (24, 40), (48, 32), (48, 32)])
    net = RecordingNetwork()
    records, info = inference.predict_dataset(net, images, tmp_path, batch_size=2,
                                              progress=False)
    assert records == [] and info["image_ids"] == [1, 2, 3, 4, 5] and info["skipped"] == []
    assert net.batches == [(2, 48, 32, 3), (1, 48, 32, 3), (2, 24, 40, 3)]


def test_a_model_without_weight_on_a_batch_does_not_run(tmp_path):
    images = write_images(tmp_path, [(16, 16), (16, 16), (16, 16)])
    images.append({"id": 9, "file_name": "missing.jpg"})
    normal, dark = RecordingNetwork(), RecordingNetwork()
    # Image 2 needs the dark model only; images 1 and 3 the normal one.
    records, info = inference.predict_dataset(
        [normal, dark], images, tmp_path, weights=lambda i: [0.0, 1.0] if i == 2 else [1.0, 0.0],
        batch_size=1, progress=False)
    assert info["image_ids"] == [1, 2, 3]
    assert [i for i, _ in info["skipped"]] == [9] and "missing file" in info["skipped"][0][1]
    assert len(normal.batches) == 2 and len(dark.batches) == 1
    with pytest.raises(ValueError, match="one non-negative weight per model"):
        inference.predict_dataset([normal, dark], images[:1], tmp_path, weights=[1.0],
                                  progress=False)
