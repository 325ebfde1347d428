"""Main people, the split rule, the compact HDF5 (round trip, size ratio) and its bad inputs."""
import collections
import json
import os
import pickle
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest

from model import hdf5, paths
from model.coco import (SOURCES, as_int, clean_annotation, finite_numbers, format_counts,
                        held_out_val_image_ids, image_samples, load_coco_annotations,
                        select_main_people)
from model.errors import UserError
from model.hdf5 import Hdf5Samples, Sample, generate_hdf5, summarize_hdf5
from model.masks import generate_masks, make_masks, mask_files
from model.skeleton import coco_to_cmu

SCRIPT = paths.REPO_ROOT / "training" / "generate_hdf5_coco2014.py"


# ---------------------------------------------------------------------------- hand-made COCO

def smooth_image(h, w, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def keypoints_in_box(x, y, w, h, n=17):
    """n labelled keypoints on a grid inside the box, the rest unlabelled."""
    kp = []
    for k in range(17):
        if k < n:
            kp += [round(x + w * (0.1 + 0.8 * (k % 4) / 3), 2),
                   round(y + h * (0.1 + 0.8 * (k // 4) / 4), 2), 2 if k % 3 else 1]
        else:
            kp += [0, 0, 0]
    return kp


def ann(ann_id, image_id, x, y, w, h, n=17, **extra):
    a = {"id": ann_id, "image_id": image_id, "category_id": 1, "iscrowd": 0,
         "bbox": [x, y, w, h], "area": w * h, "num_keypoints": n,
         "keypoints": keypoints_in_box(x, y, w, h, n),
         "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}
    a.update(extra)
    return a


def write_coco(root, source, specs):
    """specs: (image_id, (h, w), annotations, kind) with kind jpg | gray | png | truncated |
    missing | wrong_size. Returns the annotation file path."""
    folder = paths.image_dir(root, source)
    folder.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for image_id, (h, w), image_anns, kind in specs:
        images.append({"id": image_id, "width": w, "height": h,
                       "file_name": paths.image_file_name(source, image_id)})
        anns += image_anns
        path = folder / paths.image_file_name(source, image_id)
        img = smooth_image(h, w, image_id)
        if kind == "jpg":
            cv2.imwrite(str(path), img)
        elif kind == "gray":
            cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
        elif kind == "png":
            path.write_bytes(cv2.imencode(".png", img)[1].tobytes())
        elif kind == "truncated":
            data = cv2.imencode(".jpg", img)[1].tobytes()
            path.write_bytes(data[: len(data) * 2 // 3])
        elif kind == "wrong_size":
            cv2.imwrite(str(path), img[: h // 2])
        else:
            assert kind == "missing"
    out = paths.annotation_file(root, source)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"info": {}, "images": images, "annotations": anns,
                               "categories": [{"id": 1, "name": "person"}]}))
    return out


def clean(anns, h=600, w=600):
    """Cleaned annotations as load_coco_annotations makes them."""
    images = {1: {"id": 1, "width": w, "height": h}}
    return [clean_annotation(dict(a, image_id=1), images, collections.Counter())
            for a in anns]


# ---------------------------------------------------------------------------- main people

def test_main_person_rules():
    anns = clean([
        ann(1, 1, 10, 10, 100, 200),                       # chosen
        ann(2, 1, 200, 10, 50, 100, n=4),                  # too few keypoints
        ann(3, 1, 200, 150, 30, 30),                       # area 900 < 32 * 32
        ann(4, 1, 300, 10, 40, 40, iscrowd=1),             # crowd
        ann(6, 1, 40, 20, 100, 200),                       # centre 31.6 px from #1: < 0.3 * 200
        ann(7, 1, 300, 300, 40, 40, n=6),                  # chosen
    ])
    assert select_main_people(anns) == [0, 5]


def test_exclusion_radius_is_the_chosen_persons_own_size():
    # the fork stored the size of the image's LAST annotation for every chosen person
    anns = clean([
        ann(1, 1, 0, 0, 100, 200),           # chosen, radius 0.3 * 200 = 60
        ann(2, 1, 0, 50, 100, 200),          # 50 px away: excluded (stale size 12 would keep it)
        ann(3, 1, 300, 300, 40, 40),         # chosen, radius 12
        ann(4, 1, 270, 270, 150, 150),       # centre 35 px from #3: kept (12 < 35 < 45)
        ann(5, 1, 380, 380, 10, 10, n=6, area=1500),   # tiny last box, size 10
    ])
    assert select_main_people(anns) == [0, 2, 3, 4]


def test_image_samples_order_objpos_scale_and_joints():
    raw = [ann(1, 1, 10, 10, 100, 200), ann(2, 1, 150, 20, 60, 60, n=3),
           ann(3, 1, 0, 0, 300, 300, n=0), ann(4, 1, 200, 200, 100, 184, iscrowd=1),
           ann(5, 1, 250, 100, 80, 92, n=8)]
    samples = image_samples(clean(raw))
    assert len(samples) == 2
    first, second = samples
    np.testing.assert_allclose(first.objpos, [60, 110])
    assert first.scale_provided == pytest.approx(200 / 368)
    np.testing.assert_allclose(second.objpos, [290, 146])
    assert second.scale_provided == pytest.approx(92 / 368)
    # main person first, then every other non-crowd person with keypoints, file order
    coco = lambda a: np.asarray(a["keypoints"], np.float32).reshape(17, 3)  # noqa: E731
    np.testing.assert_allclose(first.joints, np.stack([coco_to_cmu(coco(raw[i]))
                                                       for i in (0, 1, 4)]))
    np.testing.assert_allclose(second.joints, np.stack([coco_to_cmu(coco(raw[i]))
                                                        for i in (4, 0, 1)]))
    assert first.joints.dtype == np.float32 and first.joints.shape == (3, 18, 3)


# ---------------------------------------------------------------------------- split rule

def test_held_out_rule_reference_count_and_half_cap():
    entries = [{"id": 1000 + k} for k in range(40504)]
    held = held_out_val_image_ids({"images": entries})
    assert held == [1000 + k for k in range(2645)]
    assert held_out_val_image_ids({"images": entries[:150]}) == \
        [1000 + k for k in range(75)]
    assert held_out_val_image_ids({"images": entries[:150]}, val_holdout=10) == \
        [1000 + k for k in range(10)]
    with pytest.raises(UserError):
        held_out_val_image_ids({"images": entries}, val_holdout=-1)


# ---------------------------------------------------------------------------- round trip

@pytest.fixture(scope="module")
def hand_made(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    size = (120, 160)
    val = [
        (501, size, [ann(1, 501, 20, 10, 60, 100)], "jpg"),              # held out
        (502, size, [ann(2, 502, 80, 10, 60, 100)], "gray"),              # held out
        (503, size, [ann(3, 503, 20, 10, 60, 100)], "png"),               # training
        (504, size, [ann(4, 504, 20, 10, 60, 100),
                     ann(5, 504, 100, 20, 40, 40, n=0)], "jpg"),          # training, masked
        (505, size, [], "jpg"),                                           # no people
        (506, size, [ann(6, 506, 20, 10, 60, 100)], "truncated"),
    ]
    train = [
        (101, size, [ann(11, 101, 10, 10, 50, 100), ann(12, 101, 90, 10, 60, 100),
                     ann(13, 101, 60, 40, 30, 30, n=2)], "jpg"),
        (102, size, [ann(14, 102, 10, 10, 50, 100)], "missing"),
        (103, size, [ann(15, 103, 10, 10, 50, 100)], "wrong_size"),
        (104, (30, 40), [ann(16, 104, 2, 2, 33, 33)], "jpg"),             # narrower than 64
        (105, size, [ann(17, 105, 10, 10, 50, 100, keypoints=[500, 5, 2] + [20, 20, 2] * 16),
                     ann(18, 105, 70, 10, 0, 0, area=0)], "jpg"),
    ]
    write_coco(root, "val2014", val)
    write_coco(root, "train2014", train)
    generate_masks(root, workers=1)
    out = root / "h5"
    reports = generate_hdf5(root, out, val_holdout=2, workers=1)
    return root, out, reports


def test_round_trip_every_sample_decodes_to_its_source(hand_made):
    root, out, reports = hand_made
    for split in ("train", "val"):
        cocos = {s: load_coco_annotations(paths.annotation_file(root, s))
                 for s in SOURCES}
        with Hdf5Samples(paths.hdf5_file(out, split)) as ds:
            assert len(ds) == reports[split]["samples"]
            expected = []
            for image_id in dict.fromkeys(ds.image_ids.tolist()):
                source = "train2014" if image_id < 500 else "val2014"
                for meta in image_samples(cocos[source].anns[image_id]):
                    expected.append((source, image_id, meta))
            assert len(expected) == len(ds)
            for i, (source, image_id, meta) in enumerate(expected):
                s = ds[i]
                assert isinstance(s, Sample) and s.image_id == image_id
                path = paths.image_dir(root, source) / paths.image_file_name(source, image_id)
                src = cv2.imread(str(path), cv2.IMREAD_COLOR)
                assert s.image.dtype == np.uint8 and s.image.shape == src.shape
                np.testing.assert_array_equal(s.image, src)
                mask = cv2.imread(str(mask_files(root, source, image_id)[0]),
                                  cv2.IMREAD_GRAYSCALE)
                np.testing.assert_array_equal(s.mask_miss, mask)
                np.testing.assert_array_equal(s.joints, meta.joints)
                np.testing.assert_array_equal(s.objpos, meta.objpos)
                assert s.scale_provided == pytest.approx(meta.scale_provided)
                assert s.joints.dtype == np.float32 and s.objpos.dtype == np.float32


def test_reduced_read_is_the_stored_image_at_a_fraction_of_its_size(hand_made):
    """JPEG data decodes at 1/2, 1/4, 1/8 (ceil of each side), near the full decode averaged
    over f x f blocks; PNG data and grayscale JPEGs keep working (PNG at full size); the
    mask, joints and placement stay at the stored size."""
    root, out, _ = hand_made
    seen = collections.Counter()
    for split in ("train", "val"):
        with Hdf5Samples(paths.hdf5_file(out, split)) as ds:
            for i in range(len(ds)):
                full = ds[i]
                objpos, scale = ds.placement(i)
                np.testing.assert_array_equal(objpos, full.objpos)
                assert scale == full.scale_provided and full.reduction == 1
                png = ds.image_ids[i] == 503
                h, w = full.image.shape[:2]
                for f in (2, 4, 8):
                    s = ds.read(i, f)
                    np.testing.assert_array_equal(s.mask_miss, full.mask_miss)
                    np.testing.assert_array_equal(s.joints, full.joints)
                    if png:
                        assert s.reduction == 1
                        np.testing.assert_array_equal(s.image, full.image)
                        continue
                    assert s.reduction == f and s.image.shape == (-(-h // f), -(-w // f), 3)
                    hf, wf = h // f, w // f       # whole blocks only: the last may be partial
                    blocks = full.image[:hf * f, :wf * f].reshape(hf, f, wf, f, 3).mean((1, 3))
                    assert np.abs(s.image[:hf, :wf] - blocks).mean() < 1.5
                    seen[f] += 1
    assert seen == {2: 7, 4: 7, 8: 7}                 # 7 JPEG samples, one of them gray
    for data in (b"\xff\xd8 not a JPEG after all", b"no image"):
        assert hdf5.decode_reduced(np.frombuffer(data, np.uint8), 2)[0] is None
    with Hdf5Samples(paths.hdf5_file(out, "val")) as ds:
        with pytest.raises(IndexError):
            ds.placement(len(ds))


def test_split_contents_and_skip_summary(hand_made):
    root, out, reports = hand_made
    with Hdf5Samples(paths.hdf5_file(out, "val")) as val:
        assert sorted(set(val.image_ids.tolist())) == [501, 502]
    with Hdf5Samples(paths.hdf5_file(out, "train")) as train:
        ids = train.image_ids.tolist()
    assert ids == [101, 101, 104, 105, 503, 504]           # file order, train2014 first
    assert reports["train"]["skipped"] == {
        "missing image file": 1, "image size 160x60 differs from the annotation (160x120)": 1,
        "corrupt or truncated image (OSError)": 1}                     # 102, 103, 506
    assert reports["val"]["skipped"] == {}
    train_notes = reports["train"]["notes"]
    assert train_notes["PNG data in the image file: stored as is"] == 1
    assert reports["val"]["notes"]["grayscale image: 3 channels on read"] == 1
    assert len(ids) == reports["train"]["samples"]
    assert reports["train"]["images_without_main_person"] == 1     # image 505


def test_truncated_jpeg_is_skipped(tmp_path):
    write_coco(tmp_path, "val2014", [(1, (64, 80), [ann(1, 1, 5, 5, 40, 50)], "jpg"),
                                     (2, (64, 80), [ann(2, 2, 5, 5, 40, 50)], "jpg"),
                                     (3, (64, 80), [ann(3, 3, 5, 5, 40, 50)], "truncated")])
    write_coco(tmp_path, "train2014", [])
    reports = generate_hdf5(tmp_path, tmp_path, val_holdout=0, workers=1)
    assert reports["train"]["skipped"] == {"corrupt or truncated image (OSError)": 1}
    assert reports["train"]["samples"] == 2 and reports["val"]["samples"] == 0
    assert reports["train"]["notes"]["mask file missing: computed from the annotations"] == 2


def test_unlabelled_person_masked_and_out_of_image_keypoint_dropped(hand_made):
    root, out, _ = hand_made
    with Hdf5Samples(paths.hdf5_file(out, "train")) as ds:
        by_id = {}
        for i in range(len(ds)):
            by_id.setdefault(ds.image_ids[i], ds[i])
        masked = by_id[504].mask_miss
        assert masked[40, 120] == 0 and masked[5, 5] == 255     # the num_keypoints=0 person
        assert (by_id[101].mask_miss == 255).all()              # empty mask stored as "all 255"
        joints = by_id[105].joints
        assert joints.shape == (1, 18, 3)                       # zero-area person has no sample
        assert joints[0, 0].tolist() == [0, 0, 0]               # nose x=500 > width: unlabelled
        assert by_id[104].image.shape == (30, 40, 3)


def test_size_ratio_and_reference_bytes(hand_made):
    _, out, reports = hand_made
    path = paths.hdf5_file(out, "train")
    # train: 6 samples; the 40 px wide image counts as 64 px wide like the reference pads it
    expected = 6 * (5 * 120 * 160 + 30 * 64)
    summary = summarize_hdf5(path)
    assert summary["reference_layout_bytes"] == expected
    assert summary["ratio"] == pytest.approx(expected / os.path.getsize(path))


def test_reader_is_lazy_and_picklable(hand_made):
    _, out, _ = hand_made
    ds = Hdf5Samples(paths.hdf5_file(out, "val"))
    assert ds._handle is None                       # nothing open until a sample is read
    first = ds[0]
    clone = pickle.loads(pickle.dumps(ds))          # as handed to a worker process
    assert clone._handle is None
    np.testing.assert_array_equal(clone[0].image, first.image)
    np.testing.assert_array_equal(ds[-1].joints, ds[len(ds) - 1].joints)
    with pytest.raises(IndexError):
        ds[len(ds)]
    ds.close()
    clone.close()


def test_rerun_keeps_complete_files_and_rewrites_when_flags_change(hand_made, tmp_path):
    root, out, _ = hand_made
    target = tmp_path / "h5"
    first = generate_hdf5(root, target, val_holdout=2, workers=1)
    stamp = paths.hdf5_file(target, "train").stat().st_mtime_ns
    again = generate_hdf5(root, target, val_holdout=2, workers=1)
    assert again["train"]["kept"] and again["val"]["kept"]
    assert paths.hdf5_file(target, "train").stat().st_mtime_ns == stamp
    only = generate_hdf5(root, target, val_holdout=2, train_only=True, workers=1)
    assert "kept" not in only["train"] and only["val"]["kept"]
    with Hdf5Samples(paths.hdf5_file(target, "train")) as ds:
        assert set(ds.image_ids.tolist()) == {101, 104, 105}
    assert first["train"]["samples"] == 6 and only["train"]["samples"] == 4


def test_crash_leaves_no_file_that_looks_complete(hand_made, tmp_path, monkeypatch):
    root, _, _ = hand_made
    calls = []

    def crash(job):
        calls.append(job)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(job)

    real = hdf5._hdf5_job
    monkeypatch.setattr(hdf5, "_hdf5_job", crash)
    with pytest.raises(KeyboardInterrupt):
        generate_hdf5(root, tmp_path, val_holdout=2, workers=1)
    assert os.listdir(tmp_path) == []
    # a file killed before its attributes were written is refused by the reader
    with h5py.File(tmp_path / "partial.h5", "w") as f:
        f.create_dataset("images/bytes", data=np.zeros(3, np.uint8))
    with pytest.raises(UserError, match="not a compact COCO HDF5"):
        Hdf5Samples(tmp_path / "partial.h5")
    with pytest.raises(UserError, match="not found"):
        Hdf5Samples(tmp_path / "none.h5")


def test_annotation_file_problems(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("[1, 2")
    with pytest.raises(UserError, match="not valid JSON"):
        load_coco_annotations(path)
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(UserError, match="lacks the list 'annotations'"):
        load_coco_annotations(path)
    path.write_text(json.dumps({
        "images": [{"id": 1, "width": 50, "height": 40}, {"id": 2, "width": 50},
                   {"id": 1, "width": 50, "height": 40}],
        "annotations": [{"image_id": 9, "bbox": [0, 0, 1, 1]},
                        {"image_id": 1, "bbox": [0, 0, 10]},
                        {"image_id": 1, "bbox": [0, 0, 10, 10], "keypoints": [1, 2]},
                        {"image_id": 1, "bbox": [0, 0, 10, 10], "category_id": 3},
                        {"image_id": 1, "bbox": [5, 5, 0, 10], "area": 0}]}))
    coco = load_coco_annotations(path)
    assert coco.image_ids == [1]
    assert coco.has_image(1) and not coco.has_image(2)      # dropped entries are not there
    assert coco.problems == {
        "image entry without a valid id, width or height": 1, "duplicate image id": 1,
        "annotation of an unknown image": 1, "annotation without a valid bbox": 1,
        "keypoints missing or malformed: person treated as unlabelled": 1,
        "area missing: bbox area used": 1, "annotation of another category": 1,
        "zero-area annotation: skipped": 1}
    person = coco.anns[1][0]
    assert person["keypoints"] is None and person["num_keypoints"] == 0
    # every image entry malformed: an error, not an empty split that passes silently
    path.write_text(json.dumps({"images": [{"id": "x", "width": 5, "height": 5},
                                           {"id": 3, "width": 0, "height": 5}],
                                "annotations": []}))
    with pytest.raises(UserError, match=r"no usable image entry \(all 2: 2 image entry"):
        load_coco_annotations(path)
    path.write_text(json.dumps({"images": [], "annotations": []}))   # empty is not malformed
    assert load_coco_annotations(path).image_ids == []


def test_cli_help_and_bad_input(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0
    for flag in ("--coco_root", "--out_dir", "--train_only", "--val_holdout", "--workers",
                 "--overwrite"):
        assert flag in run.stdout
    run = subprocess.run([sys.executable, str(SCRIPT), "--coco_root", str(tmp_path / "none"),
                          "--out_dir", str(tmp_path)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: annotation file not found")
    (tmp_path / "file").write_text("")
    run = subprocess.run([sys.executable, str(SCRIPT), "--out_dir", str(tmp_path / "file" / "x")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: cannot create output directory")
    run = subprocess.run([sys.executable, str(SCRIPT), "--train_only", "maybe"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "expected a boolean" in run.stderr


def test_synthetic_set_round_trip_and_size_ratio(synthetic_coco, tmp_path):
    # the fixture is read-only: masks are not written there, the HDF5 step computes them
    reports = generate_hdf5(synthetic_coco, tmp_path, workers=1)
    for split in ("train", "val"):
        r = reports[split]
        assert r["samples"] > 0 and r["skipped"] == {}
        assert r["notes"]["mask file missing: computed from the annotations"] == r["images"]
        assert r["ratio"] >= 10, r
        assert r["ratio"] == pytest.approx(r["reference_layout_bytes"]
                                           / os.path.getsize(paths.hdf5_file(tmp_path, split)))
    cocos = {s: load_coco_annotations(paths.annotation_file(synthetic_coco, s))
             for s in SOURCES}
    train_ids = set(cocos["train2014"].image_ids)
    with Hdf5Samples(paths.hdf5_file(tmp_path, "train")) as ds:
        seen = {}
        for i in range(len(ds)):
            s = ds[i]
            source = "train2014" if s.image_id in train_ids else "val2014"
            anns = cocos[source].anns[s.image_id]
            k = seen.setdefault(s.image_id, 0)
            seen[s.image_id] += 1
            meta = image_samples(anns)[k]
            np.testing.assert_array_equal(s.joints, meta.joints)
            if k == 0:   # images are stored once: check each once
                src = cv2.imread(str(paths.image_dir(synthetic_coco, source)
                                     / paths.image_file_name(source, s.image_id)))
                np.testing.assert_array_equal(s.image, src)
                h, w = src.shape[:2]
                np.testing.assert_array_equal(s.mask_miss, make_masks(anns, h, w)[0])
    held = set(held_out_val_image_ids(cocos["val2014"]))
    with Hdf5Samples(paths.hdf5_file(tmp_path, "val")) as val:
        assert set(val.image_ids.tolist()) <= held
    assert not held & set(seen)


def test_small_helpers_of_the_annotation_checks():
    assert [as_int(v) for v in (3, 3.0, 3.5, True, "3", None)] == [3, 3, None, None, None, None]
    assert finite_numbers([1, 2.5], 2).tolist() == [1.0, 2.5]
    assert finite_numbers([1, float("nan")]) is None and finite_numbers([1, 2], 3) is None
    assert finite_numbers("12") is None and finite_numbers([[1, 2]]) is None
    assert format_counts(collections.Counter({"b": 1, "a": 3})) == "3 a; 1 b"
    assert format_counts(collections.Counter()) == "none"
