"""Reading every stage's outputs for the summary, each from where its stage writes it, into
typed records. A missing input is left empty and shown as n/a, never filled in; a file that
exists but cannot be read becomes a note.

  evaluation      the run folders (model.runs): metrics.csv, run.json, ensemble_report.json;
                  the sets' annotation files (<coco_root>/annotations/): their composition
  uncertainty     <dataType>-three-model-...-<N>-quality.json and -sparsification.csv
  robustness      robustness-<dataType>-<N>/robustness.json (eval/robustness.py)
  experts         <weights dir of each effect>/log.csv and run.json (model.train)
  classifier      <classifier_log_dir>/<run>/log.csv, best.json (the newest run), the
                  validation metrics.json (train_domain_classifier/validate.py) and the
                  per-image domain probabilities <domain_dir>/<dataType>.json
  steps           the runner's timings and, for steps it skipped, the seconds their markers
                  recorded (<out_dir>/steps/<step>.json)

N (the image count of the evaluation runs) is found per test set from the run folders: the
count most models were evaluated with (the larger on a tie), unless num_images is given.
"""
import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from model import files, machine, paths
from model.domains import (BASE, DOMAIN_LABELS, EFFECT_NAMES, EVAL_MODELS, EXPERT_EFFECTS, MIXED,
                           TRAINED_MODELS)
from model.errors import UserError
from model.evalsets import has_labelled_person
from model.report.robustness import load_robustness
from model.runs import ENSEMBLE_REPORT_JSON, METRICS_CSV, RunLayout

log = logging.getLogger(__name__)

CLASS_NAMES = tuple(EFFECT_NAMES[e] for e in EXPERT_EFFECTS)  # the classifier's class order
SPARSIFICATION_COLUMNS = ["measure", "model", "fraction_removed", "mean_error",
                          "oracle_mean_error"]


def domain_label(data_type):
    """The reader's name of an evaluation set's domain ("low resolution")."""
    return DOMAIN_LABELS[data_type[len(paths.EVAL_BASE):]]


@dataclass
class EvalSet:
    """One test set's evaluation runs (every model with N images)."""
    data_type: str
    num_images: int = None
    metrics: dict = field(default_factory=dict)    # effect -> {(subset, metric): value}
    runs: dict = field(default_factory=dict)       # effect -> run.json
    reports: dict = field(default_factory=dict)    # effect -> ensemble_report.json
    missing: list = field(default_factory=list)    # effects without a readable metrics.csv
    composition: dict = None                       # set_composition(), None without the set

    def metric(self, effect, subset, name):
        value = self.metrics.get(effect, {}).get((subset, name))
        return None if value is None else float(value)


@dataclass
class ExpertRun:
    effect: str
    dir: str
    log: dict = None         # log.csv as {column: list of floats}
    run: dict = None         # run.json


@dataclass
class ClassifierRun:
    run: str = None          # the newest run folder
    log: dict = None
    best: dict = None        # best.json
    validation: dict = None  # validate.py's metrics.json
    validation_file: str = None


@dataclass
class StepTime:
    step: str
    seconds: float
    status: str              # "ran" or "skipped"
    seconds_when_ran: float = None


@dataclass
class Results:
    """Every input of the summary."""
    coco_root: str
    eval_dir: str
    out_dir: str
    evaluation: dict         # data_type -> EvalSet
    uncertainty: dict        # data_type -> quality.json
    sparsification: dict     # data_type -> DataFrame (SPARSIFICATION_COLUMNS)
    experts: dict            # effect -> ExpertRun
    classifier: ClassifierRun
    domain_predictions: dict  # data_type -> {"images", "counts", "mean_prob"}
    timings: list            # [StepTime]
    settings: dict
    notes: list
    checks: list = field(default_factory=list)
    robustness: dict = None  # the severity sweep's robustness.json (model.report.robustness)
    machine: str = None      # model.machine.describe_line() where the runner's steps ran
    steal_percent: float = None  # the hypervisor's share of the CPU time while they ran


# ------------------------------------------------------------------------------ files

def _float(text):
    """A CSV cell as a float; blank or unparsable cells are NaN (an epoch without validation)."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def read_log_csv(path):
    """{column: list of floats} of a per-epoch log.csv, or None when absent or empty."""
    path = Path(path)
    if not path.is_file():
        return None
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    return {k: [_float(r.get(k)) for r in rows] for k in rows[0]}


def read_json_or_note(path, what, notes):
    """A JSON file's content, or None (with a note when it exists but cannot be read)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return files.read_json(path, what)
    except UserError as e:
        notes.append(str(e))
        log.warning("%s", e)
        return None


# ------------------------------------------------------------------------------ evaluation

def choose_num_images(counts):
    """The image count most models were evaluated with; the larger one on a tie."""
    if not counts:
        return None
    return max(counts, key=lambda n: (len(counts[n]), n))


