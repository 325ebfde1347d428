"""The evaluation results folder: one layout that writes and reads every run.

    <results_dir>/<dataType>-<model>-epoch100-open-pose-single-scale-<N>/   one run folder
        keypoint_results.json   COCO keypoint result records (the model's predictions)
        metrics.csv             subset, metric, value (model.evaluation.breakdown)
        run.json                the run's settings: weights, config, inference settings,
                                the image ids it predicted, prediction time
        partial_results.json    an interrupted prediction's finished images (resume)
        ensemble_report.{json,csv}, oracle_keypoint_results.json   the ensembles only
    <results_dir>/<dataType>-three-model-epoch100-open-pose-single-scale-<N>[-...].csv/json/png
                                the uncertainty analysis of the set (eval/util_ainu.py)

<model> is the effect's file-name spelling (model.domains.EFFECT_NAMES: normal, dark,
motion_blur, ensemble, ensemble_fuse, and the baselines mixed, normal_gamma); N is the number
of images evaluated. The names are the fork's, so its result folders and ours line up. A
multi-scale or flipped test gets a suffix, so it never overwrites the single-scale results
(one scale, whatever its value and mode) that the ensembles and the uncertainty analysis read.
"""
import csv
import re
import shlex
from pathlib import Path

import numpy as np

from model import files, paths
from model.domains import EFFECT_NAMES, ENSEMBLE, ENSEMBLE_FUSE, EXPERT_EFFECTS
from model.errors import UserError
from model.skeleton import NUM_COCO

RESULTS_JSON = "keypoint_results.json"
METRICS_CSV = "metrics.csv"
RUN_JSON = "run.json"
PARTIAL_JSON = "partial_results.json"
ENSEMBLE_REPORT_JSON = "ensemble_report.json"
ENSEMBLE_REPORT_CSV = "ensemble_report.csv"
ORACLE_JSON = "oracle_" + RESULTS_JSON
UNCERTAINTY_MODEL = "three-model"      # the uncertainty files' <model> part
_TAIL = "epoch100-open-pose-single-scale"


def folder_name(data_type, model, num_images):
    """<dataType>-<model>-epoch100-open-pose-single-scale-<N> (model: a file-name spelling)."""
    return f"{data_type}-{model}-{_TAIL}-{num_images}"


def create_command(data_type, effect, num_images):
    """The command line that writes a model's predictions on a set."""
    if effect == ENSEMBLE:
        return (f"python train_expert_classifier/ensemble.py --coco_dataType {data_type} "
                f"--method route --fir_img_num {num_images}")
    if effect == ENSEMBLE_FUSE:
        return (f"python train_expert_classifier/ensemble.py --coco_dataType {data_type} "
                f"--method fuse --fir_img_num {num_images}")
    return (f"python eval/eval_coco2014_single_scale.py --effect {shlex.quote(effect)} "
            f"--coco_dataType {data_type} --fir_img_num {num_images}")


def check_result_records(records, path):
    """UserError unless `records` is a list of COCO keypoint results (image_id, 51 values)."""
    if not isinstance(records, list):
        raise UserError(f"{path}: expected a list of COCO keypoint results")
    for i, r in enumerate(records):
        if not isinstance(r, dict) or "image_id" not in r or \
                len(r.get("keypoints", ())) != 3 * NUM_COCO:
            raise UserError(f"{path}: record {i} is not a COCO keypoint result "
                            f"(image_id and 51 keypoint values)")


# ------------------------------------------------------------------ metrics.csv

def _metric_cell(value):
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.6f}"


def write_metrics(path, rows):
    """metrics.csv of (subset, metric, value) rows: integers as such, others with 6 decimals."""
    files.write_csv(path, [(s, m, _metric_cell(v)) for s, m, v in rows],
                    header=["subset", "metric", "value"])


