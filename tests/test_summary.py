"""The experiment summary (model/report/): right numbers in the right cells, n/a where an
input is missing, the acceptance checks, the figures."""
import json
import shutil

import cv2
import numpy as np
import pytest
from PIL import Image

from model import domains, evaluation, files, machine, paths, runs
from model import ensemble as ens
from model.report import uncertainty as report_unc
from model.report import write_summary
from model.report.checks import MEASURES
from model.runs import RunLayout
from model.state import CSV_HEADER as EXPERT_HEADER

N = 6                                   # images per test set
BLUR = paths.EVAL_BASE + "_motion_blur"
NORMAL = paths.EVAL_DATATYPES[0]
# x, y of the 17 COCO keypoints of a standing person, in units of its height
BODY = np.array([[0, .05], [.02, .03], [-.02, .03], [.04, .04], [-.04, .04], [.12, .18],
                 [-.12, .18], [.16, .35], [-.16, .35], [.18, .5], [-.18, .5], [.08, .52],
                 [-.08, .52], [.09, .75], [-.09, .75], [.09, .97], [-.09, .97]])


def person(cx, top, height):
    kp = np.zeros((17, 3))
    kp[:, 0] = cx + BODY[:, 0] * height
    kp[:, 1] = top + BODY[:, 1] * height
    kp[:, 2] = 2
    return kp


def people_of(i):
    """Image i: one person, two apart, or (i = 3) two overlapping (a crowded image)."""
    if i % 3 == 0:
        out = [person(60, 15, 80)]
        return out + [person(66, 18, 80)] if i == 3 else out
    if i % 3 == 1:
        return [person(45, 20, 85), person(115, 25, 80)]
    return [person(80, 20, 90)]


def noise(domain, expert):
    """Pixel noise of an expert's keypoints on a domain: small on its own domain."""
    own = {"_resolution": ""}.get(domain, domain)
    return 1.0 if expert == own else 7.0


