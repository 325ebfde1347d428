"""The experiment summary: every stage's outputs gathered into results/summary.md, summary.json
and figures (what run_experiment.py prints at the end).

Inputs, each read from where its stage writes it and skipped with a note when missing (a
missing number is shown as n/a, never filled in):
  evaluation      <eval_dir>/<dataType>-<model>-epoch100-open-pose-single-scale-<N>/metrics.csv
                  (model.evaluation.write_metrics), run.json, keypoint_results.json and, for
                  the ensembles, ensemble_report.json (model.ensemble.write_report);
  uncertainty     <eval_dir>/<dataType>-three-model-...-<N>-quality.json and
                  -sparsification.csv (model.uncertainty.analyse);
  experts         <weights dir of each effect>/log.csv and run.json (model.train);
  classifier      <classifier_log_dir>/<run>/log.csv, best.json (the newest run), the
                  validation metrics.json (train_domain_classifier/validate.py) and the
                  per-image domain probabilities <domain_dir>/<dataType>.json;
  steps           the runner's timings (model.experiment.Runner.timings) and, for steps it
                  skipped, the seconds their markers recorded (<out_dir>/steps/<step>.json).

N (the image count of the evaluation runs) is found per test set from the run folders: the
count most models were evaluated with (the larger on a tie), unless num_images is given.

The acceptance checks of the demo (issue 8) are computed from the same numbers:
  * the normal expert's AP on the normal test set >= 0.5;
  * the motion-blur expert's AP on the motion-blur set > the normal expert's there;
  * the domain classifier's validation accuracy >= 0.98 (validate.py's metrics.json; the
    best epoch's val_accuracy from best.json when validate.py has not run);
  * the translational disagreement's Spearman correlation with the error (1 - OKS) of the
    routed ensemble's prediction of each person (the normal expert's when the analysis had
    no ensemble) > 0 with p < 0.01 on the motion-blur set. One measure and one model, fixed in
    advance: choosing the best of several after the fact would make the test meaningless.
"""
import csv
import json
import logging
import math
import re
import time
from pathlib import Path

import numpy as np

from model import evaluation, files, paths
from model.cli import UserError

log = logging.getLogger(__name__)

DOMAIN_LABELS = {"": "normal", "_dark": "dark", "_motion_blur": "motion blur",
                 "_resolution": "low resolution"}
MODEL_LABELS = {"": "normal expert", "_dark": "dark expert",
                "_motion_blur": "motion-blur expert", "_ensemble": "routed ensemble",
                "_ensemble_fuse": "fused ensemble"}
# The fork's published AP (REFERENCE section 7): test domain -> model -> AP. The fork had no
# fused ensemble.
FORK_AP = {
    "": {"": 0.509, "_dark": 0.387, "_motion_blur": 0.094, "_ensemble": 0.509},
    "_dark": {"": 0.467, "_dark": 0.424, "_motion_blur": 0.101, "_ensemble": 0.424},
    "_motion_blur": {"": 0.044, "_dark": 0.031, "_motion_blur": 0.282, "_ensemble": 0.282},
    "_resolution": {"": 0.335, "_dark": 0.224, "_motion_blur": 0.053, "_ensemble": 0.335},
}
CLASS_NAMES = tuple(paths.EFFECT_NAMES[e] for e in paths.EXPERT_EFFECTS)  # classifier order

MIN_NORMAL_AP = 0.5
MIN_CLASSIFIER_ACCURACY = 0.98
MAX_SPEARMAN_P = 0.01
CHECK_MEASURE = "translational"
CHECK_MODELS = ("ensemble", "normal")      # whose error the disagreement is judged against
REJECT_FRACTION = 0.2
MEASURES = ("translational", "rotational")

SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"
FIG_AP = "ap_table.png"
FIG_EXPERTS = "training_experts.png"
FIG_CLASSIFIER = "training_classifier.png"
FIG_SPARSIFICATION = "sparsification_{measure}.png"
FIG_EXAMPLES = "examples.png"
EXAMPLES_PER_DOMAIN = 3


# ------------------------------------------------------------------------------ reading

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


def _json(path, what, notes):
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


def run_counts(eval_dir, data_type):
    """{N: [effects with a metrics.csv]} of the run folders of `data_type` in eval_dir."""
    eval_dir = Path(eval_dir)
    found = {}
    if not eval_dir.is_dir():
        return found
    names = {p.name for p in eval_dir.iterdir() if p.is_dir()}
    for effect in paths.EVAL_MODELS:
        stem = evaluation.run_folder(eval_dir, data_type, effect, 0).name[:-1]
        pattern = re.compile(re.escape(stem) + r"(\d+)")
        for name in names:
            m = pattern.fullmatch(name)
            if m and (eval_dir / name / evaluation.METRICS_CSV).is_file():
                found.setdefault(int(m.group(1)), []).append(effect)
    return found


def choose_num_images(counts):
    """The image count most models were evaluated with; the larger one on a tie."""
    if not counts:
        return None
    return max(counts, key=lambda n: (len(counts[n]), n))


