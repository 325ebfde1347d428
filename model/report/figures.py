"""The summary's figures: each is drawn when its inputs exist and skipped with a logged reason
otherwise (model.plots draws them)."""
import logging
import math
from pathlib import Path

import cv2
import numpy as np

from model import draw, files, paths, plots
from model.domains import (DOMAIN_LABELS, ENSEMBLE, EXPERT_EFFECTS, EVAL_MODELS, MODEL_LABELS,
                           NORMAL, TEST_EFFECTS)
from model.errors import UserError
from model.images import read_image
from model.keypoints import group_by_image
from model.report.checks import MEASURES, ap_table, fork_table
from model.report.collect import domain_label
from model.runs import RunLayout
from model.uncertainty import ause

log = logging.getLogger(__name__)

FIG_AP = "ap_table.png"
FIG_EXPERTS = "training_experts.png"
FIG_CLASSIFIER = "training_classifier.png"
FIG_SPARSIFICATION = "sparsification_{measure}.png"
FIG_EXAMPLES = "examples.png"
EXAMPLES_PER_DOMAIN = 3


def figure_ap(results, out_dir):
    ours = ap_table(results).to_numpy()
    if not np.isfinite(ours).any():
        return None, "no AP of any model"
    path = Path(out_dir) / FIG_AP
    plots.plot_ap_heatmap(path, {"ours": ours, "fork (published)": fork_table().to_numpy()},
                          [DOMAIN_LABELS[t] for t in TEST_EFFECTS],
                          [MODEL_LABELS[e] for e in EVAL_MODELS],
                          "COCO keypoint AP, single scale")
    return path, None


def figure_experts(results, out_dir):
    panels = {}
    for effect, x in results.experts.items():
        lg = x.log
        if not lg or "epoch" not in lg:
            continue
        series = {k: (lg["epoch"], lg[k]) for k in ("train_loss", "val_loss")
                  if k in lg and any(math.isfinite(v) for v in lg[k])}
        if series:
            panels[MODEL_LABELS[effect]] = {"ylabel": "loss (sum of the stages)", "log": True,
                                            "series": series}
    if not panels:
        return None, "no expert log.csv"
    path = Path(out_dir) / FIG_EXPERTS
    plots.plot_curves(path, panels, "pose experts: training and validation loss")
    return path, None


def figure_classifier(results, out_dir):
    lg = results.classifier.log
    if not lg or "epoch" not in lg:
        return None, "no classifier log.csv"
    panels = {}
    for name, keys in (("loss", ("train_loss", "val_loss")),
                       ("accuracy", ("train_accuracy", "val_accuracy"))):
        series = {k: (lg["epoch"], lg[k]) for k in keys if k in lg}
        if series:
            panels[name] = {"ylabel": name, "log": False, "series": series}
    path = Path(out_dir) / FIG_CLASSIFIER
    plots.plot_curves(path, panels, "domain classifier")
    return path, None


def figure_sparsification(results, out_dir, measure):
    panels = {}
    for t, table in results.sparsification.items():
        rows = table[table["measure"] == measure]
        curves = {}
        for model in rows["model"].unique():
            sel = rows.loc[rows["model"] == model, ["fraction_removed", "mean_error",
                                                    "oracle_mean_error"]].to_numpy(np.float64)
            curves[model] = (sel[:, 0], sel[:, 1], sel[:, 2], ause(sel[:, 0], sel[:, 1],
                                                                   sel[:, 2]))
        if curves:
            panels[domain_label(t)] = curves
    if not panels:
        return None, f"no sparsification CSV with {measure} curves"
    path = Path(out_dir) / FIG_SPARSIFICATION.format(measure=measure)
    plots.plot_sparsification(path, panels, f"{measure} disagreement")
    return path, None


