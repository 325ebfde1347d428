"""The domains: dark, horizontal motion blur, low resolution (images and annotations)."""
import contextlib
import copy
import io

import cv2
import numpy as np
import pytest
from PIL import Image, ImageEnhance
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from model import effects
from model.skeleton import COCO_SIGMAS, PERSON_CATEGORY


def textured(h=96, w=128, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------- dark

def test_dark_halves_the_mean_exactly_like_pil_brightness():
    img = textured()
    dark = effects.darken(img)
    assert dark.dtype == np.uint8 and dark.shape == img.shape
    # truncation makes it at most half a level darker than half
    assert img.mean() / 2 - 0.5 <= dark.mean() <= img.mean() / 2
    for factor in (0.5, 0.3, 1.7):
        pil = ImageEnhance.Brightness(Image.fromarray(img)).enhance(factor)
        np.testing.assert_array_equal(effects.darken(img, factor), np.asarray(pil))
    assert effects.apply_effect(img, "_dark").tobytes() == dark.tobytes()


# ---------------------------------------------------------------------------- motion blur

def test_motion_blur_is_horizontal_only():
    img = np.zeros((80, 100, 3), np.uint8)
    img[:, 50:] = 240                       # a vertical edge at x = 50
    blurred = effects.motion_blur(img)
    row = blurred[40, :, 0].astype(int)
    # a 30 px ramp around the edge: x - 15 .. x + 14 averaged
    ramp = np.nonzero((row > 0) & (row < 240))[0]
    assert ramp.min() == 36 and ramp.max() == 64
    assert (blurred == blurred[:1]).all()   # every row the same: nothing moved vertically
    img = np.zeros((80, 100, 3), np.uint8)
    img[40:] = 240                          # a horizontal edge stays sharp
    np.testing.assert_array_equal(effects.motion_blur(img), img)


def test_motion_blur_matches_the_forks_kernel_and_exact_means():
    img = textured(seed=1)
    blurred = effects.motion_blur(img)
    fork = cv2.filter2D(img, -1, effects.motion_blur_kernel())
    assert np.abs(blurred.astype(int) - fork).max() <= 1
    assert (blurred != fork).mean() < 0.05
    padded = np.pad(img.astype(np.float64), ((0, 0), (15, 14), (0, 0)), mode="reflect")
    exact = np.stack([padded[:, x:x + 30].mean(axis=1) for x in range(img.shape[1])], axis=1)
    np.testing.assert_array_equal(blurred, np.floor(exact + 0.5))
    step = np.zeros((10, 60, 3), np.uint8)
    step[:, 30:] = 200
    ramp = np.nonzero(effects.motion_blur(step, length=10)[5, :, 0] % 200)[0]
    assert ramp.min() == 26 and ramp.max() == 34


# ---------------------------------------------------------------------------- low resolution

@pytest.mark.parametrize("h, w", [(96, 128), (75, 101)])
def test_low_resolution_halves_the_size(h, w):
    img = textured(h, w)
    small = effects.low_resolution(img)
    assert small.shape == (h // 2, w // 2, 3)
    assert effects.apply_effect(img, "_resolution").shape == small.shape
    assert abs(float(small.mean()) - float(img.mean())) < 2
    assert effects.low_resolution(img, 0.25).shape == (h // 4, w // 4, 3)
    with pytest.raises(ValueError, match="unknown effect"):
        effects.apply_effect(img, "_fog")


def person_ann(ann_id, image_id, x, y, w, h, rng, crowd=False, width=201, height=151):
    if crowd:
        m = np.zeros((height, width), np.uint8)
        m[int(y):int(y + h), int(x):int(x + w)] = 1
        rle = mask_utils.encode(np.asfortranarray(m))
        return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 1,
                "bbox": [x, y, w, h], "area": float(m.sum()), "num_keypoints": 0,
                "keypoints": [0] * 51,
                "segmentation": {"size": [height, width], "counts": rle["counts"].decode()}}
    kp = np.zeros((17, 3))
    kp[:, 0] = rng.uniform(x, x + w, 17).round(2)
    kp[:, 1] = rng.uniform(y, y + h, 17).round(2)
    kp[:, 2] = rng.choice([0, 1, 2], 17, p=[0.2, 0.3, 0.5])
    kp[kp[:, 2] == 0, :2] = 0
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "bbox": [x, y, w, h], "area": w * h * 0.6, "num_keypoints": int((kp[:, 2] > 0).sum()),
            "keypoints": [float(v) if k % 3 < 2 else int(v) for k, v in enumerate(kp.ravel())],
            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}


def make_gt(anns, images):
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns, "categories": [PERSON_CATEGORY]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def evaluate(gt, results):
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def test_scale_annotation_fields():
    rng = np.random.default_rng(0)
    ann = person_ann(1, 1, 20.5, 30.25, 100, 80, rng)
    crowd = person_ann(2, 1, 10, 10, 60, 40, rng, crowd=True)
    w, h = 201, 151
    nw, nh = effects.low_resolution_size(w, h)
    sx, sy = nw / w, nh / h
    out = effects.scale_annotation(ann, sx, sy, nh, nw)
    kp_in, kp_out = np.reshape(ann["keypoints"], (17, 3)), np.reshape(out["keypoints"], (17, 3))
    labelled = kp_in[:, 2] > 0
    np.testing.assert_allclose(kp_out[labelled, 0], (kp_in[labelled, 0] + 0.5) * sx - 0.5,
                               atol=0.005)
    np.testing.assert_allclose(kp_out[labelled, 1], (kp_in[labelled, 1] + 0.5) * sy - 0.5,
                               atol=0.005)
    assert (kp_out[~labelled] == 0).all()
    assert all(isinstance(v, int) for v in out["keypoints"][2::3])
    np.testing.assert_allclose(out["bbox"], [20.5 * sx, 30.25 * sy, 100 * sx, 80 * sy])
    assert out["area"] == pytest.approx(ann["area"] * sx * sy)
    np.testing.assert_allclose(out["segmentation"][0][:2], [20.5 * sx, 30.25 * sy])
    assert ann["bbox"] == [20.5, 30.25, 100, 80]          # the input is not modified
    small = effects.scale_annotation(crowd, sx, sy, nh, nw)
    assert small["segmentation"]["size"] == [nh, nw]
    area = mask_utils.area(small["segmentation"])
    assert area == pytest.approx(crowd["area"] * sx * sy, rel=0.06)
    with pytest.raises(ValueError, match="new image size"):
        effects.scale_annotation(crowd, sx, sy)


def _blob(hw, x, y, sigma=3.0):
    """A bright Gaussian dot centred on the pixel-centre coordinates (x, y)."""
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]]
    return 250.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))