def load_evaluation(eval_dir, num_images=None):
    """{data_type: {"num_images", "metrics": {effect: {(subset, metric): value}},
    "runs": {effect: run.json}, "reports": {effect: ensemble_report.json}, "missing"}}."""
    out, notes = {}, []
    for data_type in paths.EVAL_DATATYPES:
        counts = run_counts(eval_dir, data_type)
        n = num_images if num_images is not None else choose_num_images(counts)
        entry = {"num_images": n, "metrics": {}, "runs": {}, "reports": {}, "missing": []}
        if n is not None and len(counts) > 1:
            notes.append(f"{data_type}: runs with {', '.join(map(str, sorted(counts)))} images "
                         f"exist; the summary uses N = {n}")
        for effect in paths.EVAL_MODELS:
            folder = evaluation.run_folder(eval_dir, data_type, effect, n or 0)
            metrics = folder / evaluation.METRICS_CSV
            if n is None or not metrics.is_file():
                entry["missing"].append(effect)
                continue
            try:
                entry["metrics"][effect] = evaluation.read_metrics(metrics)
            except (KeyError, ValueError, TypeError):
                notes.append(f"{metrics}: not a metrics CSV (subset, metric, value); skipped")
                log.warning("%s", notes[-1])
                entry["missing"].append(effect)
                continue
            run = _json(folder / evaluation.RUN_JSON, "run settings", notes)
            if run is not None:
                entry["runs"][effect] = run
            report = _json(folder / "ensemble_report.json", "ensemble report", notes)
            if report is not None:
                entry["reports"][effect] = report
        out[data_type] = entry
    return out, notes


def load_uncertainty(eval_dir, data_type, num_images, notes):
    """(quality.json dict or None, sparsification rows [(measure, model, f, curve, oracle)])."""
    from model.uncertainty import output_stem
    if num_images is None:
        return None, []
    stem = output_stem(eval_dir, data_type, num_images)
    quality = _json(stem.with_name(stem.name + "-quality.json"), "uncertainty quality", notes)
    rows = []
    spars = stem.with_name(stem.name + "-sparsification.csv")
    if spars.is_file():
        with open(spars, newline="") as f:
            try:
                rows = [(r["measure"], r["model"], _float(r["fraction_removed"]),
                         _float(r["mean_error"]), _float(r["oracle_mean_error"]))
                        for r in csv.DictReader(f)]
            except KeyError:
                notes.append(f"{spars}: not a sparsification CSV; skipped")
                rows = []
    return quality, rows


def _weights_dir(weights_dir, effect):
    return Path(weights_dir(effect) if callable(weights_dir) else
                Path(weights_dir) / f"weights{effect}")


def load_experts(weights_dir, notes):
    """{effect: {"dir", "log": columns or None, "run": run.json or None}}."""
    return {e: {"dir": str(_weights_dir(weights_dir, e)),
                "log": read_log_csv(_weights_dir(weights_dir, e) / "log.csv"),
                "run": _json(_weights_dir(weights_dir, e) / "run.json", "expert run", notes)}
            for e in paths.EXPERT_EFFECTS}


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


def load_classifier(log_dir, out_dir, validation, notes):
    run = newest_classifier_run(log_dir)
    info = {"run": str(run) if run else None, "log": None, "best": None, "validation": None,
            "validation_file": None}
    if run is not None:
        info["log"] = read_log_csv(run / "log.csv")
        info["best"] = _json(run / "best.json", "best-checkpoint record", notes)
    candidates = []
    if validation is not None:
        validation = Path(validation)
        candidates.append(validation / "metrics.json" if validation.is_dir() else validation)
    else:
        # where run_experiment.py puts it, then validate.py's default in the newest run
        candidates.append(Path(out_dir) / "classifier_validation" / "metrics.json")
        if run is not None:
            candidates += sorted((run / "validation").glob("*/metrics.json"),
                                 key=lambda p: p.stat().st_mtime, reverse=True)
    for path in candidates:
        data = _json(path, "classifier validation", notes)
        if isinstance(data, dict) and "accuracy" in data:
            info["validation"], info["validation_file"] = data, str(path)
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
        data = _json(Path(domain_dir) / f"{data_type}.json", "domain probabilities", notes)
        if data is None:
            continue
        try:
            out[data_type] = domain_distribution(data)
        except (TypeError, KeyError, ValueError):
            notes.append(f"{Path(domain_dir) / (data_type + '.json')}: not a list of "
                         f"{{image_id, effect_prob}}; skipped")
    return out


# ------------------------------------------------------------------------------ derived numbers

def _metric(data, data_type, effect, subset, metric):
    value = data["evaluation"][data_type]["metrics"].get(effect, {}).get((subset, metric))
    return None if value is None else float(value)


def ap_matrix(data):
    """(4, 5) array of our AP, NaN where missing: rows TEST_EFFECTS, columns EVAL_MODELS."""
    return np.array([[np.nan if (v := _metric(data, paths.EVAL_BASE + t, e, "all", "AP"))
                      is None else v for e in paths.EVAL_MODELS] for t in paths.TEST_EFFECTS])


