"""Domain-shifted evaluation sets: drawn uniformly from held-out images (with and without
people, or people only), seeded, resumable, their composition recorded."""
import contextlib
import io
import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from model import effects, paths
from model.coco import held_out_val_image_ids, load_coco_annotations, train_image_ids
from model.evalsets import eval_pool_image_ids, has_labelled_person, make_domain_datasets
from model.hdf5 import Hdf5Samples, generate_hdf5

SCRIPT = paths.REPO_ROOT / "dataset" / "make_domain_datasets.py"


@pytest.fixture(scope="module")
def coco_root(synthetic_coco, tmp_path_factory):
    root = tmp_path_factory.mktemp("domain") / "coco"
    shutil.copytree(synthetic_coco, root)
    return root


def load(root, data_type):
    return json.loads(paths.annotation_file(root, data_type).read_text())


def test_sample_never_intersects_training_images(coco_root, tmp_path):
    result = make_domain_datasets(coco_root, num=5, seed=0)
    ids = result["image_ids"]
    assert len(ids) == 5 and len(set(ids)) == 5
    val = load_coco_annotations(paths.annotation_file(coco_root, "val2014"))
    held = held_out_val_image_ids(val)
    assert set(ids) <= set(held)
    # what the HDF5 step really put into training
    reports = generate_hdf5(coco_root, tmp_path, workers=1)
    with Hdf5Samples(paths.hdf5_file(tmp_path, "train")) as train:
        trained = set(train.image_ids.tolist())
    assert reports["train"]["samples"] > 0 and trained
    assert not trained & set(ids)
    # and every image the HDF5 step may plan for training, samples or not
    train = load_coco_annotations(paths.annotation_file(coco_root, "train2014"))
    candidates = {i for _, i in train_image_ids(train, val)}
    assert not candidates & set(ids)
    # the pool: every held-out image; with people_only, those with a labelled person
    assert eval_pool_image_ids(val) == held
    people = eval_pool_image_ids(val, people_only=True)
    assert set(people) < set(held)
    for image_id in held:
        labelled = any(a["num_keypoints"] > 0 and not a["iscrowd"]
                       for a in val.anns.get(image_id, []))
        assert (image_id in people) == labelled