def _centroid(values):
    """Intensity-weighted (x, y) of an image, pixel i at coordinate i."""
    yy, xx = np.mgrid[0:values.shape[0], 0:values.shape[1]]
    return (xx * values).sum() / values.sum(), (yy * values).sum() / values.sum()


@pytest.mark.parametrize("h, w", [(80, 100), (81, 101)])
def test_scaled_keypoint_lands_on_the_resized_dot(h, w):
    """A dot at a known keypoint, resized by low_resolution: the scaled keypoint is the dot's
    centre in the small image, (x + 0.5) s - 0.5 (x s would be 0.25 px off at s = 1/2)."""
    x, y = 40.3, 27.8
    image = np.repeat(_blob((h, w), x, y)[..., None], 3, axis=2).astype(np.uint8)
    small = effects.low_resolution(image)
    nh, nw = small.shape[:2]
    ann = {"keypoints": [x, y, 2] + [0, 0, 0] * 16, "bbox": [30.0, 20.0, 20.0, 15.0],
           "area": 300.0}
    out = effects.scale_annotation(ann, nw / w, nh / h, nh, nw)
    cx, cy = _centroid(small[..., 0].astype(np.float64))
    assert out["keypoints"][:2] == pytest.approx([cx, cy], abs=0.03)
    assert abs(x * nw / w - cx) > 0.2                # the old rule misses the dot
    assert out["keypoints"][3:] == [0, 0, 0] * 16    # unlabelled keypoints stay at (0, 0)