def fork_matrix():
    return np.array([[FORK_AP[t].get(e, np.nan) for e in paths.EVAL_MODELS]
                     for t in paths.TEST_EFFECTS])


def uncertainty_row(quality, measure, model):
    """Numbers of one measure judged against one model's error, from a quality.json."""
    corr = quality.get("correlation", {}).get(measure, {}).get(model)
    if corr is None:
        return None
    risk = {round(r["rejected_fraction"], 6): r for r in quality.get("risk_coverage", [])
            if r["measure"] == measure and r["model"] == model}
    base, rejected = risk.get(0.0), risk.get(round(REJECT_FRACTION, 6))
    return {"model": model, "people": corr.get("n"), "spearman_r": corr.get("spearman_r"),
            "spearman_p": corr.get("spearman_p"), "pearson_r": corr.get("pearson_r"),
            "pearson_p": corr.get("pearson_p"), "note": corr.get("note"),
            "ause": quality.get("ause", {}).get(measure, {}).get(model),
            "ap": base["ap"] if base else None,
            "ap_rejected_kept_people": rejected["ap_kept_people"] if rejected else None,
            "ap_rejected": rejected["ap"] if rejected else None}


def judged_model(quality):
    """The model whose error the checks judge the disagreement against (CHECK_MODELS order)."""
    available = quality.get("correlation", {}).get(CHECK_MEASURE, {}) if quality else {}
    return next((m for m in CHECK_MODELS if m in available), None)


def compute_checks(data):
    """The demo's acceptance conditions (module docstring): [{name, status, measured}], status
    PASS, FAIL or n/a (an input is missing)."""
    checks = []

    def add(name, ok, measured):
        checks.append({"name": name, "status": "n/a" if ok is None else
                       ("PASS" if ok else "FAIL"), "measured": measured})

    normal, blur = paths.EVAL_DATATYPES[0], paths.EVAL_BASE + "_motion_blur"
    ap = _metric(data, normal, "", "all", "AP")
    add(f"normal expert AP >= {MIN_NORMAL_AP} on the normal test set",
        None if ap is None else ap >= MIN_NORMAL_AP,
        f"AP {ap:.3f}" if ap is not None else f"no evaluation of the normal expert on {normal}")

    ap_blur = _metric(data, blur, "_motion_blur", "all", "AP")
    ap_norm = _metric(data, blur, "", "all", "AP")
    both = ap_blur is not None and ap_norm is not None
    add("motion-blur expert beats the normal expert on the motion-blur set",
        ap_blur > ap_norm if both else None,
        f"AP {ap_blur:.3f} vs {ap_norm:.3f}" if both else
        f"evaluation of the {'motion-blur' if ap_blur is None else 'normal'} expert on "
        f"{blur} missing")

    acc, source = classifier_accuracy(data["classifier"])
    add(f"domain classifier validation accuracy >= {MIN_CLASSIFIER_ACCURACY:.0%}",
        None if acc is None else acc >= MIN_CLASSIFIER_ACCURACY,
        f"{acc:.2%} ({source})" if acc is not None else "no validation metrics or best.json")

    quality = data["uncertainty"].get(blur)
    model = judged_model(quality)
    row = uncertainty_row(quality, CHECK_MEASURE, model) if model else None
    name = (f"{CHECK_MEASURE} disagreement vs error: Spearman > 0 with p < {MAX_SPEARMAN_P} "
            f"on the motion-blur set")
    if row is None:
        add(name, None, f"no uncertainty analysis with ground truth of {blur}")
    elif row["spearman_r"] is None:
        add(name, False, f"correlation undefined: {row['note']}")
    else:
        add(name, row["spearman_r"] > 0 and row["spearman_p"] < MAX_SPEARMAN_P,
            f"rho {row['spearman_r']:.3f}, p {row['spearman_p']:.2g} ({model} error, "
            f"{row['people']} people)")
    return checks


def classifier_accuracy(classifier):
    """(accuracy, where it comes from) or (None, None)."""
    if classifier.get("validation"):
        v = classifier["validation"]
        return float(v["accuracy"]), f"validate.py, {v.get('samples', '?')} samples"
    best = classifier.get("best")
    if best and best.get("val_accuracy") is not None:
        return float(best["val_accuracy"]), f"best.json, epoch {best.get('epoch')}"
    return None, None


# ------------------------------------------------------------------------------ collecting

