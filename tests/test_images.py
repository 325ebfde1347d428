"""The one image reader: the same pixels as before everywhere, odd files, bad files."""
import io

import cv2
import numpy as np
import pytest
from PIL import Image

from model import images, paths


def smooth_image(h, w, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def write_jpeg(path, bgr, quality=95):
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def test_synthetic_jpegs_decode_as_before(synthetic_coco):
    """The reader gives what evaluation and the classifier read (cv2.imread IMREAD_COLOR)
    and what the HDF5 step decoded (cv2.imdecode with IMREAD_COLOR | IGNORE_ORIENTATION)."""
    folder = paths.image_dir(synthetic_coco, "val2014")
    files = sorted(folder.glob("*.jpg"))[:5]
    assert len(files) == 5
    for path in files:
        new = images.read_image(path)
        checked, reason = images.read_image_checked(path)
        as_imread = cv2.imread(str(path), cv2.IMREAD_COLOR)
        as_hdf5 = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8),
                               cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
        assert reason is None
        assert new.dtype == np.uint8 and new.ndim == 3 and new.shape[2] == 3
        for other in (checked, as_imread, as_hdf5, images.decode_image(path.read_bytes())):
            assert np.array_equal(new, other)


def test_grayscale_png_becomes_three_equal_channels(tmp_path):
    gray = smooth_image(40, 30, 1)[:, :, 0]
    path = tmp_path / "gray.png"
    Image.fromarray(gray, "L").save(path)
    image, reason = images.read_image_checked(path, (30, 40))
    assert reason is None and image.shape == (40, 30, 3) and image.dtype == np.uint8
    for c in range(3):
        assert np.array_equal(image[:, :, c], gray)


def test_rgba_png_drops_alpha_and_keeps_colour(tmp_path):
    rgb = smooth_image(24, 32, 2)[:, :, ::-1]
    alpha = np.full((24, 32, 1), 7, np.uint8)      # nearly transparent: still the same colours
    path = tmp_path / "rgba.png"
    Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA").save(path)
    image, reason = images.read_image_checked(path, (32, 24))
    assert reason is None and image.shape == (24, 32, 3)
    assert np.array_equal(image, rgb[:, :, ::-1])


def test_16_bit_png_keeps_the_high_byte(tmp_path):
    high = smooth_image(20, 20, 3)[:, :, 0]
    value = high.astype(np.uint16) * 257            # 0..65535, high byte == the 8-bit value
    path = tmp_path / "deep.png"
    assert cv2.imwrite(str(path), value)
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    image, reason = images.read_image_checked(path, (20, 20))
    assert reason is None and image.dtype == np.uint8 and image.shape == (20, 20, 3)
    assert np.array_equal(image[:, :, 1], high)


def test_cmyk_jpeg_becomes_bgr(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (255, 0, 0)     # red left half, green right half
    rgb[:, 8:] = (0, 255, 0)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb, "RGB").convert("CMYK").save(path, quality=100)
    with Image.open(path) as im:
        assert im.mode == "CMYK"
    image, reason = images.read_image_checked(path, (16, 16))
    assert reason is None and image.shape == (16, 16, 3) and image.dtype == np.uint8
    left, right = image[4:12, 1:6].mean(axis=(0, 1)), image[4:12, 10:15].mean(axis=(0, 1))
    assert left[2] > 200 and left[:2].max() < 60       # red in BGR
    assert right[1] > 200 and right[[0, 2]].max() < 60  # green in BGR


def test_exif_rotation_is_ignored(tmp_path):
    """A file tagged 'rotate 90' comes back in its stored grid, as the annotations describe."""
    stored = smooth_image(20, 40, 4)                 # 40 wide, 20 high as stored
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6                                  # Orientation: rotate 90 CW to view
    Image.fromarray(stored[:, :, ::-1], "RGB").save(path, quality=95, exif=exif)
    assert cv2.imread(str(path), cv2.IMREAD_COLOR).shape[:2] == (40, 20)   # OpenCV rotates
    image, reason = images.read_image_checked(path, (40, 20))
    assert reason is None and image.shape == (20, 40, 3)
    grid = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert np.array_equal(image, grid)
    assert np.array_equal(images.read_image(path), grid)


def test_truncated_jpeg_is_reported(tmp_path):
    path = write_jpeg(tmp_path / "whole.jpg", smooth_image(64, 64, 5))
    data = path.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[:len(data) // 2])
    assert images.read_image_checked(cut) == (None, "corrupt or truncated image")
    problem = images.inspect_image(cut.read_bytes(), 64, 64)[0]
    assert problem.startswith("corrupt or truncated image")
    assert images.inspect_image(data, 64, 64) == (None, "JPEG", "RGB")


def test_size_mismatch_missing_and_unreadable(tmp_path):
    path = write_jpeg(tmp_path / "a.jpg", smooth_image(30, 50, 6))
    assert images.read_image_checked(path, (50, 30))[1] is None
    assert images.read_image_checked(path, (49, 30)) == (
        None, "image size 50x30 differs from the annotation (49x30)")
    assert images.inspect_image(path.read_bytes(), 50, 31)[0] == (
        "image size 50x30 differs from the annotation (50x31)")
    assert images.read_image_checked(tmp_path / "none.jpg") == (None, "missing file")
    assert images.read_image(tmp_path / "none.jpg") is None
    assert images.read_image_checked(tmp_path) == (None, "unreadable image")
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    assert images.read_image_checked(junk) == (None, "corrupt or truncated image")
    assert images.decode_image(b"not an image at all") is None


def test_hdf5_check_takes_jpeg_and_png_only(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(smooth_image(16, 16, 7), "RGB").save(buf, format="BMP")
    assert images.inspect_image(buf.getvalue(), 16, 16)[0] == "unsupported image format BMP"
    path = tmp_path / "b.bmp"
    path.write_bytes(buf.getvalue())
    image, reason = images.read_image_checked(path, (16, 16))
    assert reason is None and image.shape == (16, 16, 3)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_png_formats_noted(tmp_path, mode):
    buf = io.BytesIO()
    Image.new(mode, (16, 24)).save(buf, format="PNG")
    assert images.inspect_image(buf.getvalue(), 16, 24) == (None, "PNG", mode)