def _box_coverage(hw, box):
    """The exact fraction of each pixel [i, i + 1] x [j, j + 1] that box (x, y, w, h) covers."""
    x0, y0, bw, bh = box
    cx = np.clip(np.minimum(np.arange(hw[1]) + 1, x0 + bw) - np.maximum(np.arange(hw[1]), x0),
                 0, 1)
    cy = np.clip(np.minimum(np.arange(hw[0]) + 1, y0 + bh) - np.maximum(np.arange(hw[0]), y0),
                 0, 1)
    return np.outer(cy, cx).astype(np.float32)


def test_scaled_box_covers_the_resized_region():
    """bbox and polygons are in pycocotools' continuous coordinates (pixel i spans [i, i + 1]:
    a polygon from 0.7 to 10.7 rasterises to pixels 1..10), where the resize is X s: the
    region a box covers, resized with the image, is the region the scaled box covers."""
    square = [[0.7, 0.7, 10.7, 0.7, 10.7, 10.7, 0.7, 10.7]]
    rle = mask_utils.merge(mask_utils.frPyObjects(square, 20, 20))
    ys, xs = np.nonzero(mask_utils.decode(rle))
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (1, 10, 1, 10)
    h, w = 80, 100
    box = [30.6, 21.2, 23.0, 17.4]
    small = effects.low_resolution(_box_coverage((h, w), box))   # 2 x 2 means at s = 1/2
    nh, nw = small.shape
    x0, y0, bw, bh = box
    poly = [x0, y0, x0 + bw, y0, x0 + bw, y0 + bh, x0, y0 + bh]
    out = effects.scale_annotation({"bbox": box, "area": bw * bh, "segmentation": [poly]},
                                   nw / w, nh / h, nh, nw)
    np.testing.assert_allclose(small, _box_coverage((nh, nw), out["bbox"]), atol=1e-5)
    # keypoints' pixel-centre rule applied to the box edges would be a quarter pixel off
    shifted = [(x0 + 0.5) * nw / w - 0.5, (y0 + 0.5) * nh / h - 0.5] + out["bbox"][2:]
    assert np.abs(small - _box_coverage((nh, nw), shifted)).max() > 0.2
    sx, sy, sw, sh = out["bbox"]
    assert out["segmentation"][0] == pytest.approx([sx, sy, sx + sw, sy, sx + sw, sy + sh,
                                                    sx, sy + sh])
    assert out["area"] == pytest.approx(small.sum(), rel=1e-4)


def test_low_resolution_annotations_keep_cocoeval_of_gt_against_itself_at_ap_1():
    rng = np.random.default_rng(3)
    w, h = 201, 151
    nw, nh = effects.low_resolution_size(w, h)
    anns, images = [], []
    for image_id in (1, 2, 3):
        images.append({"id": image_id, "width": w, "height": h})
        for k in range(3):
            anns.append(person_ann(10 * image_id + k, image_id, 5 + 60 * k, 10 + 5 * k,
                                   55, 120, rng))
        anns.append(person_ann(10 * image_id + 9, image_id, 150, 100, 40, 40, rng, crowd=True))
    small_images = [dict(im, width=nw, height=nh) for im in images]
    small = [effects.scale_annotation(a, nw / w, nh / h, nh, nw) for a in anns]
    gt = make_gt(copy.deepcopy(small), small_images)
    results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"],
                "score": 1.0} for a in small if not a["iscrowd"]]
    ev = evaluate(gt, results)
    assert ev.stats[0] == pytest.approx(1.0)
    # the OKS uses the scaled area: predictions 1 px off give the expected similarity
    shifted = [dict(r, keypoints=[v + 1.0 if k % 3 == 0 else v
                                  for k, v in enumerate(r["keypoints"])]) for r in results]
    ev = evaluate(gt, shifted)
    for (image_id, _), oks in ev.ious.items():
        # expected from the full-size annotation: the area shrinks with the image
        gts = [a for a in anns if a["image_id"] == image_id and not a["iscrowd"]]
        for g, row in zip(gts, np.asarray(oks).T):
            vis = np.reshape(g["keypoints"], (17, 3))[:, 2] > 0
            var = (2 * COCO_SIGMAS) ** 2
            area = g["area"] * (nw / w) * (nh / h)
            expected = np.exp(-1.0 / var / (area + np.spacing(1)) / 2)[vis].mean()
            assert row.max() == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------- gamma correction