def collect(coco_root=paths.DEFAULT_COCO_ROOT, eval_dir=paths.EVAL_RESULTS_DIR,
            weights_dir=paths.expert_weights_dir, classifier_log_dir=paths.DOMAIN_LOG_DIR,
            domain_dir=paths.DOMAIN_RESULTS_DIR, out_dir=paths.RESULTS_DIR, timings=None,
            settings=None, num_images=None, classifier_validation=None):
    """Every number of the summary as one dict (what summary.json holds, before JSON)."""
    evaluation_, notes = load_evaluation(eval_dir, num_images)
    data = {"coco_root": str(coco_root), "eval_dir": str(eval_dir), "out_dir": str(out_dir),
            "evaluation": evaluation_, "notes": notes}
    data["uncertainty"], data["sparsification"] = {}, {}
    for data_type, entry in evaluation_.items():
        quality, rows = load_uncertainty(eval_dir, data_type, entry["num_images"], notes)
        if quality is not None:
            data["uncertainty"][data_type] = quality
        if rows:
            data["sparsification"][data_type] = rows
    data["experts"] = load_experts(weights_dir, notes)
    data["classifier"] = load_classifier(classifier_log_dir, out_dir, classifier_validation,
                                         notes)
    data["domain_predictions"] = load_domain_predictions(domain_dir, notes)
    data["timings"] = _timings(timings, Path(out_dir) / "steps")
    data["settings"] = {k: (str(v) if isinstance(v, Path) else v)
                        for k, v in (settings or {}).items()}
    data["checks"] = compute_checks(data)
    return data


def _timings(timings, marker_dir):
    """[(step, seconds, status, seconds recorded when it last ran or None)]."""
    out = []
    for name, seconds, status in timings or []:
        earlier = None
        marker = marker_dir / f"{name}.json"
        if status == "skipped" and marker.is_file():
            try:
                earlier = json.loads(marker.read_text()).get("seconds")
            except (json.JSONDecodeError, OSError):
                earlier = None
        out.append((str(name), float(seconds), str(status), earlier))
    return out


# ------------------------------------------------------------------------------ markdown

def _num(value, digits=3):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _p(value):
    return "n/a" if value is None else f"{value:.2g}"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _class(name):
    return name.replace("_", " ")


def _domain(data_type):
    return DOMAIN_LABELS[data_type[len(paths.EVAL_BASE):]]


def _section_checks(data):
    count = {s: sum(c["status"] == s for c in data["checks"]) for s in ("PASS", "FAIL", "n/a")}
    lines = ["## Checks (issue 8: the results must mean something)", "",
             f"{count['PASS']} of {len(data['checks'])} pass, {count['FAIL']} fail, "
             f"{count['n/a']} n/a (input missing).", ""]
    lines += _table(["condition", "result", "measured"],
                    [(c["name"], f"**{c['status']}**", c["measured"]) for c in data["checks"]])
    return lines


def _section_ap(data):
    cols = [MODEL_LABELS[e] for e in paths.EVAL_MODELS]
    ours, fork = ap_matrix(data), fork_matrix()
    lines = ["## Keypoint AP (COCO, single scale)", "",
             "Rows: test domain; columns: model. Ours:", ""]
    lines += _table(["test domain"] + cols,
                    [[DOMAIN_LABELS[t]] + [_num(v) for v in row]
                     for t, row in zip(paths.TEST_EFFECTS, ours)])
    lines += ["", "The fork's published numbers (REFERENCE section 7; it had no fused "
              "ensemble):", ""]
    lines += _table(["test domain"] + cols,
                    [[DOMAIN_LABELS[t]] + [_num(v) for v in row]
                     for t, row in zip(paths.TEST_EFFECTS, fork)])
    ev = data["evaluation"]
    sizes = sorted({e["num_images"] for e in ev.values() if e["num_images"] is not None})
    lines += ["", f"Images per test set: {', '.join(map(str, sizes)) or 'n/a'}."]
    missing = [f"{_domain(t)}: {', '.join(MODEL_LABELS[e] for e in e_['missing'])}"
               for t, e_ in ev.items() if e_["missing"]]
    if missing:
        lines += ["", "n/a = no metrics.csv in the evaluation results folder "
                  f"({data['eval_dir']}) for " + "; ".join(missing) + "."]
    rows = []
    for t, entry in ev.items():
        cells = [_num(entry["metrics"].get(e, {}).get(("all", "seconds_per_image")))
                 for e in paths.EVAL_MODELS]
        if any(c != "n/a" for c in cells):
            rows.append([_domain(t)] + cells)
    if rows:
        lines += ["", "Prediction time, seconds per image (the routed ensemble's is the "
                  "routing alone: its experts' predictions are reused):", ""]
        lines += _table(["test domain"] + cols, rows)
    return lines


def _section_ensemble(data):
    rows = []
    for t, entry in data["evaluation"].items():
        route = entry["reports"].get("_ensemble")
        fuse = entry["reports"].get("_ensemble_fuse")
        if not route and not fuse:
            continue
        routed = (route or {}).get("routed_images") or {}
        oracle = next((r["AP"] for r in (route or fuse).get("comparison", [])
                       if r["model"] == "oracle"), None)
        runs = (fuse or {}).get("expert_runs") or {}
        rows.append([_domain(t)] + [routed.get(c, "n/a") for c in CLASS_NAMES]
                    + [_num((route or {}).get("route_agrees_with_oracle")), _num(oracle),
                       " / ".join(str(runs.get(c, "n/a")) for c in CLASS_NAMES)
                       if runs else "n/a"])
    if not rows:
        return []
    lines = ["## Ensembles", "",
             "Images the routed ensemble sent to each expert, how often its choice equals the "
             "per-image oracle (the expert that scores best against the ground truth), the "
             "oracle's AP (an upper bound of any per-image choice of one expert), and the "
             "expert runs of the fused ensemble (normal / dark / motion blur):", ""]
    lines += _table(["test domain"] + [f"routed to {_class(c)}" for c in CLASS_NAMES]
                    + ["agrees with oracle", "oracle AP", "fused: expert runs"], rows)
    return lines