def write_scene(root, with_uncertainty=True):
    """coco/, eval/, domain/ of four test sets, each evaluated by the real writers: the three
    experts (noisy copies of the ground truth), the routed ensemble (model.ensemble.run) and
    a fused one; uncertainty by model.report.uncertainty.analyse."""
    rng = np.random.default_rng(0)
    coco, eval_dir, domain = root / "coco", root / "eval", root / "domain"
    ids = [500 + i for i in range(N)]
    for effect in domains.TEST_EFFECTS:
        t = paths.EVAL_BASE + effect
        s = 0.5 if effect == "_resolution" else 1.0
        images, anns = [], []
        folder = paths.image_dir(coco, t)
        folder.mkdir(parents=True)
        for i, image_id in enumerate(ids):
            w, h = int(160 * s), int(120 * s)
            images.append({"id": image_id, "width": w, "height": h,
                           "file_name": paths.image_file_name(t, image_id)})
            cv2.imwrite(str(folder / paths.image_file_name(t, image_id)),
                        np.full((h, w, 3), 90 + 20 * i, np.uint8))
            for kp in people_of(i):
                kp = kp * [s, s, 1]
                x0, y0 = kp[:, :2].min(0)
                x1, y1 = kp[:, :2].max(0)
                anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                             "iscrowd": 0, "num_keypoints": 17,
                             "bbox": [x0, y0, x1 - x0, y1 - y0],
                             "area": 0.6 * (x1 - x0) * (y1 - y0),
                             "keypoints": kp.ravel().tolist()})
        files.write_json(paths.annotation_file(coco, t), {
            "images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "person"}]})
        gt = evaluation.load_annotations(paths.annotation_file(coco, t))
        for e in domains.EXPERT_EFFECTS:
            records = []
            for a in anns:
                kp = np.asarray(a["keypoints"]).reshape(17, 3).copy()
                kp[:, :2] += rng.normal(0, noise(effect, e) * s * rng.uniform(0.3, 1.5),
                                        (17, 2))
                kp[:, 2] = 1
                records.append({"image_id": a["image_id"], "category_id": 1,
                                "keypoints": kp.ravel().round(2).tolist(), "score": 0.9})
            write_run(eval_dir, t, e, gt, ids, records, seconds=0.5 + len(e) / 100)
        probs = {"": [.9, .05, .05], "_dark": [.1, .8, .1], "_motion_blur": [.1, .1, .8],
                 "_resolution": [.6, .1, .3]}[effect]
        files.write_json(domain / f"{t}.json",
                         [{"image_id": i, "effect_prob": probs} for i in ids])
        ens.run("route", t, eval_dir, coco, domain / f"{t}.json", N)
        folder = RunLayout(eval_dir).folder(t, "_ensemble", N)
        write_run(eval_dir, t, "_ensemble", gt, ids,
                  files.read_json(folder / runs.RESULTS_JSON), seconds=0.001)
        normal = files.read_json(RunLayout(eval_dir).results_file(t, "", N))
        if effect != "_resolution":            # the fused ensemble missing on one domain
            write_run(eval_dir, t, "_ensemble_fuse", gt, ids, normal, seconds=2.0)
        if with_uncertainty:
            report_unc.analyse(t, eval_dir, coco, N)
    return coco, eval_dir, domain


def write_run(eval_dir, t, effect, gt, ids, records, seconds):
    folder = RunLayout(eval_dir).folder(t, effect, N)
    files.write_json(folder / runs.RESULTS_JSON, records)
    files.write_json(folder / runs.RUN_JSON, {"image_ids": ids, "seed": 0})
    rows = evaluation.breakdown(gt, records, ids)
    rows += [("all", "prediction_seconds", seconds), ("all", "seconds_per_image", seconds / N)]
    runs.write_metrics(folder / runs.METRICS_CSV, rows)


def write_training(root, accuracy=0.995):
    """Experts' log.csv/run.json (model.train's header) and a classifier run with its log,
    best.json and validate.py's metrics.json (written by the real writer)."""
    from train_domain_classifier import inference
    from train_domain_classifier.trainer import CSV_HEADER
    for k, e in enumerate(domains.EXPERT_EFFECTS):
        rows = [{"epoch": ep, "iteration": 60 * ep, "lr": 1e-3, "train_loss": 900 / ep + k,
                 "val_loss": 800 / ep + k, "val_loss_last_stage": 100 / ep,
                 "seconds": 10.0, "samples_per_s": 50.0} for ep in range(1, 5)]
        folder = root / "weights" / f"weights{e}"
        files.write_csv(folder / "log.csv", [[r[h] for h in EXPERT_HEADER] for r in rows],
                        EXPERT_HEADER)
        files.write_json(folder / "run.json", {"config": "small", "effect": e, "seed": 7})
    run = root / "clog" / "2024-05-01_10-00"
    rows = [{"epoch": ep, "lr": 1e-3, "train_loss": 1 / ep, "train_accuracy": 0.7 + ep / 20,
             "val_loss": 1.2 / ep, "val_accuracy": 0.6 + ep / 20, "seconds": 3.0}
            for ep in range(1, 4)]
    files.write_csv(run / "log.csv", [[r[h] for h in CSV_HEADER] for r in rows], CSV_HEADER)
    files.write_json(run / "best.json", {"epoch": 3, "val_accuracy": 0.75, "val_loss": 0.4,
                                         "checkpoint": "checkpoints/model_0003.pth", "seed": 7})
    n = 600
    right = int(round(accuracy * n))
    confusion = [[200, 0, 0], [0, 200, 0], [0, n - right, right - 400]]
    metrics = {"loss": 0.05, "accuracy": right / n, "samples": n,
               "precision": [1, 1, 1], "recall": [1, 1, 1], "confusion": confusion}
    inference.write_validation(root / "results" / "classifier_validation", metrics,
                               run / "checkpoints" / "model_0003.pth",
                               {"epoch": 3, "arch": "resnet18", "input_size": 112, "seed": 7})
    return root / "weights", root / "clog"


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    root = tmp_path_factory.mktemp("summary_scene")
    coco, eval_dir, domain = write_scene(root)
    weights, clog = write_training(root)
    return {"root": root, "coco_root": coco, "eval_dir": eval_dir, "domain_dir": domain,
            "weights_dir": weights, "classifier_log_dir": clog, "out_dir": root / "results"}


def table_rows(text, heading, after=None):
    """Rows (lists of cells) of the first markdown table below `heading` (and below the line
    starting with `after`, when given)."""
    lines = text.splitlines()
    i = lines.index(heading)
    if after is not None:
        i = next(k for k in range(i, len(lines)) if lines[k].startswith(after))
    i = next(k for k in range(i, len(lines)) if lines[k].startswith("|"))
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def table(text, heading, after=None):
    """{first cell: the other cells} of that table."""
    return {r[0]: r[1:] for r in table_rows(text, heading, after)}


def metric(eval_dir, t, effect, subset, name):
    return runs.read_metrics(RunLayout(eval_dir).folder(t, effect, N)
                                   / runs.METRICS_CSV)[(subset, name)]


def is_png(path):
    with Image.open(path) as im:
        im.verify()
        return im.format == "PNG"


@pytest.fixture(scope="module")
def full(scene):
    """The summary of the whole scene, written once: (scene, its markdown text)."""
    timings = [("synthetic_coco", 12.5, "ran"), ("masks", 0.0, "skipped")]
    files.write_json(scene["out_dir"] / "steps" / "masks.json", {"command": [], "seconds": 3.25})
    text = write_summary(scene["coco_root"], scene["eval_dir"], scene["weights_dir"],
                         scene["classifier_log_dir"], scene["domain_dir"],
                         scene["out_dir"], timings, {"seed": 3, "config": "small"},
                         steal_percent=2.345)
    return scene, text


def test_full_scene_ap_tables(full):
    scene, text = full
    assert (scene["out_dir"] / "summary.md").read_text() == text
    ours = table(text, "## Keypoint AP (COCO, single scale)")
    assert list(ours) == ["normal", "dark", "motion blur", "low resolution"]
    for row, effect in zip(ours, domains.TEST_EFFECTS):
        t = paths.EVAL_BASE + effect
        for col, model in enumerate(domains.EVAL_MODELS):
            if (effect, model) == ("_resolution", "_ensemble_fuse") or \
                    model in domains.BASELINES:          # the scene has no baseline runs
                assert ours[row][col] == "n/a"
            else:
                assert ours[row][col] == f"{metric(scene['eval_dir'], t, model, 'all', 'AP'):.3f}"
    # each domain's own expert is the accurate one, so routing picks the best column
    assert float(ours["motion blur"][2]) > float(ours["motion blur"][0])
    assert ours["motion blur"][3] == ours["motion blur"][2]
    assert "low resolution: fused ensemble" in text      # the n/a is explained
    fork = table(text, "## Keypoint AP (COCO, single scale)", "The fork's published")
    assert fork["normal"] == ["0.509", "0.387", "0.094", "0.509", "n/a", "n/a", "n/a"]
    assert fork["low resolution"] == ["0.335", "0.224", "0.053", "0.335", "n/a", "n/a", "n/a"]


def test_full_scene_difficult_cases_and_uncertainty(full):
    scene, text = full
    hard = table_rows(text, "## Difficult cases")
    assert len(hard) == 4 * 5 - 1
    row = next(r[2:] for r in hard if r[:2] == ["motion blur", "dark expert"])

    def dark(subset, name):
        return f"{metric(scene['eval_dir'], BLUR, '_dark', subset, name):.3f}"
    pck = evaluation.PCK_NAME
    assert row[:4] == [dark("all", "AP"), dark("all", pck), dark("difficult_joints", "AP"),
                       dark("difficult_joints", pck)]
    assert row[4:] == ["1", dark("crowded", "AP"), dark("crowded", pck)]   # image 503

    q = json.loads((RunLayout(scene["eval_dir"]).uncertainty_stem(BLUR, N).parent /
                    f"{BLUR}-three-model-epoch100-open-pose-single-scale-{N}-quality.json")
                   .read_text())
    # detection level: the judged model's cases and AUROC, as the analysis wrote them
    d, c = q["detection"]["models"]["ensemble"], q["counts"]
    assert table(text, "## Uncertainty quality")["motion blur"] == [
        str(c["people"]), f"{c['flagged']} ({c['flagged'] / c['people']:.0%})", "ensemble",
        str(d["correct"]), str(d["false_positives"]), str(d["misses"])] + [
        "n/a" if d["auroc"][m] is None else f"{d['auroc'][m]:.3f}" for m in MEASURES]
    # pose level: 9 people per set (fewer than 10), so every statistic is n/a, with the count
    corr = q["pose"]["correlation"]["translational"]["ensemble"]
    assert corr["n"] == 9 and corr["spearman_r"] is None
    cells = next(r for r in table_rows(text, "## Uncertainty quality", "**Pose level.**")
                 if r[:2] == ["motion blur", "translational"])
    assert cells[2:] == ["9", "ensemble"] + ["n/a"] * 5
    rc = {r["rejected_fraction"]: r for r in q["risk_coverage"]
          if r["measure"] == "translational" and r["model"] == "ensemble"}
    cells = next(r for r in table_rows(text, "## Uncertainty quality", "**Risk-coverage**")
                 if r[:2] == ["motion blur", "translational"])
    assert cells[2:] == ["ensemble", f"{rc[0.0]['ap']:.3f}", f"{rc[0.2]['ap_kept_people']:.3f}",
                         f"{rc[0.2]['ap']:.3f}"]


def test_full_scene_checks(full):
    scene, text = full
    q = json.loads(RunLayout(scene["eval_dir"]).uncertainty_file(BLUR, N, "-quality.json")
                   .read_text())
    corr = q["pose"]["correlation"]["translational"]["ensemble"]
    checks = {c["name"]: c for c in json.loads(
        (scene["out_dir"] / "summary.json").read_text())["checks"]}
    normal_ap = metric(scene["eval_dir"], NORMAL, "", "all", "AP")
    c = checks["normal expert AP >= 0.5 on the normal test set"]
    assert c["status"] == ("PASS" if normal_ap >= 0.5 else "FAIL")
    assert c["measured"] == f"AP {normal_ap:.3f}"
    assert checks["motion-blur expert beats the normal expert on the motion-blur set"][
        "status"] == "PASS"
    assert checks["domain classifier validation accuracy >= 98%"]["measured"].startswith(
        "99.50% (validate.py, 600 samples)")
    spearman = next(v for k, v in checks.items() if k.startswith("translational"))
    # 9 people per set reach the pose level: n/a on every domain, never a PASS by default
    assert corr["n"] == 9 and spearman["status"] == "n/a"
    assert spearman["measured"] == "error of ensemble; " + every_domain(
        "n/a (9 people, fewer than 10)")


def test_full_scene_classifier_training_and_figures(full):
    scene, text = full
    # torch, which train_domain_classifier needs, is loaded only by the tests that use it
    from train_domain_classifier.inference import distribution
    dist = table(text, "## Domain classifier", "Predicted domain")
    probs = files.read_json(scene["domain_dir"] / f"{NORMAL}_resolution.json")
    counts = distribution(probs)["counts"]
    assert dist["low resolution"][:4] == [str(N), f"{counts['normal']} (100.0%)", "0 (0.0%)",
                                          "0 (0.0%)"]
    ensembles = table(text, "## Ensembles")
    assert ensembles["dark"][:3] == ["0", str(N), "0"]
    assert "| routed to motion blur |" in text

    training = table(text, "## Training")
    assert training["dark expert"][:5] == ["4", "240", "226.00", "201.00", "201.00 (epoch 4)"]
    assert "Domain classifier (" in text and "3 epochs" in text

    times = table(text, "## Wall time per step")
    assert times["synthetic_coco"] == ["ran", "12.5"]
    assert times["masks"] == ["skipped", "0.0 (took 3.2 when it ran)"]
    assert times["**total**"] == ["1 ran, 1 skipped", "**12.5**"]
    assert (f"Machine: {machine.describe_line()} (the skipped steps ran earlier, perhaps "
            "elsewhere). While the steps ran, the hypervisor gave 2.3 % of the CPU time") in text
    written = json.loads((scene["out_dir"] / "summary.json").read_text())
    assert (written["machine"], written["steal_percent"]) == (machine.describe_line(), 2.345)
    assert "Seed: **3**" in text and "domain classifier 7" in text

    for name in ("ap_table.png", "training_experts.png", "training_classifier.png",
                 "examples.png"):
        assert is_png(scene["out_dir"] / name), name
        assert f"({name})" in text
    # the pose level has fewer than 10 people per set here: no sparsification curves
    assert not list(scene["out_dir"].glob("sparsification_*.png"))
    assert "## Notes" not in text
    assert not list(scene["out_dir"].glob(".*tmp"))


def fake_run(eval_dir, t, effect, ap, n=N):
    """A run folder whose metrics.csv (the evaluation's writer) says AP = ap."""
    folder = RunLayout(eval_dir).folder(t, effect, n)
    runs.write_metrics(folder / runs.METRICS_CSV,
                             [("all", name, ap if name == "AP" else 0.0)
                              for name in evaluation.STAT_NAMES])


def quality_dict(rho, p, model="ensemble", n=40):
    """A quality.json's content with model.report.uncertainty.analyse's keys: pose level
    rho/p over n people (n/a below 10, as the analysis writes it), a detection level of 50
    people (6 found by one expert) and risk-coverage."""
    corr = {"n": n, "pearson_r": rho, "pearson_p": p, "spearman_r": rho, "spearman_p": p}
    if n < 10:
        corr.update(pearson_r=None, pearson_p=None, spearman_r=None, spearman_p=None,
                    note=f"n/a: {n} people (fewer than 10)")
    elif rho is None:
        corr["note"] = "constant error: correlation undefined"
    return {
        "counts": {"people": 50, "flagged": 6},
        "detection": {"people": 50, "found_by_fewer_than_two": 6, "models": {model: {
            "cases": 52, "correct": 38, "false_positives": 9, "misses": 5,
            "auroc": {"translational": 0.8125, "rotational": 0.75}}}},
        "pose": {"min_people": 10, "people": {model: n},
                 "correlation": {m: {model: corr} for m in MEASURES},
                 "ause": {m: {model: 0.05 if n >= 10 else None} for m in MEASURES}},
        "risk_coverage": [{"measure": m, "model": model, "rejected_fraction": f, "ap": 0.4,
                           "ap_kept_people": 0.4 + f} for m in MEASURES
                          for f in (0.0, 0.1, 0.2)]}


def fake_quality(eval_dir, t, rho, p, model="ensemble"):
    """A quality.json (quality_dict) written where the summary reads it."""
    stem = RunLayout(eval_dir).uncertainty_stem(t, N)
    files.write_json(stem.with_name(stem.name + "-quality.json"), quality_dict(rho, p, model))


def controlled(tmp_path, normal_ap, blur_aps, accuracy, rho, p, model="ensemble"):
    """The summary's checks of fake inputs; every test domain's uncertainty rho, p."""
    eval_dir = tmp_path / "eval"
    fake_run(eval_dir, NORMAL, "", normal_ap)
    fake_run(eval_dir, BLUR, "", blur_aps[0])
    fake_run(eval_dir, BLUR, "_motion_blur", blur_aps[1])
    for effect in domains.TEST_EFFECTS:
        if paths.EVAL_BASE + effect not in (NORMAL, BLUR):
            fake_run(eval_dir, paths.EVAL_BASE + effect, "", 0.3)
        fake_quality(eval_dir, paths.EVAL_BASE + effect, rho, p, model)
    best = tmp_path / "clog" / "2024-05-01_10-00"
    files.write_csv(best / "log.csv", [[1, 0.5]], ["epoch", "val_accuracy"])
    files.write_json(best / "best.json", {"epoch": 1, "val_accuracy": accuracy})
    write_summary(tmp_path / "coco", eval_dir, tmp_path / "weights",
                  tmp_path / "clog", tmp_path / "domain", tmp_path / "out",
                  figures=False)
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    return [(c["status"], c["measured"]) for c in data["checks"]]


def every_domain(text):
    return "; ".join(f"{domains.DOMAIN_LABELS[e]}: {text}" for e in domains.TEST_EFFECTS)


def test_checks_pass(tmp_path):
    checks = controlled(tmp_path, 0.5, (0.1, 0.25), 0.98, 0.3, 0.009)
    assert checks == [("PASS", "AP 0.500"), ("PASS", "AP 0.250 vs 0.100"),
                      ("PASS", "98.00% (best.json, epoch 1)"),
                      ("PASS", "error of ensemble; "
                               + every_domain("rho 0.300, p 0.009, 40 people"))]


def test_checks_fail(tmp_path):
    checks = controlled(tmp_path, 0.499, (0.2, 0.2), 0.979, 0.3, 0.011, model="normal")
    assert checks == [("FAIL", "AP 0.499"), ("FAIL", "AP 0.200 vs 0.200"),
                      ("FAIL", "97.90% (best.json, epoch 1)"),
                      ("FAIL", "error of normal; "
                               + every_domain("rho 0.300, p 0.011, 40 people"))]
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "0 of 4 pass, 4 fail, 0 n/a" in text and text.count("**FAIL**") == 4


def test_negative_or_undefined_correlation_fails(tmp_path):
    assert controlled(tmp_path, 0.6, (0.1, 0.3), 0.99, -0.4, 1e-6)[3][0] == "FAIL"
    shutil.rmtree(tmp_path)
    tmp_path.mkdir()
    status, measured = controlled(tmp_path, 0.6, (0.1, 0.3), 0.99, None, None)[3]
    assert status == "FAIL" and "undefined" in measured


def test_nothing_there(tmp_path):
    text = write_summary(tmp_path / "coco", tmp_path / "eval", tmp_path / "weights",
                         tmp_path / "clog", tmp_path / "domain", tmp_path / "out")
    ours = table(text, "## Keypoint AP (COCO, single scale)")
    assert all(cells == ["n/a"] * len(domains.EVAL_MODELS) for cells in ours.values())
    assert table(text, "## Checks: the results must mean something")
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert [c["status"] for c in data["checks"]] == ["n/a"] * 4
    assert "0 of 4 pass, 0 fail, 4 n/a (input missing)." in text
    assert data["figures"] == [] and not list((tmp_path / "out").glob("*.png"))
    assert "Validation accuracy: n/a" in text and "no step timings" in text


def test_num_images_follows_the_runs_and_broken_files_are_notes(tmp_path):
    eval_dir = tmp_path / "eval"
    for model in domains.EVAL_MODELS:
        fake_run(eval_dir, NORMAL, model, 0.3, n=N)
    fake_run(eval_dir, NORMAL, "", 0.9, n=2)             # an older, smaller run
    fake_run(eval_dir, BLUR, "", 0.2, n=4)
    stem = RunLayout(eval_dir).uncertainty_stem(BLUR, 4)
    stem.with_name(stem.name + "-quality.json").write_text("{not json")
    files.write_json(tmp_path / "domain" / f"{NORMAL}.json", [{"image": 1}])
    (RunLayout(eval_dir).folder(BLUR, "_dark", 4) / runs.METRICS_CSV).parent.mkdir()
    (RunLayout(eval_dir).folder(BLUR, "_dark", 4) / runs.METRICS_CSV).write_text("a,b\n1,2\n")
    stem = RunLayout(eval_dir).uncertainty_stem(NORMAL, N)     # a set without ground truth
    files.write_json(stem.with_name(stem.name + "-quality.json"), {"counts": {"people": 5}})
    text = write_summary(tmp_path / "coco", eval_dir, tmp_path / "weights",
                         tmp_path / "clog", tmp_path / "domain", tmp_path / "out",
                         figures=False)
    ours = table(text, "## Keypoint AP (COCO, single scale)")
    assert ours["normal"] == ["0.300"] * len(domains.EVAL_MODELS)
    assert ours["motion blur"][0] == "0.200"
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert data["num_images"][NORMAL] == N and data["num_images"][BLUR] == 4
    notes = "\n".join(data["notes"])
    assert "uses N = 6" in notes and "not valid JSON" in notes and "effect_prob" in notes
    assert "not a metrics CSV" in notes and ours["motion blur"][1] == "n/a"
    assert table(text, "## Uncertainty quality")["normal"] == ["5"] + ["n/a"] * 7
    # with N given, the smaller run is the one summarised
    text = write_summary(tmp_path / "coco", eval_dir, tmp_path / "weights",
                         tmp_path / "clog", tmp_path / "domain", tmp_path / "out",
                         num_images=2, figures=False)
    assert table(text, "## Keypoint AP (COCO, single scale)")["normal"][0] == "0.900"


# ---------------------------------------------------------------- the uncertainty layers

from types import SimpleNamespace

from model import uncertainty as unc
from model.report import checks as report_checks
from model.report import collect as report_collect
from model.report import figures as report_figures
from model.report import sections as report_sections


def per_domain(**quality):
    """Results-like object holding a quality dict per domain (keyed by effect name)."""
    by_name = {domains.EFFECT_NAMES[e]: paths.EVAL_BASE + e for e in domains.TEST_EFFECTS}
    return SimpleNamespace(uncertainty={by_name[k]: q for k, q in quality.items()
                                        if q is not None})


def test_uncertainty_check_judges_every_domain():
    good = quality_dict(0.4, 1e-4)
    check = report_checks._uncertainty_check
    assert check(per_domain(normal=good, dark=good, motion_blur=good,
                            resolution=good))["status"] == "PASS"
    # one domain failing fails the check, whatever the others say
    c = check(per_domain(normal=good, dark=quality_dict(0.4, 0.02), motion_blur=good,
                         resolution=quality_dict(0.5, 0.0, n=7)))
    assert c["status"] == "FAIL" and "dark: rho 0.400, p 0.02, 40 people" in c["measured"]
    assert "low resolution: n/a (7 people, fewer than 10)" in c["measured"]
    # too few people or no analysis on one domain, passes elsewhere: n/a, not PASS
    c = check(per_domain(normal=good, dark=good, motion_blur=quality_dict(0.9, 1e-9, n=9),
                         resolution=good))
    assert c["status"] == "n/a" and "motion blur: n/a (9 people, fewer than 10)" in c["measured"]
    c = check(per_domain(normal=good, dark=good, motion_blur=good))
    assert c["status"] == "n/a"
    assert c["measured"].endswith("low resolution: n/a (no analysis with ground truth)")
    # a negative correlation fails; different judged models are named per domain
    c = check(per_domain(normal=good, dark=good, motion_blur=quality_dict(-0.3, 1e-5),
                         resolution=quality_dict(0.4, 1e-4, model="normal")))
    assert c["status"] == "FAIL" and c["measured"].startswith("normal: rho 0.400")
    assert c["measured"].endswith("low resolution: rho 0.400, p 0.0001, 40 people "
                                  "(error of normal)")


def test_uncertainty_section_shows_both_layers():
    results = per_domain(normal={"counts": {"people": 5, "flagged": 2}},    # no ground truth
                         dark=quality_dict(0.25, 3e-4, n=40),
                         motion_blur=quality_dict(0.5, 0.1, n=7))
    text = "\n".join(report_sections.section_uncertainty(results))
    heading = "## Uncertainty quality"
    assert unc.DETECTION_DEFINITION in text and unc.POSE_DEFINITION in text
    detection = table(text, heading)
    assert detection["normal"] == ["5", "2 (40%)"] + ["n/a"] * 6
    assert detection["dark"] == ["50", "6 (12%)", "ensemble", "38", "9", "5", "0.812", "0.750"]
    pose = {tuple(r[:2]): r[2:] for r in table_rows(text, heading, "**Pose level.**")}
    assert pose[("dark", "translational")] == ["40", "ensemble", "0.250", "0.0003", "0.250",
                                               "0.0003", "0.050"]
    assert pose[("motion blur", "rotational")] == ["7", "ensemble"] + ["n/a"] * 5
    assert ("normal", "translational") not in pose
    per_model = table(text, heading, "Pose level, Spearman")
    assert per_model["dark"] == ["n/a", "n/a", "n/a", "0.250 (0.0003, 40)"]
    risk = {tuple(r[:2]): r[2:] for r in table_rows(text, heading, "**Risk-coverage**")}
    assert risk[("dark", "translational")] == ["ensemble", "0.400", "0.600", "0.400"]


def test_quality_without_the_layers_is_a_note_and_the_figure_shows_the_pose_level(tmp_path):
    stem = RunLayout(tmp_path).uncertainty_stem(BLUR, N)
    old = {"counts": {"people": 40}, "risk_coverage": [],
           "correlation": {m: {"ensemble": {"n": 40, "spearman_r": 0.8, "spearman_p": 1e-9}}
                           for m in MEASURES}}
    files.write_json(stem.with_name(stem.name + "-quality.json"), old)
    notes = []
    assert report_collect.load_uncertainty(tmp_path, BLUR, N, notes) == (None, None)
    assert len(notes) == 1 and "no detection and pose levels; rerun eval/util_ainu.py" in notes[0]
    # a pose level of 12 people: its sparsification curves are the summary's figure
    rng = np.random.default_rng(2)
    u = rng.uniform(size=12)
    _, curve = unc.judge_pose(u, u + rng.normal(0, 0.1, 12))
    files.write_json(stem.with_name(stem.name + "-quality.json"), quality_dict(0.4, 1e-4))
    report_unc.write_csv(stem.with_name(stem.name + "-sparsification.csv"),
                         report_unc.sparsification_table({m: {"ensemble": curve}
                                                          for m in MEASURES}))
    quality, frame = report_collect.load_uncertainty(tmp_path, BLUR, N, notes)
    assert quality["pose"]["people"] == {"ensemble": 40} and len(frame) == 2 * 12
    path, reason = report_figures.figure_sparsification(
        SimpleNamespace(sparsification={BLUR: frame}), tmp_path / "out", "translational")
    assert reason is None and is_png(path)
