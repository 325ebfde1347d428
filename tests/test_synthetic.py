"""The synthetic mini-COCO, its CLI and preview, the skeleton drawing and the COCO <-> CMU map."""
import json
import math
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from model import draw, paths, skeleton, synthetic
from model.errors import UserError
from model.synthetic import dataset as synthetic_dataset
from model.synthetic import person as synthetic_person
from model.synthetic import scene as synthetic_scene

SCRIPT = paths.REPO_ROOT / "dataset" / "make_synthetic_coco.py"


def _load(root, split):
    return json.loads(paths.annotation_file(root, split).read_text())


def _people(data):
    return [a for a in data["annotations"] if not a["iscrowd"]]


def test_loads_in_pycocotools_with_coco_fields(synthetic_coco):
    ids = {}
    ann_ids = set()
    for split in synthetic.SPLITS:
        coco = COCO(str(paths.annotation_file(synthetic_coco, split)))
        assert coco.loadCats(coco.getCatIds()) == [skeleton.PERSON_CATEGORY]
        ids[split] = set(coco.getImgIds())
        for img in coco.loadImgs(coco.getImgIds()):
            assert img["file_name"] == paths.image_file_name(split, img["id"])
            assert synthetic.MIN_SIZE <= img["width"] <= synthetic.MAX_SIZE
            assert synthetic.MIN_SIZE <= img["height"] <= synthetic.MAX_SIZE
        for ann in coco.loadAnns(coco.getAnnIds()):
            assert ann["category_id"] == 1 and ann["iscrowd"] in (0, 1)
            kp = np.array(ann["keypoints"], np.float64).reshape(17, 3)
            assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum())
            assert set(kp[:, 2].tolist()) <= {0, 1, 2}
            assert np.all(kp[kp[:, 2] == 0, :2] == 0)            # unlabelled: x = y = 0
            mask = coco.annToMask(ann)
            assert mask.sum() > 0
            # area is that of the drawn mask; the polygon rasterises up to a pixel apart.
            kernel = np.ones((3, 3), np.uint8)
            assert cv2.erode(mask, kernel).sum() <= ann["area"] <= cv2.dilate(mask, kernel).sum()
            if ann["iscrowd"]:
                assert isinstance(ann["segmentation"]["counts"], str)   # compressed RLE
                assert ann["num_keypoints"] == 0
                assert ann["area"] == mask.sum()
            else:
                assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])
            ann_ids.add(ann["id"])
    assert ids["train2014"] and ids["val2014"] and not ids["train2014"] & ids["val2014"]
    assert max(ids["train2014"]) < min(ids["val2014"])
    total = sum(len(_load(synthetic_coco, s)["annotations"]) for s in synthetic.SPLITS)
    assert len(ann_ids) == total                                 # unique across the splits


def test_image_files_have_the_declared_size(synthetic_coco):
    for split in synthetic.SPLITS:
        for img in _load(synthetic_coco, split)["images"]:
            image = cv2.imread(str(paths.image_dir(synthetic_coco, split) / img["file_name"]))
            assert image is not None and image.shape == (img["height"], img["width"], 3)


def test_labelled_keypoints_lie_in_box_and_segmentation(synthetic_coco):
    """Every labelled keypoint (v = 1 or 2) lies inside its person's bbox, and inside its
    segmentation mask dilated by 2 px (pycocotools rasterises polygons half a pixel apart
    from the pixel-centre convention of the keypoints)."""
    checked = 0
    for split in synthetic.SPLITS:
        coco = COCO(str(paths.annotation_file(synthetic_coco, split)))
        for ann in coco.loadAnns(coco.getAnnIds(iscrowd=False)):
            kp = np.array(ann["keypoints"], np.float64).reshape(17, 3)
            kp = kp[kp[:, 2] > 0]
            if not len(kp):
                continue
            x, y, w, h = ann["bbox"]
            assert np.all((kp[:, 0] >= x) & (kp[:, 0] < x + w) & (kp[:, 1] >= y) & (kp[:, 1] < y + h))
            mask = cv2.dilate(coco.annToMask(ann), np.ones((5, 5), np.uint8))
            assert np.all(mask[np.rint(kp[:, 1]).astype(int), np.rint(kp[:, 0]).astype(int)] == 1)
            checked += len(kp)
    assert checked > 500