def example_image_ids(results, coco_root, count=EXAMPLES_PER_DOMAIN):
    """The first `count` evaluated images of the normal set with at least one labelled person
    (the same ids in every domain: the domain sets are copies of one image selection)."""
    normal = paths.EVAL_DATATYPES[0]
    ann = paths.annotation_file(coco_root, normal)
    if not ann.is_file():
        return []
    gt = files.read_json(ann, "annotation file")
    people = {a["image_id"] for a in gt.get("annotations", [])
              if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0}
    runs = results.evaluation[normal].runs
    order = next((r["image_ids"] for r in runs.values() if r.get("image_ids")),
                 [im["id"] for im in gt.get("images", [])])
    return [int(i) for i in order if i in people][:count]


def _example_cell(image, records, caption, size):
    """One drawn example (RGB) and its caption. A low-resolution image is drawn at the normal
    image's size, so its skeleton has the same line width as the other rows' and the cells
    compare directly."""
    people = draw.coco_annotations_to_people(records)
    if image.shape[:2] != size:
        fy, fx = size[0] / image.shape[0], size[1] / image.shape[1]
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        found = people[..., 2] > 0       # pixel centres move as cv2.resize moves them
        people[..., 0] = np.where(found, (people[..., 0] + 0.5) * fx - 0.5, people[..., 0])
        people[..., 1] = np.where(found, (people[..., 1] + 0.5) * fy - 0.5, people[..., 1])
        caption += f" (shown x{fy:.2g})"
    drawn = draw.draw_people(image, people)
    return cv2.cvtColor(drawn, cv2.COLOR_BGR2RGB), caption


def _example_row(layout, t, entry, ids, coco_root, reference):
    """The drawn examples of one test set: the routed ensemble's predictions, else the first
    expert's that exist."""
    n = entry.num_images
    effect = next((e for e in (ENSEMBLE, NORMAL, *EXPERT_EFFECTS)
                   if n is not None and layout.results_file(t, e, n).is_file()), None)
    by_image = {}
    if effect is not None:
        by_image = group_by_image(files.read_json(layout.results_file(t, effect, n),
                                                  "keypoint results"))
    cells = []
    for image_id in ids:
        image = read_image(paths.image_dir(coco_root, t) / paths.image_file_name(t, image_id))
        if image is None:
            continue
        records = by_image.get(image_id, [])
        caption = (f"{image_id}: {len(records)} people, {MODEL_LABELS[effect]}"
                   if effect is not None else f"{image_id}: no predictions")
        size = reference.setdefault(image_id, image.shape[:2])
        cells.append(_example_cell(image, records, caption, size))
    return cells


def figure_examples(results, out_dir, coco_root, eval_dir):
    ids = example_image_ids(results, coco_root)
    if not ids:
        return None, "no annotated images of the normal test set"
    layout = RunLayout(eval_dir)
    rows, reference = [], {}     # image id -> (height, width) in the normal test set
    for t, entry in results.evaluation.items():
        cells = _example_row(layout, t, entry, ids, coco_root, reference)
        if cells:
            rows.append((domain_label(t), cells))
    if not rows:
        return None, "none of the example images could be read"
    path = Path(out_dir) / FIG_EXAMPLES
    plots.plot_image_grid(path, rows, "predictions per test domain")
    return path, None


def write_figures(results, out_dir, coco_root, eval_dir):
    """Every figure whose inputs exist; the others are skipped with a logged reason.
    Returns the written paths."""
    makers = [("AP heatmap", lambda: figure_ap(results, out_dir)),
              ("expert training curves", lambda: figure_experts(results, out_dir)),
              ("classifier training curves", lambda: figure_classifier(results, out_dir))]
    makers += [(f"{m} sparsification", lambda m=m: figure_sparsification(results, out_dir, m))
               for m in MEASURES]
    makers.append(("example predictions",
                   lambda: figure_examples(results, out_dir, coco_root, eval_dir)))
    written, skipped = [], 0
    for name, make in makers:
        try:
            path, reason = make()
        except UserError as e:
            path, reason = None, str(e)
        if path is None:
            skipped += 1
            log.warning("figure %s skipped: %s", name, reason)
        else:
            written.append(path)
    log.info("figures: %d written, %d skipped", len(written), skipped)
    return written