def _section_classifier(data):
    c = data["classifier"]
    lines = ["## Domain classifier", ""]
    acc, source = classifier_accuracy(c)
    if acc is None:
        lines.append(f"Validation accuracy: n/a (no run with log.csv/best.json or validation "
                     f"metrics found; run folder: {c['run'] or 'none'}).")
    else:
        v = c["validation"] or {}
        lines.append(f"Validation accuracy: **{acc:.2%}** ({source}); loss "
                     f"{_num(v.get('loss', (c['best'] or {}).get('val_loss')), 4)}; "
                     f"checkpoint {v.get('checkpoint', (c['best'] or {}).get('checkpoint'))}; "
                     f"run {c['run']}.")
        if v.get("recall"):
            lines += ["", "Per-class recall: " + ", ".join(
                f"{_class(n)} {r:.3f}" for n, r in zip(v.get("classes", CLASS_NAMES), v["recall"]))
                + "."]
    dist = data["domain_predictions"]
    if dist:
        lines += ["", "Predicted domain (argmax) on each test set; low resolution is a domain "
                  "the classifier never saw:", ""]
        rows = []
        for t, d in dist.items():
            n = max(d["images"], 1)
            mean = " / ".join(f"{p:.3f}" for p in d["mean_prob"]) if d["mean_prob"] else "n/a"
            rows.append([_domain(t), d["images"]]
                        + [f"{d['counts'][c]} ({d['counts'][c] / n:.1%})" for c in CLASS_NAMES]
                        + [mean])
        lines += _table(["test set", "images"] + [f"predicted {_class(c)}" for c in CLASS_NAMES]
                        + ["mean probability (normal / dark / motion blur)"], rows)
    else:
        lines += ["", "Predicted domains: n/a (no <dataType>.json in the domain results "
                  "folder)."]
    return lines


def _section_uncertainty(data):
    lines = ["## Uncertainty quality", ""]
    rows, per_model = [], []
    for t, q in data["uncertainty"].items():
        model = judged_model(q)
        if model is None:        # disagreement only: the set had no ground truth
            rows.append([_domain(t), "n/a", (q.get("counts") or {}).get("people", "n/a")]
                        + ["n/a"] * 8)
            continue
        for measure in MEASURES:
            r = uncertainty_row(q, measure, model)
            if r is None:
                continue
            rows.append([_domain(t), measure, r["people"], model, _num(r["spearman_r"]),
                         _p(r["spearman_p"]), _num(r["pearson_r"]), _num(r["ause"]),
                         _num(r["ap"]), _num(r["ap_rejected_kept_people"]),
                         _num(r["ap_rejected"])])
        corr = q.get("correlation", {}).get(CHECK_MEASURE, {})
        per_model.append([_domain(t)] + [
            f"{_num(corr[m]['spearman_r'])} ({_p(corr[m]['spearman_p'])})" if m in corr
            else "n/a" for m in ("normal", "dark", "motion_blur", "ensemble")])
    if not rows:
        return lines + ["n/a: no <dataType>-three-model-...-quality.json in the evaluation "
                        "results folder (eval/util_ainu.py writes them)."]
    pct = f"{REJECT_FRACTION:.0%}"
    lines += ["Disagreement of the three experts per person against the error (1 - OKS) of "
              "the routed ensemble's prediction (the normal expert's where the analysis had no "
              "ensemble). AUSE: area between the sparsification curve and its oracle (0 = "
              "perfect ranking). AP after rejecting the most uncertain " + pct + " of people: "
              "on the people kept (their ground truth ignored) and against all ground truth.",
              ""]
    lines += _table(["test domain", "measure", "people", "error of", "Spearman rho", "p",
                     "Pearson r", "AUSE", "AP", f"AP, {pct} rejected (kept people)",
                     f"AP, {pct} rejected (all)"], rows)
    lines += ["", f"Spearman rho (p) of the {CHECK_MEASURE} disagreement against each model's "
              "error:", ""]
    lines += _table(["test domain", "normal expert", "dark expert", "motion-blur expert",
                     "routed ensemble"], per_model)
    return lines