def test_visible_keypoints_are_not_covered_by_people_in_front(synthetic_coco):
    """Annotations are in drawing order; a keypoint marked visible (2) is outside the eroded
    silhouette of every person drawn after it, and some keypoints are occluded (1)."""
    occluded = 0
    for split in synthetic.SPLITS:
        coco = COCO(str(paths.annotation_file(synthetic_coco, split)))
        for image_id in coco.getImgIds():
            anns = [a for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id)) if not a["iscrowd"]]
            masks = [cv2.erode(coco.annToMask(a), np.ones((5, 5), np.uint8)) for a in anns]
            for i, ann in enumerate(anns):
                kp = np.array(ann["keypoints"], np.float64).reshape(17, 3)
                occluded += int((kp[:, 2] == 1).sum())
                vis = kp[kp[:, 2] == 2]
                xi, yi = np.rint(vis[:, 0]).astype(int), np.rint(vis[:, 1]).astype(int)
                for m in masks[i + 1:]:
                    assert not m[yi, xi].any()
    assert occluded > 0


def test_every_case_is_present(synthetic_coco):
    for split in synthetic.SPLITS:
        data = _load(synthetic_coco, split)
        stats = synthetic.dataset_statistics(data)
        assert stats["images_without_people"] >= 1
        assert stats["crowd_regions"] >= 2
        crowd_images = [a["image_id"] for a in data["annotations"] if a["iscrowd"]]
        assert max(crowd_images.count(i) for i in crowd_images) == 2   # several crowds in one image
        assert stats["people_without_keypoints"] >= 1
        assert stats["occluded_keypoints"] >= 1
        assert max(a["num_keypoints"] for a in _people(data)) == 17
        hist = stats["people_per_image"]
        assert sum(hist) == stats["images"] and len(hist) <= 7
        assert sum(k * n for k, n in enumerate(hist)) == stats["people"]
        vis = np.array([a["keypoints"][2::3] for a in _people(data) if a["num_keypoints"]])
        assert (vis == 0).any()                                      # unlabelled parts too
        assert stats["labelled_keypoints"] == stats["visible_keypoints"] + stats["occluded_keypoints"]
        # Most labelled people are large enough to be main people of the HDF5 step.
        main = [a for a in _people(data) if a["num_keypoints"] >= 5 and a["area"] >= 32 * 32]
        assert len(main) >= 0.6 * stats["people"]


def test_same_seed_gives_identical_bytes_whatever_the_workers(tmp_path):
    one = synthetic.generate_split(tmp_path / "a", "val2014", 8, seed=5, workers=1, progress=False)
    two = synthetic.generate_split(tmp_path / "b", "val2014", 8, seed=5, workers=2, progress=False)
    other = synthetic.generate_split(tmp_path / "c", "val2014", 8, seed=6, progress=False)
    assert one == two and one != other
    ann = [paths.annotation_file(tmp_path / d, "val2014").read_bytes() for d in "abc"]
    assert ann[0] == ann[1] and ann[0] != ann[2]
    for img in one["images"]:
        a, b = (paths.image_dir(tmp_path / d, "val2014") / img["file_name"] for d in "ab")
        assert a.read_bytes() == b.read_bytes()