def load_eval_set(layout, data_type, n, notes):
    entry = EvalSet(data_type, n)
    for effect in EVAL_MODELS:
        folder = layout.folder(data_type, effect, n or 0)
        metrics = folder / METRICS_CSV
        if n is None or not metrics.is_file():
            entry.missing.append(effect)
            continue
        try:
            entry.metrics[effect] = layout.read_metrics(data_type, effect, n)
        except (KeyError, ValueError, TypeError):
            notes.append(f"{metrics}: not a metrics CSV (subset, metric, value); skipped")
            log.warning("%s", notes[-1])
            entry.missing.append(effect)
            continue
        run = read_json_or_note(layout.settings_file(data_type, effect, n), "run settings",
                                notes)
        if run is not None:
            entry.runs[effect] = run
        report = read_json_or_note(folder / ENSEMBLE_REPORT_JSON, "ensemble report", notes)
        if report is not None:
            entry.reports[effect] = report
    return entry


def load_evaluation(eval_dir, num_images=None):
    """({data_type: EvalSet}, notes)."""
    out, notes = {}, []
    layout = RunLayout(eval_dir)
    for data_type in paths.EVAL_DATATYPES:
        counts = layout.image_counts(data_type, EVAL_MODELS, needs=METRICS_CSV)
        n = num_images if num_images is not None else choose_num_images(counts)
        if n is not None and len(counts) > 1:
            notes.append(f"{data_type}: runs with {', '.join(map(str, sorted(counts)))} images "
                         f"exist; the summary uses N = {n}")
        out[data_type] = load_eval_set(layout, data_type, n, notes)
    return out, notes


def set_composition(coco_root, data_type, num_images, notes):
    """How the set was drawn ("recorded": its annotation file's info.composition, None for a
    set made before that was recorded) and, of the first num_images images (those the
    evaluation scores), how many have no labelled person: {"recorded", "images",
    "without_people"}, or None without the annotation file."""
    data = read_json_or_note(paths.annotation_file(coco_root, data_type), "annotation file",
                             notes)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        return None
    images = data["images"][:num_images] if num_images else data["images"]
    anns = {}
    for a in data.get("annotations") or []:
        anns.setdefault(a.get("image_id"), []).append(a)
    info = data.get("info") if isinstance(data.get("info"), dict) else {}
    return {"recorded": info.get("composition"), "images": len(images),
            "without_people": sum(not has_labelled_person(anns.get(im.get("id"), []))
                                  for im in images)}


def load_uncertainty(eval_dir, data_type, num_images, notes):
    """(quality.json dict or None, sparsification frame or None). A quality.json with ground
    truth but without the detection and pose levels (model.uncertainty) is a note and its
    numbers are not used: its correlations were over all people."""
    if num_images is None:
        return None, None
    layout = RunLayout(eval_dir)
    path = layout.uncertainty_file(data_type, num_images, "-quality.json")
    quality = read_json_or_note(path, "uncertainty quality", notes)
    if isinstance(quality, dict) and "risk_coverage" in quality and "pose" not in quality:
        notes.append(f"{path}: no detection and pose levels; rerun eval/util_ainu.py "
                     f"--coco_dataType {data_type}")
        return None, None
    spars = layout.uncertainty_file(data_type, num_images, "-sparsification.csv")
    if not spars.is_file():
        return quality, None
    try:
        # round_trip: the numbers parse exactly as Python's float() does
        table = pd.read_csv(spars, dtype={"measure": str, "model": str},
                            float_precision="round_trip", keep_default_na=False,
                            na_values=[""])
    except pd.errors.EmptyDataError:
        return quality, None
    if len(table) == 0:
        return quality, None
    if not set(SPARSIFICATION_COLUMNS) <= set(table.columns):
        notes.append(f"{spars}: not a sparsification CSV; skipped")
        return quality, None
    for column in SPARSIFICATION_COLUMNS[2:]:
        table[column] = pd.to_numeric(table[column], errors="coerce").astype(np.float64)
    return quality, table[SPARSIFICATION_COLUMNS]


# ------------------------------------------------------------------------------ training

def _weights_dir(weights_dir, effect):
    return Path(weights_dir(effect) if callable(weights_dir) else
                Path(weights_dir) / f"weights{effect}")


def load_experts(weights_dir, notes):
    """{model: ExpertRun} of every network train_pose.py trained: the base network (when the
    models fine-tuned from one), the experts and the generalist."""
    out = {}
    for e in (BASE,) + TRAINED_MODELS:
        folder = _weights_dir(weights_dir, e)
        if e in (BASE, MIXED) and not (folder / "run.json").is_file():
            continue       # trained from scratch (no base), or an older run without them
        out[e] = ExpertRun(e, str(folder), read_log_csv(folder / "log.csv"),
                           read_json_or_note(folder / "run.json", "expert run", notes))
    return out


