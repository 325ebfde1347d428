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
    np.testing.assert_allclose(kp_out[labelled, 0], kp_in[labelled, 0] * sx, atol=0.005)
    np.testing.assert_allclose(kp_out[labelled, 1], kp_in[labelled, 1] * sy, atol=0.005)
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