def _section_difficult(data):
    pck = evaluation.PCK_NAME
    user = [s for s in evaluation.USER_SUBSETS
            if any((s, "AP") in m for e in data["evaluation"].values()
                   for m in e["metrics"].values())]
    rows = []
    for t, entry in data["evaluation"].items():
        for effect, m in entry["metrics"].items():
            def g(subset, metric, digits=3):
                v = m.get((subset, metric))
                return "n/a" if v is None else (str(int(v)) if digits == 0 else _num(v, digits))
            rows.append([_domain(t), MODEL_LABELS[effect], g("all", "AP"), g("all", pck),
                         g("difficult_joints", "AP"), g("difficult_joints", pck),
                         g("crowded", "num_images", 0), g("crowded", "AP"), g("crowded", pck)]
                        + [g(s, "AP") for s in user])
    if not rows:
        return ["## Difficult cases", "", "n/a: no evaluation metrics found."]
    lines = ["## Difficult cases", "",
             f"Difficult joints: hips, knees and ankles (AP with OKS over those six joints, "
             f"{pck}). Crowded: images with a crowd region or two people whose boxes overlap "
             f"with IoU > {evaluation.CROWD_IOU} (model/evaluation.py).", ""]
    lines += _table(["test domain", "model", "AP", pck, "difficult joints AP",
                     f"difficult joints {pck}", "crowded images", "crowded AP",
                     f"crowded {pck}"] + [f"{s} AP" for s in user], rows)
    return lines


def _last(column):
    values = [v for v in column or [] if math.isfinite(v)]
    return values[-1] if values else None


def _section_training(data):
    lines = ["## Training", ""]
    rows = []
    for effect, x in data["experts"].items():
        lg, run = x["log"] or {}, x["run"] or {}
        val = [v for v in lg.get("val_loss", []) if math.isfinite(v)]
        best = (int(lg["epoch"][lg["val_loss"].index(min(val))]) if val else None)
        rows.append([MODEL_LABELS[effect], len(lg.get("epoch", [])) or "n/a",
                     int(_last(lg.get("iteration"))) if _last(lg.get("iteration")) else "n/a",
                     _num(_last(lg.get("train_loss")), 2), _num(_last(lg.get("val_loss")), 2),
                     f"{_num(min(val), 2)} (epoch {best})" if val else "n/a",
                     run.get("config", "n/a"), run.get("seed", "n/a")])
    lines += _table(["expert", "epochs", "iterations", "last train loss", "last val loss",
                     "best val loss", "config", "seed"], rows)
    lg = data["classifier"]["log"]
    if lg:
        lines += ["", f"Domain classifier ({data['classifier']['run']}): {len(lg['epoch'])} "
                  f"epochs; last epoch train loss {_num(_last(lg.get('train_loss')), 4)}, "
                  f"accuracy {_num(_last(lg.get('train_accuracy')), 4)}; validation loss "
                  f"{_num(_last(lg.get('val_loss')), 4)}, accuracy "
                  f"{_num(_last(lg.get('val_accuracy')), 4)}."]
    else:
        lines += ["", "Domain classifier training log: n/a."]
    return lines


def _section_timings(data):
    lines = ["## Wall time per step", ""]
    if not data["timings"]:
        return lines + ["n/a: no step timings given (the summary was written outside the "
                        "runner)."]
    rows = [[name, status, f"{seconds:.1f}" + ("" if earlier is None else
                                               f" (took {earlier:.1f} when it ran)")]
            for name, seconds, status, earlier in data["timings"]]
    total = sum(s for _, s, _, _ in data["timings"])
    ran = sum(st == "ran" for _, _, st, _ in data["timings"])
    rows.append(["**total**", f"{ran} ran, {len(data['timings']) - ran} skipped",
                 f"**{total:.1f}**"])
    return lines + _table(["step", "status", "seconds"], rows)


def _section_settings(data):
    lines = ["## Seed and settings", ""]
    s = data["settings"]
    seeds = {MODEL_LABELS[e] + " training": x["run"].get("seed")
             for e, x in data["experts"].items() if x["run"]}
    c = data["classifier"]
    if c["validation"] and c["validation"].get("seed") is not None:
        seeds["domain classifier"] = c["validation"]["seed"]
    elif c["best"] and c["best"].get("seed") is not None:
        seeds["domain classifier"] = c["best"]["seed"]
    eval_seeds = sorted({r.get("seed") for e in data["evaluation"].values()
                         for r in e["runs"].values() if r.get("seed") is not None})
    if eval_seeds:
        seeds["evaluation runs"] = ", ".join(map(str, eval_seeds))
    lines.append(f"Seed: **{s.get('seed', 'n/a')}** (runner setting). Seeds recorded by the "
                 "outputs: " + (", ".join(f"{k} {v}" for k, v in seeds.items()) or "none")
                 + ".")
    if s:
        lines += [""] + _table(["setting", "value"], sorted((k, f"`{v}`") for k, v in s.items()))
    return lines