def test_gamma_of_a_uniform_image_is_the_closed_form():
    # A grey image of level v reaches the target t exactly at g = ln t / ln(v / 255).
    for level, target in ((64, 0.46), (30, 0.46), (100, 0.6)):
        image = np.full((5, 7, 3), level, np.uint8)
        corrected, gamma = effects.gamma_correct(image, target)
        assert gamma == pytest.approx(np.log(target) / np.log(level / 255), abs=1e-5)
        assert (corrected == round(255 * target)).all() and corrected.dtype == np.uint8
    assert effects.gamma_correct(np.full((2, 2, 3), 64, np.uint8))[0][0, 0, 0] == 117  # 0.46


def test_gamma_only_brightens_and_is_bounded():
    bright = textured()                             # mean luminance about 0.5
    assert effects.mean_luminance(bright) > effects.GAMMA_TARGET
    corrected, gamma = effects.gamma_correct(bright)
    assert gamma == 1.0 and np.array_equal(corrected, bright) and corrected is not bright
    # Level 1 would need gamma 0.14 to reach 0.46: the bound 0.25 maps it to 255 / 255^0.25.
    corrected, gamma = effects.gamma_correct(np.ones((3, 3, 3), np.uint8))
    assert gamma == effects.GAMMA_MIN and (corrected == round(255 * (1 / 255) ** 0.25)).all()
    black = np.zeros((3, 3, 3), np.uint8)
    corrected, gamma = effects.gamma_correct(black)
    assert gamma == effects.GAMMA_MIN and not corrected.any()
    assert effects.brightening_gamma(np.zeros((0, 0, 3), np.uint8)) == 1.0


def test_gamma_brings_a_darkened_image_to_the_target_luminance():
    image = textured(seed=2)
    dark = effects.darken(image)
    before = dark.copy()
    corrected, gamma = effects.gamma_correct(dark)
    assert np.array_equal(dark, before)             # pure: the input is left alone
    assert 0.25 < gamma < 1
    # the rule's own mean (before rounding to levels) meets the target to 1e-6; the
    # corrected pixels' luminance, rounded to integer levels, to half a level
    assert effects.mean_luminance(corrected) == pytest.approx(effects.GAMMA_TARGET,
                                                              abs=0.5 / 255)
    gray = cv2.cvtColor(corrected, cv2.COLOR_BGR2GRAY).mean() / 255
    assert gray == pytest.approx(effects.GAMMA_TARGET, abs=1 / 255)
    # the same gamma on every channel: the levels' order is kept in each
    lut = np.rint(255 * (np.arange(256) / 255) ** gamma).astype(np.uint8)
    np.testing.assert_array_equal(corrected, lut[dark])
    np.testing.assert_array_equal(effects.apply_gamma(dark, gamma), corrected)


def test_gamma_target_is_the_mean_luminance_of_normal_training_images(synthetic_coco):
    """The documented target: normal synthetic training images average about 0.46."""
    folder = synthetic_coco / "images" / "train2014"
    means = [effects.mean_luminance(cv2.imread(str(p))) for p in sorted(folder.iterdir())]
    assert len(means) == 24
    assert np.mean(means) == pytest.approx(effects.GAMMA_TARGET, abs=0.03)