def test_rerun_keeps_a_complete_set_and_new_parameters_replace_it(tmp_path):
    synthetic.generate_split(tmp_path, "train2014", 3, seed=1, progress=False)
    ann_path = paths.annotation_file(tmp_path, "train2014")
    image = paths.image_dir(tmp_path, "train2014") / paths.image_file_name(
        "train2014", synthetic.image_id("train2014", 2))
    stamps = ann_path.stat().st_mtime_ns, image.stat().st_mtime_ns
    synthetic.generate_split(tmp_path, "train2014", 3, seed=1, progress=False)
    assert (ann_path.stat().st_mtime_ns, image.stat().st_mtime_ns) == stamps
    data = synthetic.generate_split(tmp_path, "train2014", 2, seed=1, progress=False)
    assert _load(tmp_path, "train2014")["info"]["synthetic"] == synthetic.split_parameters(
        "train2014", 2, 1) == data["info"]["synthetic"]
    assert not image.exists()                               # image of the old set removed
    image.parent.joinpath(data["images"][0]["file_name"]).unlink()
    synthetic.generate_split(tmp_path, "train2014", 2, seed=1, progress=False)
    assert image.parent.joinpath(data["images"][0]["file_name"]).is_file()   # missing: redrawn


def test_interrupted_run_leaves_no_annotation_file(tmp_path, monkeypatch):
    synthetic.generate_split(tmp_path, "val2014", 3, seed=0, progress=False)
    real = synthetic.render_image

    def dies_on_third(seed, split, index):
        if index == 2:
            raise KeyboardInterrupt
        return real(seed, split, index)

    monkeypatch.setattr(synthetic_dataset, "render_image", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        synthetic.generate_split(tmp_path, "val2014", 3, seed=1, progress=False)
    assert not paths.annotation_file(tmp_path, "val2014").exists()
    assert not list(tmp_path.rglob("*.tmp"))


def test_refuses_to_overwrite_a_real_annotation_file(tmp_path):
    ann_path = paths.annotation_file(tmp_path, "val2014")
    ann_path.parent.mkdir(parents=True)
    ann_path.write_text(json.dumps({"info": {"description": "COCO 2014"}, "images": []}))
    with pytest.raises(UserError, match="not a synthetic annotation file"):
        synthetic.generate_split(tmp_path, "val2014", 2, progress=False)
    with pytest.raises(UserError, match="non-negative"):
        synthetic.generate_split(tmp_path, "train2014", -1, progress=False)


def _upright(kind="standing", back=False):
    person = synthetic.sample_person(np.random.default_rng(3), 300.0, kind=kind, allow_lying=False)
    person.update(theta=0.0, lean=0.0, tilt=0.0, yaw=0.0, back=back)
    return synthetic.body_geometry(person)


def test_line_kernel_is_a_normalised_streak_in_its_direction():
    horizontal = synthetic.line_kernel(9, 0.0)
    assert horizontal.shape == (9, 9) and horizontal.sum() == pytest.approx(1.0)
    assert np.count_nonzero(horizontal) == np.count_nonzero(horizontal[4]) == 9
    vertical = synthetic.line_kernel(9, math.pi / 2)
    assert np.allclose(vertical, horizontal.T, atol=1e-6)
    diagonal = synthetic.line_kernel(9, math.pi / 4)
    assert diagonal.sum() == pytest.approx(1.0) and diagonal[4, 4] > 0
    # 9 px long at 45 degrees: about 6.4 px along each axis, on the main diagonal only
    assert np.count_nonzero(np.diag(diagonal)) == 7 and np.count_nonzero(diagonal) == 7


def test_camera_blur_softens_its_share_of_images_and_leaves_annotations_alone(monkeypatch):
    count = 12
    drawn = [synthetic.render_image(0, "val2014", i) for i in range(count)]
    monkeypatch.setattr(synthetic_scene, "DEFOCUS_P", 0.0)
    monkeypatch.setattr(synthetic_scene, "SHAKE_P", 0.0)
    sharp = [synthetic.render_image(0, "val2014", i) for i in range(count)]
    p_soft = 0.2 + 0.2                       # the module's DEFOCUS_P + SHAKE_P
    expected = [np.random.default_rng([0, 2, i, 1]).random() < p_soft for i in range(count)]
    assert 0 < sum(expected) < count         # the seed shows both cases
    for (image, record, anns), (image0, record0, anns0), soft in zip(drawn, sharp, expected):
        assert record == record0 and anns == anns0
        assert (not np.array_equal(image, image0)) == soft
        if soft:                             # less fine detail than the same image drawn sharp
            detail = [np.abs(np.diff(im.astype(np.float32), axis=1)).mean()
                      for im in (image, image0)]
            assert detail[0] < detail[1]


def test_body_geometry_is_anatomical_and_faces_the_camera():
    geo = _upright()
    kp = {n: geo["keypoints"][i] for i, n in enumerate(skeleton.COCO_KEYPOINTS)}
    # Front view: the person's right side is on the image left.
    for part in ("shoulder", "hip", "eye", "ear"):
        assert kp[f"right_{part}"][0] < kp[f"left_{part}"][0]
    across = [kp[n][0] for n in ("right_ear", "right_eye", "nose", "left_eye", "left_ear")]
    assert across == sorted(across)
    for side in ("left", "right"):                         # y grows downwards
        chain = [kp["nose"], kp[f"{side}_shoulder"], kp[f"{side}_hip"], kp[f"{side}_knee"],
                 kp[f"{side}_ankle"]]
        assert all(a[1] < b[1] for a, b in zip(chain, chain[1:]))
        assert kp[f"{side}_eye"][1] < kp["nose"][1]
        upper = np.linalg.norm(kp[f"{side}_elbow"] - kp[f"{side}_shoulder"])
        assert upper == pytest.approx(synthetic_person._PROPORTIONS["uarm"] * 300, rel=0.06)
    assert geo["self_vis"].tolist() == [2] * 17
    back = _upright(back=True)
    bk = {n: back["keypoints"][i] for i, n in enumerate(skeleton.COCO_KEYPOINTS)}
    assert bk["right_shoulder"][0] > bk["left_shoulder"][0] and bk["right_ear"][0] > bk["left_ear"][0]
    faces = [skeleton.COCO_KEYPOINTS.index(n) for n in ("nose", "left_eye", "right_eye")]
    assert back["self_vis"][faces].tolist() == [0, 0, 0]       # a face seen from behind


def test_turned_head_hides_the_far_ear():
    person = synthetic.sample_person(np.random.default_rng(0), 300.0, kind="standing")
    person.update(theta=0.0, back=False, yaw=math.radians(40))
    geo = synthetic.body_geometry(person)
    vis = dict(zip(skeleton.COCO_KEYPOINTS, geo["self_vis"].tolist()))
    assert vis["left_ear"] == 1 and vis["right_ear"] == 2


def test_coco_cmu_round_trip_and_neck_rule(synthetic_coco):
    rng = np.random.default_rng(0)
    kp = np.concatenate([rng.uniform(0, 600, (50, 17, 2)), rng.integers(0, 3, (50, 17, 1))], -1)
    cmu = skeleton.coco_to_cmu(kp)
    np.testing.assert_allclose(skeleton.cmu_to_coco(cmu), kp.astype(np.float32))
    ls = skeleton.COCO_KEYPOINTS.index("left_shoulder")
    rs = skeleton.COCO_KEYPOINTS.index("right_shoulder")
    both = (kp[:, ls, 2] > 0) & (kp[:, rs, 2] > 0)
    neck = cmu[:, skeleton.NECK]
    np.testing.assert_allclose(neck[both, :2], (kp[both, ls, :2] + kp[both, rs, :2]) / 2, rtol=1e-5)
    assert np.all(neck[both, 2] == np.minimum(kp[both, ls, 2], kp[both, rs, 2]))
    assert np.all(neck[~both] == 0) and both.any() and (~both).any()
    real = np.array([a["keypoints"] for a in _people(_load(synthetic_coco, "val2014"))],
                    np.float32).reshape(-1, 17, 3)
    np.testing.assert_array_equal(skeleton.cmu_to_coco(skeleton.coco_to_cmu(real)), real)


def test_draw_people_draws_limbs_and_joints_where_expected():
    blank = np.zeros((120, 120, 3), np.uint8)
    person = np.zeros((18, 3), np.float32)
    neck, rhip = skeleton.NECK, skeleton.CMU_PARTS.index("right_hip")
    person[neck] = (20, 60, 2)
    person[rhip] = (100, 60, 2)
    out = draw.draw_people(blank, person[None], threshold=0, thickness=3, radius=4, alpha=0.6)
    assert not blank.any()                                             # input untouched
    assert tuple(out[60, 20]) == skeleton.PART_COLORS[neck]            # joint dots
    assert tuple(out[60, 100]) == skeleton.PART_COLORS[rhip]
    limb = np.array(skeleton.PART_COLORS[rhip]) * 0.6                  # limb in its end's colour
    np.testing.assert_allclose(out[60, 60], limb, atol=2)
    assert not out[20:50].any() and not out[70:].any()                 # nothing elsewhere
    # The hip only occluded (1): with threshold 1 only the neck is drawn, no limb.
    person[rhip, 2] = 1
    only_neck = draw.draw_people(blank, person, threshold=1, thickness=3, radius=4)
    assert tuple(only_neck[60, 20]) == skeleton.PART_COLORS[neck]
    assert not only_neck[:, 40:].any()
    # Shoulder-ear limbs are left out unless asked for.
    sho, ear = skeleton.CMU_PARTS.index("right_shoulder"), skeleton.CMU_PARTS.index("right_ear")
    pair = np.zeros((1, 18, 3), np.float32)
    pair[0, sho], pair[0, ear] = (20, 100, 2), (100, 100, 2)
    assert not draw.draw_people(blank, pair, thickness=3, radius=4)[100, 60].any()
    assert draw.draw_people(blank, pair, thickness=3, radius=4, draw_ear_limbs=True)[100, 60].any()


def test_coco_annotations_to_people_skips_crowds_and_unlabelled(synthetic_coco):
    data = _load(synthetic_coco, "val2014")
    people = draw.coco_annotations_to_people(data["annotations"])
    labelled = [a for a in _people(data) if a["num_keypoints"] > 0]
    assert people.shape == (len(labelled), 18, 3)
    coco = np.array([a["keypoints"] for a in labelled], np.float32).reshape(-1, 17, 3)
    np.testing.assert_array_equal(people[:, skeleton.COCO_TO_CMU], coco)
    assert draw.coco_annotations_to_people([]).shape == (0, 18, 3)


def test_preview_grid(synthetic_coco, tmp_path):
    out = synthetic.make_preview(synthetic_coco, tmp_path / "p.png", "val2014", num_images=4,
                                 cell=200, columns=2)
    image = cv2.imread(str(out))
    assert image.shape == (26 + 2 * 200, 2 * 200, 3)
    # Skeleton colours appear: the drawing happened.
    colors = {tuple(c) for c in image.reshape(-1, 3)[::7]}
    assert len(colors & set(skeleton.PART_COLORS)) >= 3


def _cli(*args, cwd):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def test_cli_writes_set_statistics_and_preview(tmp_path):
    root = tmp_path / "coco"
    run = _cli("--coco_root", str(root), "--num_train", "2", "--num_val", "3", "--seed", "4",
               "--workers", "1", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "train2014: 2 images" in run.stdout and "val2014: 3 images" in run.stdout
    assert "people per image" in run.stdout and "seed 4" in run.stdout
    assert cv2.imread(str(root / "preview.png")) is not None
    assert _load(root, "val2014")["info"]["synthetic"]["seed"] == 4


@pytest.mark.parametrize("args,message", [
    (["--seed", "abc"], "argument --seed: invalid int value: 'abc'"),
    (["--num_train", "-1"], "error: --num_train must be >= 0, got -1"),
    (["--num_val", "-5"], "error: --num_val must be >= 0, got -5"),
])
def test_cli_bad_numbers(tmp_path, args, message):
    run = _cli("--coco_root", str(tmp_path / "coco"), *args, cwd=tmp_path)
    assert run.returncode == 2
    assert message in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "coco" / "annotations").exists()


def test_cli_unwritable_output_dir(tmp_path):
    (tmp_path / "file").write_text("x")       # a file in the way fails even for root
    run = _cli("--coco_root", str(tmp_path / "file" / "coco"), "--num_train", "1", cwd=tmp_path)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot create output directory")