def render_markdown(data, figures=()):
    """The summary as markdown (see module docstring for the sections)."""
    lines = ["# Domain-expert experiment: summary", "",
             f"Written {time.strftime('%Y-%m-%d %H:%M')}; evaluation results from "
             f"`{data['eval_dir']}`, images from `{data['coco_root']}`.", ""]
    for section in (_section_checks, _section_ap, _section_ensemble, _section_classifier,
                    _section_uncertainty, _section_difficult, _section_training,
                    _section_timings, _section_settings):
        part = section(data)
        if part:
            lines += part + [""]
    if figures:
        lines += ["## Figures", ""]
        for f in figures:
            lines += [f"![{Path(f).stem}]({Path(f).name})", ""]
    if data["notes"]:
        lines += ["## Notes", ""] + [f"- {n}" for n in data["notes"]] + [""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ figures

def figure_ap(data, out_dir):
    ours = ap_matrix(data)
    if not np.isfinite(ours).any():
        return None, "no AP of any model"
    from model import plots
    path = Path(out_dir) / FIG_AP
    plots.plot_ap_heatmap(path, {"ours": ours, "fork (published)": fork_matrix()},
                          [DOMAIN_LABELS[t] for t in paths.TEST_EFFECTS],
                          [MODEL_LABELS[e] for e in paths.EVAL_MODELS],
                          "COCO keypoint AP, single scale")
    return path, None


def figure_experts(data, out_dir):
    panels = {}
    for effect, x in data["experts"].items():
        lg = x["log"]
        if not lg or "epoch" not in lg:
            continue
        series = {k: (lg["epoch"], lg[k]) for k in ("train_loss", "val_loss")
                  if k in lg and any(math.isfinite(v) for v in lg[k])}
        if series:
            panels[MODEL_LABELS[effect]] = {"ylabel": "loss (sum of the stages)", "log": True,
                                            "series": series}
    if not panels:
        return None, "no expert log.csv"
    from model import plots
    path = Path(out_dir) / FIG_EXPERTS
    plots.plot_curves(path, panels, "pose experts: training and validation loss")
    return path, None


def figure_classifier(data, out_dir):
    lg = data["classifier"]["log"]
    if not lg or "epoch" not in lg:
        return None, "no classifier log.csv"
    panels = {}
    for name, keys in (("loss", ("train_loss", "val_loss")),
                       ("accuracy", ("train_accuracy", "val_accuracy"))):
        series = {k: (lg["epoch"], lg[k]) for k in keys if k in lg}
        if series:
            panels[name] = {"ylabel": name, "log": False, "series": series}
    from model import plots
    path = Path(out_dir) / FIG_CLASSIFIER
    plots.plot_curves(path, panels, "domain classifier")
    return path, None


def figure_sparsification(data, out_dir, measure):
    from model import plots
    from model.uncertainty import ause
    panels = {}
    for t, rows in data["sparsification"].items():
        curves = {}
        for model in dict.fromkeys(r[1] for r in rows if r[0] == measure):
            sel = np.array([r[2:] for r in rows if r[0] == measure and r[1] == model])
            curves[model] = (sel[:, 0], sel[:, 1], sel[:, 2], ause(sel[:, 0], sel[:, 1],
                                                                   sel[:, 2]))
        if curves:
            panels[_domain(t)] = curves
    if not panels:
        return None, f"no sparsification CSV with {measure} curves"
    path = Path(out_dir) / FIG_SPARSIFICATION.format(measure=measure)
    plots.plot_sparsification(path, panels, f"{measure} disagreement")
    return path, None


def example_image_ids(data, coco_root, count=EXAMPLES_PER_DOMAIN):
    """The first `count` evaluated images of the normal set with at least one labelled person
    (the same ids in every domain: the domain sets are copies of one image selection)."""
    normal = paths.EVAL_DATATYPES[0]
    ann = paths.annotation_file(coco_root, normal)
    if not ann.is_file():
        return []
    gt = files.read_json(ann, "annotation file")
    people = {a["image_id"] for a in gt.get("annotations", [])
              if not a.get("iscrowd", 0) and a.get("num_keypoints", 0) > 0}
    runs = data["evaluation"][normal]["runs"]
    order = next((r["image_ids"] for r in runs.values() if r.get("image_ids")),
                 [im["id"] for im in gt.get("images", [])])
    return [int(i) for i in order if i in people][:count]


def figure_examples(data, out_dir, coco_root, eval_dir):
    import cv2

    from model import draw, plots
    from model.uncertainty import group_by_image, results_file
    ids = example_image_ids(data, coco_root)
    if not ids:
        return None, "no annotated images of the normal test set"
    rows, reference = [], {}     # image id -> (height, width) in the normal test set
    for t, entry in data["evaluation"].items():
        n = entry["num_images"]
        effect = next((e for e in ("_ensemble", "", *paths.EXPERT_EFFECTS)
                       if n is not None and results_file(eval_dir, t, e, n).is_file()), None)
        by_image = {}
        if effect is not None:
            by_image = group_by_image(files.read_json(results_file(eval_dir, t, effect, n),
                                                      "keypoint results"))
        cells = []
        for image_id in ids:
            image = cv2.imread(str(paths.image_dir(coco_root, t)
                                   / paths.image_file_name(t, image_id)))
            if image is None:
                continue
            records = by_image.get(image_id, [])
            people = draw.coco_annotations_to_people(records)
            caption = (f"{image_id}: {len(records)} people, {MODEL_LABELS[effect]}"
                       if effect is not None else f"{image_id}: no predictions")
            # A low-resolution image is drawn at the normal image's size, so its skeleton
            # has the same line width as the other rows' and the cells compare directly.
            size = reference.setdefault(image_id, image.shape[:2])
            if image.shape[:2] != size:
                fy, fx = size[0] / image.shape[0], size[1] / image.shape[1]
                image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
                people[..., 0] *= fx
                people[..., 1] *= fy
                caption += f" (shown x{fy:.2g})"
            drawn = draw.draw_people(image, people)
            cells.append((cv2.cvtColor(drawn, cv2.COLOR_BGR2RGB), caption))
        if cells:
            rows.append((_domain(t), cells))
    if not rows:
        return None, "none of the example images could be read"
    path = Path(out_dir) / FIG_EXAMPLES
    plots.plot_image_grid(path, rows, "predictions per test domain")
    return path, None


def write_figures(data, out_dir, coco_root, eval_dir):
    """Every figure whose inputs exist; the others are skipped with a logged reason.
    Returns the written paths."""
    makers = [("AP heatmap", lambda: figure_ap(data, out_dir)),
              ("expert training curves", lambda: figure_experts(data, out_dir)),
              ("classifier training curves", lambda: figure_classifier(data, out_dir))]
    makers += [(f"{m} sparsification", lambda m=m: figure_sparsification(data, out_dir, m))
               for m in MEASURES]
    makers.append(("example predictions",
                   lambda: figure_examples(data, out_dir, coco_root, eval_dir)))
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


# ------------------------------------------------------------------------------ entry point

def _plain(obj):
    """JSON-safe copy: tuple keys joined with '/', NaN and inf as null, paths as strings."""
    if isinstance(obj, dict):
        return {("/".join(k) if isinstance(k, tuple) else str(k)): _plain(v)
                for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _plain(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def summary_json(data, figures):
    return _plain({
        "checks": data["checks"],
        "num_images": {t: e["num_images"] for t, e in data["evaluation"].items()},
        "ap": {t: {paths.EFFECT_NAMES[e]: v for e, v in zip(paths.EVAL_MODELS, row)}
               for t, row in zip(paths.EVAL_DATATYPES, ap_matrix(data))},
        "fork_ap": {t: {paths.EFFECT_NAMES[e]: v for e, v in zip(paths.EVAL_MODELS, row)}
                    for t, row in zip(paths.EVAL_DATATYPES, fork_matrix())},
        "metrics": {t: {paths.EFFECT_NAMES[e]: m for e, m in entry["metrics"].items()}
                    for t, entry in data["evaluation"].items()},
        "classifier": {"accuracy": classifier_accuracy(data["classifier"])[0],
                       "run": data["classifier"]["run"],
                       "validation_file": data["classifier"]["validation_file"]},
        "domain_predictions": data["domain_predictions"],
        "uncertainty": {t: {m: uncertainty_row(q, m, judged_model(q)) for m in MEASURES}
                        if judged_model(q) else None for t, q in data["uncertainty"].items()},
        "timings": [{"step": n, "seconds": s, "status": st, "seconds_when_ran": e}
                    for n, s, st, e in data["timings"]],
        "total_seconds": sum(s for _, s, _, _ in data["timings"]),
        "settings": data["settings"], "figures": [Path(f).name for f in figures],
        "notes": data["notes"]})


def write_summary(coco_root=paths.DEFAULT_COCO_ROOT, eval_dir=paths.EVAL_RESULTS_DIR,
                  weights_dir=paths.expert_weights_dir, classifier_log_dir=paths.DOMAIN_LOG_DIR,
                  domain_dir=paths.DOMAIN_RESULTS_DIR, out_dir=paths.RESULTS_DIR, timings=None,
                  settings=None, num_images=None, classifier_validation=None, figures=True):
    """Gather every stage's outputs, write <out_dir>/summary.md, summary.json and the figures
    (atomically); return the markdown text.

    weights_dir: a function effect -> the expert's output folder (model.paths.
    expert_weights_dir), or a folder holding weights<effect>/ for each expert.
    timings: model.experiment.Runner.timings, [(step, seconds, "ran" | "skipped")].
    settings: the runner's flags (a dict; its "seed" is stated as the seed).
    num_images: N of the evaluation runs (default: found per test set).
    classifier_validation: validate.py's metrics.json or its folder (default: <out_dir>/
    classifier_validation/, then the newest run's validation/*/)."""
    start = time.time()
    out_dir = Path(out_dir)
    log.info("summary: reading the outputs of every stage")
    data = collect(coco_root, eval_dir, weights_dir, classifier_log_dir, domain_dir, out_dir,
                   timings, settings, num_images, classifier_validation)
    written = write_figures(data, out_dir, coco_root, eval_dir) if figures else []
    text = render_markdown(data, written)
    files.write_text(out_dir / SUMMARY_MD, text)
    files.write_json(out_dir / SUMMARY_JSON, summary_json(data, written), indent=1)
    log.info("summary: %s, %s and %d figures written in %.1f s (%d notes)",
             out_dir / SUMMARY_MD, SUMMARY_JSON, len(written), time.time() - start,
             len(data["notes"]))
    return text