def test_every_set_holds_the_same_images_with_the_effect(coco_root):
    result = make_domain_datasets(coco_root, num=5, seed=0)
    ids = result["image_ids"]
    src_dir = paths.image_dir(coco_root, "val2014")
    base = load(coco_root, "val2014_random1k")
    assert [im["id"] for im in base["images"]] == ids       # drawn order
    val = json.loads(paths.annotation_file(coco_root, "val2014").read_text())
    expected_anns = [a for i in ids for a in val["annotations"] if a["image_id"] == i]
    assert base["annotations"] == expected_anns
    assert base["info"]["domain_set"]["seed"] == 0
    for image_id in ids:
        name = paths.image_file_name("val2014", image_id)
        src = (src_dir / name).read_bytes()
        assert (paths.image_dir(coco_root, "val2014_random1k") / name).read_bytes() == src
        original = cv2.imread(str(src_dir / name))
        dark = cv2.imread(str(paths.image_dir(coco_root, "val2014_random1k_dark") / name))
        assert dark.mean() == pytest.approx(original.mean() / 2, abs=1.5)
        blur = cv2.imread(str(paths.image_dir(coco_root, "val2014_random1k_motion_blur") / name))
        expected = effects.motion_blur(original).astype(float)
        assert np.abs(blur.astype(float) - expected).mean() < 2
        small = cv2.imread(str(paths.image_dir(coco_root, "val2014_random1k_resolution") / name))
        assert small.shape == (original.shape[0] // 2, original.shape[1] // 2, 3)
    low = load(coco_root, "val2014_random1k_resolution")
    for im, im0 in zip(low["images"], base["images"]):
        assert (im["width"], im["height"]) == effects.low_resolution_size(im0["width"],
                                                                          im0["height"])
    sizes = {im["id"]: im for im in base["images"]}
    for a, a0 in zip(low["annotations"], base["annotations"]):
        im0 = sizes[a0["image_id"]]
        nw, nh = effects.low_resolution_size(im0["width"], im0["height"])
        assert a == effects.scale_annotation(a0, nw / im0["width"], nh / im0["height"], nh, nw)
    for data_type in ("val2014_random1k_dark", "val2014_random1k_motion_blur"):
        assert load(coco_root, data_type)["annotations"] == base["annotations"]


def test_resolution_set_scores_ap_1_against_itself(coco_root):
    make_domain_datasets(coco_root, num=5, seed=0)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(paths.annotation_file(coco_root, "val2014_random1k_resolution")))
        results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"],
                    "score": 1.0} for a in gt.dataset["annotations"]
                   if not a["iscrowd"] and a["num_keypoints"] > 0]
        ev = COCOeval(gt, gt.loadRes(results), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_seeded_resumable_and_stale_images_removed(coco_root):
    first = make_domain_datasets(coco_root, num=4, seed=3)
    again = make_domain_datasets(coco_root, num=4, seed=3)
    assert again["image_ids"] == first["image_ids"]
    assert set(again["sets"].values()) == {"kept"}
    other = make_domain_datasets(coco_root, num=4, seed=4)
    assert other["image_ids"] != first["image_ids"]
    assert set(other["sets"].values()) == {"written"}
    for data_type in paths.EVAL_DATATYPES:
        names = sorted(p.name for p in paths.image_dir(coco_root, data_type).iterdir())
        assert names == sorted(paths.image_file_name("val2014", i) for i in other["image_ids"])


def test_overwrite_rewrites_a_set_after_val2014_changed(coco_root):
    first = make_domain_datasets(coco_root, num=2, seed=5, effects=[""])
    name = paths.image_file_name("val2014", first["image_ids"][0])
    source = paths.image_dir(coco_root, "val2014") / name
    annotations = paths.annotation_file(coco_root, "val2014")
    original, original_annotations = source.read_bytes(), annotations.read_bytes()
    try:
        inverted = 255 - cv2.imdecode(np.frombuffer(original, np.uint8), cv2.IMREAD_COLOR)
        cv2.imwrite(str(source), inverted)                    # as if val2014 were regenerated
        kept = make_domain_datasets(coco_root, num=2, seed=5, effects=[""])
        copy = paths.image_dir(coco_root, paths.EVAL_BASE) / name
        assert kept["sets"] == {paths.EVAL_BASE: "kept"} and copy.read_bytes() == original
        redone = make_domain_datasets(coco_root, num=2, seed=5, effects=[""],
                                                overwrite=True)
        assert redone["sets"] == {paths.EVAL_BASE: "written"}
        assert copy.read_bytes() == source.read_bytes()
        # New val2014 annotations (a regenerated set) rewrite the set without being asked.
        source.write_bytes(original)
        annotations.write_text(annotations.read_text() + "\n")
        again = make_domain_datasets(coco_root, num=2, seed=5, effects=[""])
        assert again["sets"] == {paths.EVAL_BASE: "written"} and copy.read_bytes() == original
    finally:
        source.write_bytes(original)
        annotations.write_bytes(original_annotations)


def test_bad_image_in_pool_is_skipped_and_num_beyond_pool_takes_pool(synthetic_coco, tmp_path):
    root = tmp_path / "coco"
    shutil.copytree(synthetic_coco, root)
    val = load_coco_annotations(paths.annotation_file(root, "val2014"))
    pool = eval_pool_image_ids(val)
    folder = paths.image_dir(root, "val2014")
    (folder / paths.image_file_name("val2014", pool[0])).unlink()
    broken = folder / paths.image_file_name("val2014", pool[1])
    broken.write_bytes(broken.read_bytes()[:500])
    run = subprocess.run([sys.executable, str(SCRIPT), "--coco_root", str(root), "--num", "1000",
                          "--seed", "0"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert f"sample of {len(pool) - 2} images (seed 0)" in run.stdout
    assert "none of them is a training image" in run.stdout
    assert f"exceeds the {len(pool) - 2} usable images of the pool" in run.stderr
    assert "missing image file" in run.stderr and "corrupt or truncated image" in run.stderr
    ids = [im["id"] for im in load(root, "val2014_random1k_dark")["images"]]
    assert sorted(ids) == sorted(pool[2:])


def test_cli_bad_flags(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--num", "0"], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 2 and "--num must be >= 1" in run.stderr
    run = subprocess.run([sys.executable, str(SCRIPT), "--coco_root", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error: annotation file not found")


# ----------------------------------------------------------------------------- composition

# Of the 8 held-out images of the test set (the first 8 of 16 val2014 images), these two have
# no labelled person: no annotation at all, and only people with num_keypoints = 0.
PERSON_FREE = {2000005: "no annotation", 2000002: "only num_keypoints = 0"}


def test_uniform_draw_keeps_person_free_images_and_records_the_composition(coco_root):
    val = load_coco_annotations(paths.annotation_file(coco_root, "val2014"))
    held = held_out_val_image_ids(val)
    assert len(held) == 8
    assert {i for i in held if not has_labelled_person(val.anns.get(i, []))} == set(PERSON_FREE)
    assert val.anns[2000005] == [] and val.anns[2000002] and \
        all(a["num_keypoints"] == 0 for a in val.anns[2000002])
    for num in (7, 8):      # N images whenever N readable ones are held out
        result = make_domain_datasets(coco_root, num=num, seed=0)
        assert len(result["image_ids"]) == num and result["pool"] == 8
    assert set(result["image_ids"]) == set(held)
    assert result["without_people"] == 2 and result["people_only"] is False
    for data_type in paths.EVAL_DATATYPES:
        info = load(coco_root, data_type)["info"]
        assert info["composition"] == {"pool": "held-out val2014 images", "pool_images": 8,
                                       "people_only": False, "seed": 0, "images": 8,
                                       "images_without_people": 2}
        assert info["domain_set"]["people_only"] is False
    # people only: another draw (the signature records the pool), so every set is rewritten
    only = make_domain_datasets(coco_root, num=8, seed=0, people_only=True)
    assert set(only["sets"].values()) == {"written"}
    assert sorted(only["image_ids"]) == sorted(set(held) - set(PERSON_FREE))
    assert only["without_people"] == 0 and only["pool"] == 6
    info = load(coco_root, "val2014_random1k_dark")["info"]
    assert info["composition"] == {"pool": "held-out val2014 images with a labelled person",
                                   "pool_images": 6, "people_only": True, "seed": 0,
                                   "images": 6, "images_without_people": 0}
    names = sorted(p.name for p in paths.image_dir(coco_root, "val2014_random1k_dark").iterdir())
    assert names == sorted(paths.image_file_name("val2014", i) for i in only["image_ids"])
    again = make_domain_datasets(coco_root, num=8, seed=0, people_only=True)
    assert set(again["sets"].values()) == {"kept"}
    back = make_domain_datasets(coco_root, num=8, seed=0)
    assert set(back["sets"].values()) == {"written"} and back["image_ids"] == result["image_ids"]


def test_a_set_recorded_before_the_pool_was_part_of_the_draw_is_rewritten(coco_root):
    make_domain_datasets(coco_root, num=3, seed=7, effects=[""])
    ann_path = paths.annotation_file(coco_root, paths.EVAL_BASE)
    data = json.loads(ann_path.read_text())
    del data["info"]["domain_set"]["people_only"]         # as an older version wrote it
    ann_path.write_text(json.dumps(data))
    redone = make_domain_datasets(coco_root, num=3, seed=7, effects=[""])
    assert redone["sets"] == {paths.EVAL_BASE: "written"}
    assert load(coco_root, paths.EVAL_BASE)["info"]["domain_set"]["people_only"] is False


def test_pool_leaves_out_refused_and_repeated_image_entries(tmp_path):
    """The held-out block counts the file's entries as written (model.coco); of those, an
    entry without a size and a repeated id are not images to draw."""
    def image(i, **extra):
        return dict({"id": i, "width": 64, "height": 48, "file_name": f"{i}.jpg"}, **extra)
    kp = [10, 10, 2] * 17
    data = {"images": [image(1), image(2, width=None), image(1), image(3), image(4), image(5)],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
                             "bbox": [5, 5, 20, 20], "area": 400.0, "keypoints": kp,
                             "num_keypoints": 17}],
            "categories": [{"id": 1, "name": "person"}]}
    path = tmp_path / "val.json"
    path.write_text(json.dumps(data))
    val = load_coco_annotations(path)
    assert held_out_val_image_ids(val) == [1, 2, 1]             # the first half, as written
    assert eval_pool_image_ids(val) == [1]
    assert eval_pool_image_ids(val, people_only=True) == [1]
    data["annotations"] = []
    path.write_text(json.dumps(data))
    assert eval_pool_image_ids(load_coco_annotations(path), people_only=True) == []


def test_cli_people_only(coco_root):
    base = [sys.executable, str(SCRIPT), "--coco_root", str(coco_root), "--num", "8",
            "--effects", "", "--seed", "0"]
    run = subprocess.run(base + ["--people_only", "true"], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert ("sample of 6 images (seed 0) drawn only from the 6 held-out val2014 images with "
            "people: none of them is a training image; 0 of 6 have no labelled person"
            in run.stdout)
    run = subprocess.run(base, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert ("from the 8 held-out val2014 images with and without people" in run.stdout
            and "2 of 8 have no labelled person" in run.stdout)
    for bad, message in ((["--people_only", "true", "--people_only", "no"],
                          "error: --people_only given as both true and false"),
                         (["--people_only", "maybe"], "expected a boolean")):
        run = subprocess.run(base + bad, capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and "Traceback" not in run.stderr
        assert message in run.stderr.strip().splitlines()[-1]


def test_the_classifier_reads_every_image_of_a_set_with_person_free_images(coco_root):
    """The domain classifier predicts per image, from the annotation file's image list, so
    images without people get their probabilities like any other."""
    from train_domain_classifier.data import load_image_refs      # torch only here
    ids = make_domain_datasets(coco_root, num=8, seed=0, effects=["_dark"])["image_ids"]
    refs = load_image_refs(coco_root, "val2014_random1k_dark")
    assert [r.image_id for r in refs] == ids and set(PERSON_FREE) <= set(ids)


def test_the_summary_says_how_the_sets_were_composed(coco_root, tmp_path):
    from model.report import collect, sections
    make_domain_datasets(coco_root, num=8, seed=0)
    results = collect.collect(coco_root, tmp_path / "eval", tmp_path / "weights",
                              tmp_path / "log", tmp_path / "domain", tmp_path / "out")
    # without evaluation runs every image of the set counts
    assert results.evaluation["val2014_random1k_dark"].composition == {
        "recorded": load(coco_root, "val2014_random1k_dark")["info"]["composition"],
        "images": 8, "without_people": 2}
    text = "\n".join(sections.section_ap(results))
    assert ("| dark | 8 | 2 (25.0 %) | 8 held-out val2014 images, with and without people "
            "(seed 0) |") in text
    assert "| the fork's sets | 1000 | about half |" in text
    assert text.index("The fork's published numbers") < text.index("no labelled person")
    # the evaluation's N images (the first N of the set) are what the share is of
    first = [im["id"] for im in load(coco_root, paths.EVAL_BASE)["images"][:3]]
    entry = collect.set_composition(coco_root, paths.EVAL_BASE, 3, [])
    assert entry["images"] == 3
    assert entry["without_people"] == len(set(first) & set(PERSON_FREE))
    paths.annotation_file(coco_root, "val2014_random1k_resolution").unlink()
    results = collect.collect(coco_root, tmp_path / "eval", tmp_path / "weights",
                              tmp_path / "log", tmp_path / "domain", tmp_path / "out")
    assert "| low resolution | n/a | n/a | n/a (no annotation file) |" in \
        "\n".join(sections.section_ap(results))