def read_metrics(path):
    """{(subset, metric): float} of a metrics CSV written by write_metrics."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"metrics file not found: {path}")
    with open(path, newline="") as f:
        return {(r["subset"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}


# ------------------------------------------------------------------ the layout

class RunLayout:
    """Names, files and readers of the run folders under one results folder."""

    def __init__(self, results_dir=paths.EVAL_RESULTS_DIR):
        self.results_dir = Path(results_dir)

    def folder(self, data_type, effect, num_images, settings=None):
        """One model's run folder; `settings` (model.inference.InferenceSettings) adds the
        suffix of a multi-scale or flipped test."""
        name = folder_name(data_type, EFFECT_NAMES[effect], num_images)
        if settings is not None and (len(settings.scale_search) > 1 or settings.flip):
            scales = "_".join(f"{m:g}" for m in settings.scale_search)
            name += f"-{settings.scale_mode}-{scales}" + ("-flip" if settings.flip else "")
        return self.results_dir / name

    def results_file(self, data_type, effect, num_images):
        return self.folder(data_type, effect, num_images) / RESULTS_JSON

    def metrics_file(self, data_type, effect, num_images):
        return self.folder(data_type, effect, num_images) / METRICS_CSV

    def settings_file(self, data_type, effect, num_images):
        return self.folder(data_type, effect, num_images) / RUN_JSON

    def uncertainty_stem(self, data_type, num_images):
        """<results_dir>/<X>-three-model-epoch100-open-pose-single-scale-<N> (the seed's)."""
        return self.results_dir / folder_name(data_type, UNCERTAINTY_MODEL, num_images)

    def uncertainty_file(self, data_type, num_images, suffix):
        """One output of the uncertainty analysis, e.g. suffix "-quality.json" or ".csv"."""
        stem = self.uncertainty_stem(data_type, num_images)
        return stem.with_name(stem.name + suffix)

    # -------------------------------------------------------------- reading

    def read_results(self, data_type, effect, num_images):
        """A model's COCO keypoint result records; UserError naming the model and the command
        that creates them when the file is missing or malformed."""
        path = self.results_file(data_type, effect, num_images)
        name = EFFECT_NAMES[effect]
        if not path.is_file():
            raise UserError(f"no predictions of the {name} model on {data_type} ({num_images} "
                            f"images): {path} is missing; create them with: "
                            f"{create_command(data_type, effect, num_images)}")
        records = files.read_json(path, f"predictions of the {name} model")
        check_result_records(records, path)
        return records

    def read_metrics(self, data_type, effect, num_images):
        return read_metrics(self.metrics_file(data_type, effect, num_images))

    def read_settings(self, data_type, effect, num_images):
        """The run's run.json, or {} when the run has none."""
        path = self.settings_file(data_type, effect, num_images)
        return files.read_json(path, "run settings") if path.is_file() else {}

    def image_counts(self, data_type, effects, needs=RESULTS_JSON):
        """{N: [effects with a run of N images holding the file `needs`]}."""
        if not self.results_dir.is_dir():
            return {}
        names = [p.name for p in self.results_dir.iterdir() if p.is_dir()]
        found = {}
        for effect in effects:
            pattern = re.compile(re.escape(folder_name(data_type, EFFECT_NAMES[effect], ""))
                                 + r"(\d+)")
            for name in names:
                m = pattern.fullmatch(name)
                if m and (self.results_dir / name / needs).is_file():
                    found.setdefault(int(m.group(1)), []).append(effect)
        return found

    def find_num_images(self, data_type, effects=EXPERT_EFFECTS):
        """The image count N of the runs of all `effects` on `data_type`.

        UserError when a model has no run (naming it and the command) or when several counts
        are common to all (then --fir_img_num must choose)."""
        per_count = self.image_counts(data_type, effects)
        counts = None
        for effect in effects:
            found = {n for n, have in per_count.items() if effect in have}
            if not found:
                raise UserError(f"no predictions of the {EFFECT_NAMES[effect]} model on "
                                f"{data_type} in {self.results_dir}; create them with: "
                                f"{create_command(data_type, effect, 1000)} (or fewer images)")
            counts = found if counts is None else counts & found
        if not counts:
            raise UserError(f"the experts' runs on {data_type} in {self.results_dir} cover "
                            f"different image counts; pass --fir_img_num")
        if len(counts) > 1:
            raise UserError(f"runs on {data_type} exist for several image counts "
                            f"({', '.join(map(str, sorted(counts)))}); choose one with "
                            f"--fir_img_num")
        return counts.pop()

    def evaluated_image_ids(self, data_type, num_images, coco_gt, record_lists,
                            effects=EXPERT_EFFECTS):
        """The images the experts' runs predicted: the image_ids their run.json files record
        (images all of them predicted; unreadable ones are skipped by the evaluation), else
        the first `num_images` of the annotation file, else (no ground truth) every image
        some model has a prediction for."""
        recorded = []
        for effect in effects:
            ids = self.read_settings(data_type, effect, num_images).get("image_ids")
            if ids:
                recorded.append([int(i) for i in ids])
        if recorded:
            common = set.intersection(*map(set, recorded))
            return [i for i in recorded[0] if i in common]
        if coco_gt is not None:
            return [int(im["id"]) for im in coco_gt.dataset["images"][:num_images]]
        return sorted({int(r["image_id"]) for recs in record_lists for r in recs})


def run_folder(results_dir, data_type, effect, num_images, settings=None):
    """RunLayout(results_dir).folder(...): the run folder of one model on one set."""
    return RunLayout(results_dir).folder(data_type, effect, num_images, settings)


# ------------------------------------------------------------------ severity sweeps

ROBUSTNESS_PREFIX = "robustness"
_ROBUSTNESS_RE = re.compile(re.escape(ROBUSTNESS_PREFIX) + r"-(.+)-(\d+)")


def robustness_folder(results_dir, data_type, num_images):
    """<results_dir>/robustness-<dataType>-<N>: the severity sweep of the first N images of a
    set (eval/robustness.py)."""
    return Path(results_dir) / f"{ROBUSTNESS_PREFIX}-{data_type}-{num_images}"


def robustness_folders(results_dir):
    """[(data_type, N, folder)] of the severity sweeps under results_dir, sorted."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        return []
    found = [(m.group(1), int(m.group(2)), p) for p in results_dir.iterdir()
             if p.is_dir() and (m := _ROBUSTNESS_RE.fullmatch(p.name))]
    return sorted(found)