def newest_classifier_run(log_dir):
    """The newest run folder (names are start times, YYYY-MM-DD_HH-MM[_n]) with a log.csv.

    train_domain_classifier.runs has the same rule but imports torch, which the summary does
    not otherwise need."""
    log_dir = Path(log_dir)
    if not log_dir.is_dir():
        return None

    def start_order(p):      # "<minute>_2" was started after "<minute>"
        suffix = p.name[17:]
        return p.name[:16], int(suffix) if suffix.isdigit() else 0
    runs = sorted((p for p in log_dir.iterdir() if (p / "log.csv").is_file()), key=start_order)
    return runs[-1] if runs else None


def _validation_candidates(validation, out_dir, run):
    if validation is not None:
        validation = Path(validation)
        return [validation / "metrics.json" if validation.is_dir() else validation]
    # where run_experiment.py puts it, then validate.py's default in the newest run
    candidates = [Path(out_dir) / "classifier_validation" / "metrics.json"]
    if run is not None:
        candidates += sorted((run / "validation").glob("*/metrics.json"),
                             key=lambda p: p.stat().st_mtime, reverse=True)
    return candidates


def load_classifier(log_dir, out_dir, validation, notes):
    run = newest_classifier_run(log_dir)
    info = ClassifierRun(str(run) if run else None)
    if run is not None:
        info.log = read_log_csv(run / "log.csv")
        info.best = read_json_or_note(run / "best.json", "best-checkpoint record", notes)
    for path in _validation_candidates(validation, out_dir, run):
        data = read_json_or_note(path, "classifier validation", notes)
        if isinstance(data, dict) and "accuracy" in data:
            info.validation, info.validation_file = data, str(path)
            checkpoint = Path(str(data.get("checkpoint", "")))
            if run is not None and run.resolve() not in checkpoint.resolve().parents:
                notes.append(f"the classifier validation {path} is of checkpoint {checkpoint}, "
                             f"not of the newest training run {run}")
            break
    return info


def domain_distribution(results):
    """Per-image domain probabilities -> {"images", "counts": {class: n}, "mean_prob"}
    (the argmax counts, as train_domain_classifier.inference.distribution)."""
    probs = np.array([r["effect_prob"] for r in results], np.float64).reshape(-1, len(CLASS_NAMES))
    counts = np.bincount(probs.argmax(1), minlength=len(CLASS_NAMES)) if len(probs) else \
        np.zeros(len(CLASS_NAMES), int)
    return {"images": len(probs), "counts": dict(zip(CLASS_NAMES, map(int, counts))),
            "mean_prob": probs.mean(0).tolist() if len(probs) else None}


def load_domain_predictions(domain_dir, notes):
    out = {}
    for data_type in paths.EVAL_DATATYPES:
        data = read_json_or_note(Path(domain_dir) / f"{data_type}.json", "domain probabilities",
                                 notes)
        if data is None:
            continue
        try:
            out[data_type] = domain_distribution(data)
        except (TypeError, KeyError, ValueError):
            notes.append(f"{Path(domain_dir) / (data_type + '.json')}: not a list of "
                         f"{{image_id, effect_prob}}; skipped")
    return out


def load_timings(timings, marker_dir):
    """[StepTime] of the runner's [(step, seconds, status)], with the seconds a skipped step's
    marker recorded when it ran."""
    out = []
    for name, seconds, status in timings or []:
        earlier = None
        marker = marker_dir / f"{name}.json"
        if status == "skipped" and marker.is_file():
            try:
                earlier = json.loads(marker.read_text()).get("seconds")
            except (json.JSONDecodeError, OSError):
                earlier = None
        out.append(StepTime(str(name), float(seconds), str(status), earlier))
    return out


def collect(coco_root, eval_dir, weights_dir, classifier_log_dir, domain_dir, out_dir,
            timings=None, settings=None, num_images=None, classifier_validation=None,
            steal_percent=None):
    """Every input of the summary as Results (checks not yet computed)."""
    evaluation, notes = load_evaluation(eval_dir, num_images)
    uncertainty, sparsification = {}, {}
    for data_type, entry in evaluation.items():
        entry.composition = set_composition(coco_root, data_type, entry.num_images, notes)
        quality, table = load_uncertainty(eval_dir, data_type, entry.num_images, notes)
        if quality is not None:
            uncertainty[data_type] = quality
        if table is not None:
            sparsification[data_type] = table
    experts = load_experts(weights_dir, notes)
    classifier = load_classifier(classifier_log_dir, out_dir, classifier_validation, notes)
    return Results(
        coco_root=str(coco_root), eval_dir=str(eval_dir), out_dir=str(out_dir),
        evaluation=evaluation, uncertainty=uncertainty, sparsification=sparsification,
        experts=experts, classifier=classifier,
        domain_predictions=load_domain_predictions(domain_dir, notes),
        timings=load_timings(timings, Path(out_dir) / "steps"),
        settings={k: (str(v) if isinstance(v, Path) else v)
                  for k, v in (settings or {}).items()}, notes=notes,
        robustness=load_robustness(eval_dir, notes),
        machine=machine.describe_line() if timings else None, steal_percent=steal_percent)
