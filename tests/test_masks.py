"""Masks of docs/recipe.md section 4 on hand-made annotations: crowds, unlabelled people."""
import collections
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from model import paths
from model.images import png_size
from model.masks import generate_masks, make_masks

H, W = 40, 60


def rect_poly(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


def person(x0, y0, x1, y1, num_keypoints=6, **extra):
    ann = {"iscrowd": False, "bbox": (x0, y0, x1 - x0, y1 - y0), "area": (x1 - x0) * (y1 - y0),
           "num_keypoints": num_keypoints, "segmentation": rect_poly(x0, y0, x1, y1)}
    ann.update(extra)
    return ann


def crowd(x0, y0, x1, y1, compressed=True):
    m = np.zeros((H, W), np.uint8)
    m[y0:y1, x0:x1] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    if compressed:
        seg = {"size": [H, W], "counts": rle["counts"].decode("ascii")}
    else:  # COCO's uncompressed form: run lengths in column-major order
        flat = m.ravel(order="F")
        runs, value, n = [], 0, 0
        for v in flat:
            if v != value:
                runs.append(n)
                value, n = v, 0
            n += 1
        runs.append(n)
        seg = {"size": [H, W], "counts": runs}
    return {"iscrowd": True, "bbox": (x0, y0, x1 - x0, y1 - y0), "area": float(m.sum()),
            "num_keypoints": 0, "segmentation": seg}


def box(x0, y0, x1, y1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def expected_masks(people, unlabelled, crowds):
    ignore = unlabelled | (crowds & ~people)
    return (np.where(ignore, 0, 255).astype(np.uint8),
            np.where(people | crowds, 255, 0).astype(np.uint8))


def test_crowds_united_unlabelled_ignored_labelled_people_kept_inside_crowd():
    # polygons with integer corners: pycocotools fills the pixels [x0, x1) x [y0, y1)
    a = person(2, 2, 20, 30)                      # labelled
    b = person(40, 5, 50, 15, num_keypoints=0)    # unlabelled: ignored
    c1 = crowd(10, 20, 35, 38)                    # overlaps a: the overlap keeps the loss
    c2 = crowd(52, 25, 60, 40, compressed=False)  # a second crowd region, uncompressed RLE
    notes = collections.Counter()
    mask_miss, mask_all = make_masks([c1, a, b, c2], H, W, notes)
    people = box(2, 2, 20, 30) | box(40, 5, 50, 15)
    crowds = box(10, 20, 35, 38) | box(52, 25, 60, 40)
    exp_miss, exp_all = expected_masks(people, box(40, 5, 50, 15), crowds)
    np.testing.assert_array_equal(mask_miss, exp_miss)
    np.testing.assert_array_equal(mask_all, exp_all)
    assert mask_miss[25, 15] == 255 and mask_miss[25, 30] == 0   # crowd over a / crowd alone
    assert mask_miss[30, 55] == 0 and mask_miss[10, 45] == 0     # second crowd / unlabelled
    assert mask_miss[5, 30] == 255 and mask_all[5, 30] == 0      # background
    assert not notes


def test_annotation_order_does_not_matter():
    anns = [person(2, 2, 20, 30), crowd(10, 20, 35, 38), person(30, 25, 45, 39)]
    first = make_masks(anns, H, W)
    # the reference subtracts only people listed before the crowd; here all of them count
    last = make_masks(anns[::-1], H, W)
    np.testing.assert_array_equal(first[0], last[0])
    assert first[0][30, 40] == 255   # crowd pixel covered by the person listed after it


def test_image_without_people_and_bad_segmentation_fallback():
    miss, full = make_masks([], H, W)
    assert (miss == 255).all() and (full == 0).all()
    notes = collections.Counter()
    broken = person(5, 5, 15, 25, num_keypoints=0, segmentation=[[1, 2, 3]])   # no polygon
    wrong_size = crowd(30, 5, 40, 10)
    wrong_size["segmentation"]["size"] = [H + 1, W]
    miss, full = make_masks([broken, wrong_size], H, W, notes)
    exp_miss, exp_all = expected_masks(box(5, 5, 15, 25), box(5, 5, 15, 25), box(30, 5, 40, 10))
    np.testing.assert_array_equal(miss, exp_miss)
    np.testing.assert_array_equal(full, exp_all)
    assert notes["segmentation unusable: bbox used for the mask"] == 2


def write_annotations(root, source, images, anns):
    path = paths.annotation_file(root, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": []}))


def raw_person(ann_id, image_id, x0, y0, x1, y1, num_keypoints):
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
            "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0),
            "num_keypoints": num_keypoints, "keypoints": [0] * 51,
            "segmentation": rect_poly(x0, y0, x1, y1)}


@pytest.fixture
def mask_root(tmp_path):
    images = [{"id": i, "width": W, "height": H, "file_name": f"x{i}.jpg"} for i in (1, 2, 3)]
    anns = [raw_person(10, 1, 2, 2, 20, 30, 0), raw_person(11, 2, 5, 5, 25, 25, 3)]
    write_annotations(tmp_path, "val2014", images, anns)
    return tmp_path


def test_generate_masks_files_and_rerun_skips_complete(mask_root):
    report = generate_masks(mask_root, ["val2014"], workers=1)
    assert report["val2014"]["written"] == 3
    folder = mask_root / "valmask2014"
    miss = cv2.imread(str(folder / "mask_miss_000000000001.png"), cv2.IMREAD_UNCHANGED)
    full = cv2.imread(str(folder / "mask_all_000000000001.png"), cv2.IMREAD_UNCHANGED)
    assert miss.dtype == np.uint8 and miss.shape == (H, W)
    np.testing.assert_array_equal(miss, np.where(box(2, 2, 20, 30), 0, 255))
    np.testing.assert_array_equal(full, np.where(box(2, 2, 20, 30), 255, 0))
    labelled = cv2.imread(str(folder / "mask_miss_000000000002.png"), cv2.IMREAD_UNCHANGED)
    assert (labelled == 255).all()
    # a rerun writes only what is missing (a file whose pair is incomplete)
    (folder / "mask_miss_000000000003.png").unlink()
    before = (folder / "mask_all_000000000001.png").stat().st_mtime_ns
    report = generate_masks(mask_root, ["val2014"], workers=1)
    assert report["val2014"]["written"] == 1 and report["val2014"]["existing"] == 2
    assert (folder / "mask_all_000000000001.png").stat().st_mtime_ns == before
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"mask_{k}_{i:012d}.png" for k in ("miss", "all") for i in (1, 2, 3))
    # overwrite rewrites every pair (the annotations may have changed under them)
    cv2.imwrite(str(folder / "mask_all_000000000001.png"), np.zeros((H, W), np.uint8))
    report = generate_masks(mask_root, ["val2014"], workers=1, overwrite=True)
    assert report["val2014"]["written"] == 3 and report["val2014"]["existing"] == 0
    np.testing.assert_array_equal(
        cv2.imread(str(folder / "mask_all_000000000001.png"), cv2.IMREAD_UNCHANGED),
        np.where(box(2, 2, 20, 30), 255, 0))


def test_rerun_redoes_damaged_mask_files_and_counts_them(mask_root):
    """A finished pair is trusted only when both files are complete PNGs of the image's
    size: a truncated, an empty and a wrong-size file are each written again, counted."""
    generate_masks(mask_root, ["val2014"], workers=1)
    folder = mask_root / "valmask2014"
    good = (folder / "mask_all_000000000001.png").read_bytes()
    (folder / "mask_all_000000000001.png").write_bytes(good[:len(good) // 2])
    (folder / "mask_miss_000000000002.png").write_bytes(b"")
    cv2.imwrite(str(folder / "mask_miss_000000000003.png"), np.zeros((H + 1, W), np.uint8))
    report = generate_masks(mask_root, ["val2014"], workers=1)["val2014"]
    assert report["written"] == 3 and report["existing"] == 0
    assert report["redone"] == {"truncated or not a PNG": 2, "of another size than the image": 1}
    for i in (1, 2, 3):
        for kind in ("miss", "all"):
            mask = cv2.imread(str(folder / f"mask_{kind}_{i:012d}.png"), cv2.IMREAD_UNCHANGED)
            assert mask.shape == (H, W)
    assert (folder / "mask_all_000000000001.png").read_bytes() == good
    again = generate_masks(mask_root, ["val2014"], workers=1)["val2014"]
    assert again["written"] == 0 and again["redone"] == {}


def test_png_size_reads_complete_files_only(tmp_path):
    path = tmp_path / "m.png"
    cv2.imwrite(str(path), np.zeros((7, 11), np.uint8))
    assert png_size(path) == (11, 7)
    data = path.read_bytes()
    for damaged in (data[:-1], data[:20], b"", b"GIF89a" + data[6:]):
        path.write_bytes(damaged)
        assert png_size(path) is None
    assert png_size(tmp_path / "none.png") is None


def test_cli_uses_worker_processes_and_reports_bad_annotation_file(mask_root):
    script = paths.REPO_ROOT / "training" / "generate_masks_coco2014.py"
    run = subprocess.run([sys.executable, str(script), "--coco_root", str(mask_root),
                          "--data_types", "val2014", "--workers", "2"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "val2014: 3 images, 3 mask pairs written" in run.stdout
    assert len(list((mask_root / "valmask2014").glob("*.png"))) == 6
    paths.annotation_file(mask_root, "val2014").write_text('{"images": [')
    run = subprocess.run([sys.executable, str(script), "--coco_root", str(mask_root),
                          "--data_types", "val2014"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: annotation file is not valid")
    assert "Traceback" not in run.stderr
